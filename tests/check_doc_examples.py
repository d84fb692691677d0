#!/usr/bin/env python3
"""Checks that every code block the docs mark as a file's copy is that file.

In docs/*.md, a line `<!-- file: examples/cpp/hello.cc -->` followed by a
fenced code block means the block is the whole of that file (relative to the
repository root). The files are compiled and run by the tests, so a doc that
still matches them shows code that works.

  check_doc_examples.py REPO_ROOT
"""
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1])
marker = re.compile(r"^<!-- file: (\S+) -->$")
checked, failures = 0, []
for doc in sorted((root / "docs").glob("*.md")) + [root / "README.md"]:
    lines = doc.read_text().split("\n")
    for i, line in enumerate(lines):
        match = marker.match(line)
        if not match:
            continue
        if i + 1 >= len(lines) or not lines[i + 1].startswith("```"):
            failures.append(f"{doc.name}:{i + 1}: marker not followed by a code block")
            continue
        end = next((j for j in range(i + 2, len(lines)) if lines[j] == "```"), None)
        if end is None:
            failures.append(f"{doc.name}:{i + 1}: unterminated code block")
            continue
        block = "\n".join(lines[i + 2:end]) + "\n"
        source = root / match.group(1)
        if not source.is_file():
            failures.append(f"{doc.name}:{i + 1}: {match.group(1)} does not exist")
        elif source.read_text() != block:
            failures.append(f"{doc.name}:{i + 1}: block differs from {match.group(1)}")
        checked += 1
for failure in failures:
    print(failure, file=sys.stderr)
print(f"{checked} documented examples checked, {len(failures)} problems")
sys.exit(1 if failures or checked == 0 else 0)
