#!/usr/bin/env python3
"""Checks that docs/CLI.md mentions every command and every flag the CLI
defines (src/cli/*.cc, a file per command family): a flag counts as
documented if any of its names (short or long) appears in backquotes in the
doc.

  check_cli_docs.py REPO_ROOT
"""
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1])
source = "\n".join(path.read_text() for path in sorted((root / "src/cli").glob("*.cc"))
                   if not path.name.endswith("_test.cc"))
doc = (root / "docs/CLI.md").read_text()
quoted = " ".join(re.findall(r"`([^`]*)`", doc))
problems = []
for match in re.finditer(r'add_(?:option|flag)\(\s*"([^"]+)"', source):
    names = [name.strip() for name in match.group(1).split(",") if name.strip().startswith("-")]
    if names and not any(re.search(re.escape(name) + r"(?![\w-])", quoted) for name in names):
        problems.append("flag " + "/".join(names) + " is not in docs/CLI.md")
for command in re.findall(r'add_subcommand\("([^"]+)"', source):
    if not re.search(r"(?<![\w-])" + re.escape(command) + r"(?![\w-])", doc):
        problems.append("command " + command + " is not in docs/CLI.md")
for problem in problems:
    print(problem, file=sys.stderr)
print(f"CLI docs: {len(problems)} problems")
sys.exit(1 if problems else 0)
