#!/usr/bin/env bash
# The tensor-core training attention on the GPU machine. Run from the repository root there, after
# scripts/device-bundle.sh made .bundle here:
#   1. tests: the fragment layouts of mma/ldmatrix against the hardware (the device emulator must agree with them),
#      the attention parity tests against the CPU backend, and the suites that cover every training op and whole
#      training steps;
#   2. AttentionTrainingBenchmark: a Mistral-7B layer's attention as a training step calls it (4 x 1024 tokens,
#      32/8 heads of 128), then one sequence (the shape of the FP32 kernels' 7.56 ms in docs/benchmarks.md), then
#      head size 64.
# Each step's output goes to its own file under $OUT (default /tmp/lora4j-out); the script goes on after a failure.
set -uo pipefail
out=${OUT:-/tmp/lora4j-out}
mkdir -p "$out"
classes='dev\.lora4j\.cuda\.(CudaTensorCoreFragmentTest|CudaFlashAttentionParityTest|CudaTrainingParityTest|CudaTrainingOpsContractTest|CudaTrainableLlamaParityTest)'
scripts/device-run.sh tests --details=summary --details-theme=ascii --fail-if-no-tests --include-classname "$classes" \
    >"$out/attention-tests.log" 2>&1
echo "== attention tests: exit $?"
tail -20 "$out/attention-tests.log"
for shape in "4 1024 32 8 128 0 20" "1 1024 32 8 128 0 20" "4 1024 32 8 64 0 20"; do
    echo "== AttentionTrainingBenchmark $shape"
    # shellcheck disable=SC2086
    scripts/device-run.sh java dev.lora4j.cuda.AttentionTrainingBenchmark $shape 2>&1 | tee -a "$out/attention-benchmark.txt"
done
