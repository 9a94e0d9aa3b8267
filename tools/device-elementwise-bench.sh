#!/usr/bin/env bash
# The vectorised element-wise kernels on the GPU machine. Run from the repository root there, after
# scripts/device-bundle.sh made .bundle here:
#   1. tests: the 16-byte and element-by-element paths against each other and the scalar references, and the suites
#      that compare every training op and whole training steps with the CPU backend;
#   2. ElementwiseBenchmark: each memory-bound op on 4096 x 4096 and 4096 x 14336 activations, BF16 then F32, in
#      microseconds per call and GB/s (an H200 reads and writes at about 4 TB/s).
# Each step's output goes to its own file under $OUT (default /tmp/lora4j-out); the script goes on after a failure.
set -uo pipefail
out=${OUT:-/tmp/lora4j-out}
mkdir -p "$out"
classes='dev\.lora4j\.cuda\.(CudaVectorisedElementwiseTest|CudaBackendParityTest|CudaBf16ActivationParityTest|CudaTrainingParityTest|CudaTrainingOpsContractTest|CudaBf16TrainingStepParityTest|CudaTrainableLlamaParityTest)'
scripts/device-run.sh tests --details=summary --details-theme=ascii --fail-if-no-tests --include-classname "$classes" \
    >"$out/elementwise-tests.log" 2>&1
echo "== element-wise tests: exit $?"
tail -20 "$out/elementwise-tests.log"
for type in BF16 F32; do
    echo "== ElementwiseBenchmark $type"
    scripts/device-run.sh java dev.lora4j.cuda.ElementwiseBenchmark "$type" 50 2>&1 | tee -a "$out/elementwise-benchmark.txt"
done
