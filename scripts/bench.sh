#!/usr/bin/env bash
# Measures rtnq's speed and peak memory on a synthetic TinyLlama-1.1B
# checkpoint and prints one table, then the kernel micro-benchmark and the
# machine. This script is the one way rtnq's speed is measured.
#
# Usage: scripts/bench.sh [--huge]
#   --huge  instead: generate a 29.8 GB checkpoint (Llama-2-13B widths, more
#           than this machine's RAM), quantize it at 4 bits with groups of
#           128, print wall time and peak memory, and delete both files.
#
# Environment:
#   RTNQ_BENCH_DIR     scratch folder for the checkpoint and outputs, outside
#                      the repository (default /tmp/rtnq-bench). The 2.2 GB
#                      TinyLlama checkpoint is generated once and kept there.
#   RTNQ_BENCH_BUILD   Release build folder (default build-bench in the repository)
#   RTNQ_BENCH_RUNS    timed runs per row, after one warm-up run (default 3)
#   RTNQ_BENCH_MSE_RUNS  timed runs of the MSE rows, which take minutes; they
#                      get no warm-up run (default 1; 0 skips them)
#
# Every run first reads the whole input with cat, because idle page-cache
# pages of this size get evicted within about a minute, and every run
# writes a new output file, deleted after. Wall time is measured around the
# command; peak resident memory comes from /usr/bin/time -v.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

huge=0
case "${1:-}" in
  "") ;;
  --huge) huge=1 ;;
  -h | --help)
    sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "bench.sh: error: invalid argument '$1'; expected --huge or nothing" >&2
    exit 2
    ;;
esac

data=${RTNQ_BENCH_DIR:-/tmp/rtnq-bench}
build=${RTNQ_BENCH_BUILD:-$repo/build-bench}
runs=${RTNQ_BENCH_RUNS:-3}
mse_runs=${RTNQ_BENCH_MSE_RUNS:-1}

case "$(realpath -m "$data")/" in
  "$repo"/*)
    echo "bench.sh: error: RTNQ_BENCH_DIR $data is inside the repository; choose a folder outside it" >&2
    exit 2
    ;;
esac
if [[ ! -x /usr/bin/time ]]; then
  echo "bench.sh: error: /usr/bin/time not found; run scripts/install-deps.sh (package 'time')" >&2
  exit 1
fi

cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release -DRTNQ_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j2 --target rtnq rtnq-make-bench-model rtnq-bench-kernel >/dev/null
rtnq=$build/rtnq
mkdir -p "$data"

# Prints the value of an arithmetic expression, computed in floating point.
calc() { awk "BEGIN { printf \"%.9g\", $1 }"; }

# Free bytes in the folder holding path.
free_bytes() { df -P -B1 "$1" | awk 'NR == 2 { print $4 }'; }

# Exits with an error unless the scratch folder has need_bytes free.
require_space() {
  local need=$1 what=$2 have
  have=$(free_bytes "$data")
  if ((have < need)); then
    printf 'bench.sh: error: %s needs %.1f GB free in %s, but only %.1f GB are free; set RTNQ_BENCH_DIR to a larger disk\n' \
      "$what" "$(calc "$need / 1e9")" "$data" "$(calc "$have / 1e9")" >&2
    exit 1
  fi
}

# Parameters in a checkpoint whose tensors are all BF16: data bytes / 2.
bf16_parameters() {
  local file=$1 header
  header=$(od -An -t u8 -N8 "$file" | tr -d ' ')
  echo $((($(stat -c %s "$file") - 8 - header) / 2))
}

# Runs a command once under /usr/bin/time -v; sets wall (seconds) and rss (KB).
time_once() {
  local log=$data/time.log start end
  start=$(date +%s.%N)
  /usr/bin/time -v -o "$log" "$@" >/dev/null
  end=$(date +%s.%N)
  wall=$(calc "$end - $start")
  rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$log")
}

print_header() {
  printf '%-34s %9s %17s %8s %9s %7s %9s %9s\n' \
    "run" "median s" "min-max s" "GB/s" "Mparam/s" "x cat" "peak MB" "output MB"
}

cat_median=""

# measure NAME WARMUP RUNS INPUT PARAMETERS COMMAND...: the command may use
# the word OUT for its output file. Prints one table row.
measure() {
  local name=$1 warmup=$2 count=$3 input=$4 parameters=$5
  shift 5
  local walls=() peak=0 size="-" i out
  if ((count == 0)); then
    printf '%-34s skipped (0 runs)\n' "$name"
    return
  fi

  for ((i = 1 - warmup; i <= count; i++)); do
    cat "$input" >/dev/null
    out=$data/out-$i.safetensors
    local command=()
    for word in "$@"; do command+=("${word//OUT/$out}"); done
    time_once "${command[@]}"
    if ((i >= 1)); then
      walls+=("$wall")
      ((rss > peak)) && peak=$rss
      [[ -f $out ]] && size=$(stat -c %s "$out")
    fi
    rm -f "$out" "$out.report.json"
  done

  local sorted median low high
  sorted=$(printf '%s\n' "${walls[@]}" | sort -g)
  median=$(echo "$sorted" | sed -n "$(((${#walls[@]} + 1) / 2))p")
  low=$(echo "$sorted" | head -1)
  high=$(echo "$sorted" | tail -1)
  [[ -z $cat_median ]] && cat_median=$median
  local bytes
  bytes=$(stat -c %s "$input")
  printf '%-34s %9.2f %8.2f-%-8.2f %8.2f %9.0f %7.2f %9.0f %9s\n' "$name" "$median" "$low" "$high" \
    "$(calc "$bytes / $median / 1e9")" "$(calc "$parameters / $median / 1e6")" \
    "$(calc "$median / $cat_median")" "$(calc "$peak / 1024")" \
    "$([[ $size == - ]] && echo - || echo $((size / 1000000)))"
}

print_machine() {
  echo
  echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')," \
    "$(awk '/MemTotal/ { printf "%.1f GB RAM", $2 / 1048576 }' /proc/meminfo)"
  echo "CPU SIMD flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' |
    grep -E '^(sse4_2|avx|avx2|fma|f16c|avx512f|avx512bw|avx512_bf16)$' | tr '\n' ' ')"
  echo "rtnq build: $(grep -E '^CMAKE_CXX_COMPILER:' "$build/CMakeCache.txt" | cut -d= -f2)," \
    "Release ($(grep -E '^CMAKE_CXX_FLAGS_RELEASE:' "$build/CMakeCache.txt" | cut -d= -f2) -ffp-contract=off)," \
    "RTNQ_NATIVE=$(grep -E '^RTNQ_NATIVE:' "$build/CMakeCache.txt" | cut -d= -f2);" \
    "kernel built for SSE2 and AVX2, this CPU runs: $("$build/rtnq-bench-kernel" --print-simd-level)"
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), rtnq commit $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
}

if ((huge)); then
  model=$data/huge-bf16.safetensors
  # 29.8 GB input plus about 15.4 GB of output, with 2 GB to spare.
  require_space 47000000000 "the --huge benchmark"
  trap 'rm -f "$model" "$data"/out-huge.safetensors "$data"/out-huge.safetensors.report.json' EXIT
  echo "generating $model ..."
  "$build/rtnq-make-bench-model" "$model" --preset huge
  parameters=$(bf16_parameters "$model")
  echo "quantizing at 4 bits, groups of 128, 2 threads (the input does not fit in the page cache) ..."
  time_once "$rtnq" quantize "$model" -o "$data/out-huge.safetensors" --groupsize 128 --threads 2 --quiet
  model_bytes=$(stat -c %s "$model")
  output_bytes=$(stat -c %s "$data/out-huge.safetensors")
  printf 'huge: %.1f GB, %.2f billion parameters, %.1f s, %.2f GB/s, peak resident memory %.0f MB, output %.1f GB\n' \
    "$(calc "$model_bytes / 1e9")" "$(calc "$parameters / 1e9")" "$wall" \
    "$(calc "$model_bytes / $wall / 1e9")" "$(calc "$rss / 1024")" "$(calc "$output_bytes / 1e9")"
  print_machine
  exit 0
fi

model=$data/tinyllama-bf16.safetensors
if [[ ! -f $model ]]; then
  require_space 2300000000 "the TinyLlama checkpoint"
  "$build/rtnq-make-bench-model" "$model"
fi
# One output of the largest kind (cp: 2.2 GB) at a time, with room to spare.
require_space 3000000000 "the outputs"
parameters=$(bf16_parameters "$model")

printf 'input: %s, %.2f GB, %.3f billion BF16 parameters; %d timed runs per row after a warm-up (MSE: %d, no warm-up)\n' \
  "$model" "$(calc "$(stat -c %s "$model") / 1e9")" "$(calc "$parameters / 1e9")" "$runs" "$mse_runs"
print_header
measure "cat INPUT > /dev/null" 1 "$runs" "$model" "$parameters" cat "$model"
measure "cp INPUT OUT" 1 "$runs" "$model" "$parameters" cp "$model" OUT
for threads in 2 1; do
  q=("$rtnq" quantize "$model" -o OUT --quiet --threads "$threads")
  measure "rtnq 4-bit g128, $threads thr" 1 "$runs" "$model" "$parameters" "${q[@]}" --groupsize 128
  measure "rtnq 4-bit g128 --sym, $threads thr" 1 "$runs" "$model" "$parameters" "${q[@]}" --groupsize 128 --sym
  measure "rtnq 8-bit per row, $threads thr" 1 "$runs" "$model" "$parameters" "${q[@]}" --wbits 8
  measure "rtnq 2-bit g32, $threads thr" 1 "$runs" "$model" "$parameters" "${q[@]}" --wbits 2 --groupsize 32
  measure "rtnq 4-bit g128 --mse, $threads thr" 0 "$mse_runs" "$model" "$parameters" "${q[@]}" --groupsize 128 --mse
done
echo "(GB/s and Mparam/s count the whole input; x cat is the median over cat's median.)"

echo
"$build/rtnq-bench-kernel"
print_machine
