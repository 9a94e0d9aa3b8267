#!/usr/bin/env bash
# LoRA's A side fused with its dropout and scaling (Backend.loraDown / loraDownBackward, lora.cu) on the GPU machine.
# Run from the repository root there, after scripts/device-bundle.sh made .bundle here:
#   1. tests: the LoRA ops against the double-precision reference and the CPU backend (masks bit for bit), the
#      dropout kernel with the paired hash, and the whole training steps against the CPU;
#   2. LoraDownBenchmark: the composed path the model ran before (dropout into a scratch tensor, cuBLASLt, scale,
#      add) against the fused ops, on 4096 x 4096 and 4096 x 14336 activations, rank 16, p 0.05 and 0, BF16 then
#      F32, in microseconds per call and GB/s of the bytes the fused ops must move (an H200 moves about 4 TB/s);
#   3. ElementwiseBenchmark BF16: the dropout kernel's row, to compare with its 2.1 TB/s under one hash per element.
# Each step's output goes to its own file under $OUT (default /tmp/lora4j-out); the script goes on after a failure.
set -uo pipefail
out=${OUT:-/tmp/lora4j-out}
mkdir -p "$out"
classes='dev\.lora4j\.cuda\.(CudaLoraOpsContractTest|CudaBf16LoraOpsContractTest|CudaLoraParityTest|CudaVectorisedElementwiseTest|CudaTrainingOpsContractTest|CudaTrainableLlamaParityTest|CudaBf16TrainingStepParityTest)'
scripts/device-run.sh tests --details=summary --details-theme=ascii --fail-if-no-tests --include-classname "$classes" \
    >"$out/lora-tests.log" 2>&1
echo "== LoRA tests: exit $?"
tail -20 "$out/lora-tests.log"
for type in BF16 F32; do
    echo "== LoraDownBenchmark $type"
    scripts/device-run.sh java dev.lora4j.cuda.LoraDownBenchmark "$type" 50 4096 16 0.05,0 2>&1 | tee -a "$out/lora-benchmark.txt"
done
echo "== ElementwiseBenchmark BF16"
scripts/device-run.sh java dev.lora4j.cuda.ElementwiseBenchmark BF16 50 2>&1 | tee "$out/elementwise-benchmark.txt"
