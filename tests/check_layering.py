#!/usr/bin/env python3
"""Checks every #include in src/ and guest/ against the subsystem rules.

The build enforces the rules for what it compiles (cmake/Layering.cmake gives
each subsystem an include view); this also covers headers on their own and
includes that would dodge a view with "../". Tests are exempt: a test may
drive both sides of a protocol. The rules are the ones the
build uses: build/layering.json, which CMake writes.

usage: check_layering.py SOURCE_DIR BUILD_DIR
"""
import json
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def owner_of(rel, layering):
    """The subsystem a file belongs to: its target's sources, else its header
    entry, else the subsystem that owns the closest enclosing folder."""
    for name, sub in layering.items():
        if rel in sub["sources"]:
            return name
    for name, sub in layering.items():
        if rel in sub["own"].values() and not os.path.isdir(rel):
            return name
    best, best_len = None, -1
    for name, sub in layering.items():
        for path in sub["own"].values():
            if (rel.startswith(path + "/")) and len(path) > best_len:
                best, best_len = name, len(path)
    return best


def allowed(include, view):
    if include.startswith("microvm/"):
        return True  # the public API: include/microvm
    for entry in view:
        if include == entry or include.startswith(entry + "/"):
            return True
    return False


def main():
    source_dir, build_dir = sys.argv[1], sys.argv[2]
    os.chdir(source_dir)
    with open(os.path.join(build_dir, "layering.json")) as f:
        layering = json.load(f)
    problems = []
    checked = 0
    for top in ("src", "guest"):
        for root, _, files in os.walk(top):
            for file in sorted(files):
                if not file.endswith((".h", ".cc")):
                    continue
                if file.endswith(("_test.cc", "_for_test.h", "test_util.h")):
                    continue  # tests may cross layers (both sides of a protocol)
                rel = os.path.join(root, file)
                owner = owner_of(rel, layering)
                if owner is None:
                    problems.append(f"{rel}: belongs to no subsystem (cmake/Layering.cmake)")
                    continue
                view = layering[owner]["view"]
                with open(rel, encoding="utf-8") as f:
                    text = f.read()
                for include in INCLUDE.findall(text):
                    checked += 1
                    if ".." in include.split("/"):
                        problems.append(f'{rel}: #include "{include}" climbs out with ".."')
                    elif "/" in include and not allowed(include, view):
                        problems.append(f'{rel} ({owner}) may not include "{include}"; '
                                        f"it may use: {', '.join(sorted(view))}")
    for problem in problems:
        print(problem)
    print(f"{checked} includes checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
