#!/usr/bin/env bash
# Runs every fuzz target with libFuzzer for SECONDS each (default 60), one
# after another, starting from its checked-in seed corpus. Builds them first
# in build-fuzz/ with Clang, AddressSanitizer and libFuzzer's coverage.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# New inputs that add coverage go to build-fuzz/corpus/<target>/ (the seed
# corpus in fuzz/corpus/ is never written); crashes go to
# build-fuzz/crashes/<target>/. Prints one JSON object per target
# ({"target", "seconds", "executions", "crashes"}) and exits non-zero if any
# target crashed.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
build=build-fuzz

for tool in clang clang++; do
  command -v "$tool" >/dev/null || { echo "fuzz/run.sh: $tool is missing: apt-get install clang libclang-rt-14-dev" >&2; exit 1; }
done
if [ ! -f "$build/CMakeCache.txt" ]; then
  CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMICROVM_FUZZ=ON >/dev/null
fi
cmake --build "$build" --target microvm_fuzz_targets --parallel "$(( $(nproc) + 1 ))" >&2

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(sed -n 's/^microvm_fuzz_target(\([a-z0-9_]*\).*/\1/p' fuzz/CMakeLists.txt)
fi

failed=0
for target in "${targets[@]}"; do
  corpus="$build/corpus/$target"
  crashes="$build/crashes/$target"
  mkdir -p "$corpus" "$crashes"
  log="$build/$target.log"
  # -fork would survive crashes but hides the execution count; a crash stops
  # this target's run, which is what we want to hear about anyway.
  set +e
  "$build/bin/$target" -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=4096 \
    -artifact_prefix="$crashes/" "$corpus" "fuzz/corpus/$target" >"$log" 2>&1
  rc=$?
  set -e
  executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  count=$(find "$crashes" -type f | wc -l)
  printf '{"target": "%s", "seconds": %s, "executions": %s, "crashes": %s, "exit": %s}\n' \
    "$target" "$seconds" "${executions:-0}" "$count" "$rc"
  if [ "$rc" -ne 0 ] || [ "$count" -ne 0 ]; then
    failed=1
    echo "fuzz/run.sh: $target failed (exit $rc); see $log and $crashes/" >&2
  fi
done
exit "$failed"
