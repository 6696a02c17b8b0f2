#!/usr/bin/env bash
# Installs the dependencies, builds rtnq and runs every test: the doctest
# suite in a Release build, then again under AddressSanitizer and
# UndefinedBehaviorSanitizer, then 45 seconds of fuzzing of the header parser.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

jobs=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure -j "$jobs"

cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=Debug -DRTNQ_SANITIZE=ON
cmake --build build-sanitize -j "$jobs"
ctest --test-dir build-sanitize --output-on-failure -j "$jobs"

# Fuzzing smoke run (clang build in build-fuzz); a crash makes fuzz.sh, and
# so this script, exit non-zero. Longer runs: scripts/fuzz.sh SECONDS.
bash scripts/fuzz.sh 45 build-fuzz
