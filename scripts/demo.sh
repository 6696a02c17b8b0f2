#!/usr/bin/env bash
# Installs the dependencies, builds rtnq, and quantizes the sample checkpoint
# in testdata/sample to 4 bits with groups of 32, then shows the report.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target rtnq >/dev/null

out_dir=${RTNQ_DEMO_DIR:-/tmp/rtnq-demo}
mkdir -p "$out_dir"
output="$out_dir/model-w4g32.safetensors"
./build/rtnq quantize testdata/sample/model.safetensors -o "$output" --wbits 4 --groupsize 32 --force
echo
./build/rtnq report "$output.report.json" --top 5
echo
echo "output: $output"
echo "report: $output.report.json"
