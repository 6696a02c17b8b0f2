#!/usr/bin/env bash
# Quantizes several checkpoints with rtnq, one after another, into one output
# folder. Checkpoints whose output is already complete are skipped, so a
# stopped batch can simply be run again; a failure does not stop the batch.
# Ends with a table of every checkpoint and exits 1 if any failed.
set -uo pipefail

usage() {
  cat <<'EOF'
Usage: quantize-all.sh -o OUTPUT_ROOT [--rtnq PATH] INPUT... [-- RTNQ_QUANTIZE_OPTIONS...]

Quantizes each INPUT (a model folder or a .safetensors file) with
'rtnq quantize INPUT -o OUTPUT_ROOT/NAME OPTIONS', where NAME is the INPUT's
base name. A single INPUT folder that holds no checkpoint itself is read as a
parent folder: each of its subfolders holding *.safetensors is one input.

An input is skipped when its report exists and 'rtnq report' can read it
(OUTPUT_ROOT/NAME/quantization_report.json, or OUTPUT_ROOT/NAME.report.json
for a file): rtnq renames an output into place only when it is complete, and
writes the report last. An output without a readable report is redone. Pass
--force among the rtnq options to redo every input.

Options:
  -o, --output-root DIR   folder for the outputs; created if missing
  --rtnq PATH             the rtnq binary [default: $RTNQ, else rtnq on PATH]
  -h, --help              show this help

Example:
  scripts/quantize-all.sh -o quantized/ models/ -- --wbits 4 --groupsize 128

Exit status: 0 all done or skipped, 1 some input failed, 2 usage error.
EOF
}

usage_error() {
  echo "quantize-all: error: $1" >&2
  echo "Run 'quantize-all.sh --help' for usage." >&2
  exit 2
}

# True for a .safetensors file, or a folder with *.safetensors files or a shard index.
is_checkpoint() {
  local path=$1
  if [[ -f $path ]]; then
    [[ $path == *.safetensors ]]
    return
  fi
  [[ -d $path ]] || return 1
  compgen -G "$path/*.safetensors" >/dev/null || [[ -f $path/model.safetensors.index.json ]]
}

# Prints the value of one summary field of a report ("-" if there is none).
summary_field() {
  local report=$1 field=$2 value
  value=$("$rtnq" report "$report" --summary-only 2>/dev/null | awk -F'\t' -v key="$field" '$1 == key { print $2 }')
  echo "${value:--}"
}

# --- Arguments ---

rtnq=${RTNQ:-rtnq}
output_root=""
inputs=()
rtnq_options=()
while (($# > 0)); do
  case $1 in
    -o | --output-root)
      (($# >= 2)) || usage_error "$1 needs a folder"
      output_root=$2
      shift 2
      ;;
    --rtnq)
      (($# >= 2)) || usage_error "--rtnq needs the path of the rtnq binary"
      rtnq=$2
      shift 2
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    --)
      shift
      rtnq_options=("$@")
      break
      ;;
    -*) usage_error "unknown option $1 (rtnq options go after --)" ;;
    *)
      inputs+=("$1")
      shift
      ;;
  esac
done

[[ -n $output_root ]] || usage_error "missing -o OUTPUT_ROOT"
# "out/" and "out" name the same folder; without the slash, paths read "out/NAME".
[[ $output_root == / ]] || output_root=${output_root%/}
((${#inputs[@]} > 0)) || usage_error "missing INPUT"
redo=false
for option in ${rtnq_options[@]+"${rtnq_options[@]}"}; do
  case $option in
    -o | --output | --output=* | --report | --report=*)
      usage_error "rtnq option $option is set by the script for each input" ;;
    --force) redo=true ;;
  esac
done
command -v "$rtnq" >/dev/null || usage_error "rtnq binary '$rtnq' not found; pass --rtnq PATH"

# A single folder without a checkpoint of its own is a parent folder.
if ((${#inputs[@]} == 1)) && [[ -d ${inputs[0]} ]] && ! is_checkpoint "${inputs[0]}"; then
  parent=${inputs[0]%/}
  inputs=()
  for folder in "$parent"/*/; do
    folder=${folder%/}
    if is_checkpoint "$folder"; then inputs+=("$folder"); fi
  done
  ((${#inputs[@]} > 0)) || usage_error "$parent contains no checkpoint and no subfolder with one"
fi

# Every input needs its own output name.
names=()
for input in "${inputs[@]}"; do
  input=${input%/}
  name=${input##*/}
  for other in ${names[@]+"${names[@]}"}; do
    [[ $other != "$name" ]] || usage_error "two inputs are named $name; their outputs would collide"
  done
  names+=("$name")
done

# The output root is checked before it is made, so a rejected run leaves
# nothing behind.
if [[ -e $output_root && ! -d $output_root ]]; then
  usage_error "output root $output_root exists and is not a folder"
fi
root_path=$(realpath -m -- "$output_root")
for input in "${inputs[@]}"; do
  [[ -d $input ]] || continue
  input_path=$(realpath -- "$input")
  if [[ $root_path == "$input_path" || $root_path == "$input_path"/* ]]; then
    usage_error "output root $output_root is inside the input folder $input; choose a folder outside it"
  fi
done
if ! mkdir_error=$(mkdir -p -- "$output_root" 2>&1); then
  echo "quantize-all: error: cannot create output root $output_root: ${mkdir_error##*: }" >&2
  exit 1
fi
log=$(mktemp "${TMPDIR:-/tmp}/quantize-all.XXXXXX") || exit 1
trap 'rm -f "$log"' EXIT

# --- Quantization ---

statuses=()
seconds=()
failures=()
exec 3>&1
for index in "${!inputs[@]}"; do
  input=${inputs[$index]%/}
  name=${names[$index]}
  output=$output_root/$name
  if [[ -d $input ]]; then report=$output/quantization_report.json; else report=$output.report.json; fi

  if [[ $redo == false && -f $report ]] && "$rtnq" report "$report" --summary-only >/dev/null 2>&1; then
    echo "quantize-all: [$((index + 1))/${#inputs[@]}] $name: output complete, skipped" >&2
    statuses+=(skipped)
    seconds+=(-)
    continue
  fi

  # rtnq renames a file output into place before it writes the report, so an
  # output without its report is what a run stopped between the two left.
  # It is redone, as is an output whose report rtnq cannot read.
  force=()
  if [[ $redo == false && -e $report ]]; then
    echo "quantize-all: $report is not a readable report; quantizing $name again" >&2
    force=(--force)
  elif [[ $redo == false && -e $output ]]; then
    echo "quantize-all: $output has no report; quantizing $name again" >&2
    force=(--force)
  fi

  echo "quantize-all: [$((index + 1))/${#inputs[@]}] $name" >&2
  start=$(date +%s%N)
  # rtnq's messages go to stderr and into the log, which keeps its error line.
  "$rtnq" quantize "$input" -o "$output" ${rtnq_options[@]+"${rtnq_options[@]}"} ${force[@]+"${force[@]}"} 2>&1 >&3 | tee "$log" >&2
  status=${PIPESTATUS[0]}
  end=$(date +%s%N)
  seconds+=("$(awk -v ns=$((end - start)) 'BEGIN { printf "%.2f", ns / 1e9 }')")
  if ((status == 0)); then
    statuses+=(done)
  else
    statuses+=(failed)
    message=$(grep -m 1 '^rtnq: error:' "$log" || echo "rtnq exited with status $status")
    failures+=("$name: ${message#rtnq: error: }")
  fi
done

# --- Table ---

echo
printf '%-40s  %-7s  %8s  %11s  %14s\n' checkpoint status seconds "size ratio" "mean rel error"
for index in "${!inputs[@]}"; do
  name=${names[$index]}
  ratio=-
  error=-
  if [[ ${statuses[$index]} != failed ]]; then
    if [[ -d ${inputs[$index]} ]]; then
      report=$output_root/$name/quantization_report.json
    else
      report=$output_root/$name.report.json
    fi
    ratio=$(summary_field "$report" compression_ratio)
    error=$(summary_field "$report" mean_relative_weight_squared_error)
  fi
  printf '%-40s  %-7s  %8s  %11s  %14s\n' "$name" "${statuses[$index]}" "${seconds[$index]}" "$ratio" "$error"
done

if ((${#failures[@]} > 0)); then
  echo
  for failure in "${failures[@]}"; do echo "failed: $failure"; done
  exit 1
fi
exit 0
