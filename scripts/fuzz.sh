#!/usr/bin/env bash
# Fuzzes the safetensors reader (tests/fuzz_header.cpp) with libFuzzer.
#
# Usage: scripts/fuzz.sh [SECONDS] [BUILD_DIR]
#   SECONDS    how long to fuzz (default 60)
#   BUILD_DIR  clang build folder (default build-fuzz)
#
# Seeds are the malformed corpus (testdata/malformed/) and the valid test
# checkpoints. New interesting inputs collect in BUILD_DIR/fuzz-corpus, so a
# later run continues where the last one stopped. A crash leaves its input in
# BUILD_DIR/fuzz-crashes/ and makes the script exit non-zero; add that input
# to scripts/make_malformed.cpp along with the fix.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
build=${2:-build-fuzz}

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DRTNQ_FUZZ=ON -DRTNQ_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j "$(nproc)" --target rtnq_fuzz_header

mkdir -p "$build/fuzz-corpus" "$build/fuzz-crashes"
seeds=(testdata/malformed)
for folder in testdata/sample testdata/sharded; do
  [[ -d $folder ]] && seeds+=("$folder")
done

# One job, so the fuzzer leaves the other cores free. max_len covers the
# seed headers; the larger seed files are cut to it, which still exercises
# the truncation checks.
"$build/rtnq_fuzz_header" \
  -max_total_time="$seconds" \
  -max_len=65536 \
  -timeout=10 \
  -print_final_stats=1 \
  -dict=tests/fuzz_header.dict \
  -artifact_prefix="$build/fuzz-crashes/" \
  "$build/fuzz-corpus" "${seeds[@]}"
