#!/usr/bin/env bash
# Run on the GPU machine from the repository root, after scripts/device-bundle.sh made .bundle: one launch of a kernel
# under Nsight Compute, with the counts and stall reasons of every SASS instruction, while a Java main runs it.
#
#   scripts/device-ncu.sh NAME KERNEL_REGEX LAUNCH_SKIP -- MAIN_CLASS [ARGS...]
#
# e.g. scripts/device-ncu.sh fwd flash_attention_forward_128 0 -- dev.lora4j.cuda.AttentionTrainingBenchmark 4 1024 32 8 128 0 1 BF16
# Writes $OUT/ncu/NAME-details.txt (ncu's sections), NAME-sass.csv (the source page, per SASS instruction) and
# NAME-summary.txt (tools/ncu_sass_summary.py: instructions by opcode and by times run, stall reasons, the most
# stalled instructions). The clock is left as the driver sets it (--clock-control none), so durations compare with
# the benchmarks' own.
set -uo pipefail
name=${1:?usage: device-ncu.sh NAME KERNEL_REGEX LAUNCH_SKIP -- MAIN_CLASS [ARGS...]}
regex=${2:?kernel name regex}
skip=${3:?launches to skip}
shift 3
[ "${1:-}" = "--" ] && shift
out=${OUT:-/tmp/lora4j-out}/ncu
mkdir -p "$out"
report=/tmp/lora4j-ncu-$name
sections=(--section SpeedOfLight --section SourceCounters --section InstructionStats --section WarpStateStats
          --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --section LaunchStats --section Occupancy)
LORA4J_JAVA_WRAPPER="ncu --clock-control none --kernel-name regex:$regex --launch-skip $skip --launch-count 1 \
${sections[*]} --import-source no -f -o $report" scripts/device-run.sh java "$@" > "$out/$name-run.txt" 2>&1
ncu --import "$report.ncu-rep" --page details > "$out/$name-details.txt" 2>&1
ncu --import "$report.ncu-rep" --page source --print-source sass --csv > "$out/$name-sass.csv" 2>&1
python3 tools/ncu_sass_summary.py "$out/$name-sass.csv" > "$out/$name-summary.txt" 2>&1
grep -E "Duration|Executed Instructions  |Issued Ipc Active" "$out/$name-details.txt"
head -20 "$out/$name-summary.txt"
