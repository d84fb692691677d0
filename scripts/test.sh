#!/usr/bin/env bash
# Quick start (b): installs, builds, then runs the whole test suite: unit
# tests and the end-to-end tests that boot real VMs (CTest label e2e).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
ctest --test-dir build --output-on-failure --timeout 600 "$@"
