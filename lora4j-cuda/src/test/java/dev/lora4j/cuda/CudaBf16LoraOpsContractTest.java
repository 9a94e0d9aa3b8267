package dev.lora4j.cuda;

import dev.lora4j.backend.Backend;
import dev.lora4j.backend.BackendProvider;
import dev.lora4j.backend.testing.LoraOpsContract;
import dev.lora4j.tensor.DType;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The LoRA down projection and its gradients on the GPU with BF16 activations (lora.cu's tensor-core kernels) against
 * the double-precision reference. Skips, with the probe's reason, where CUDA cannot run.
 */
class CudaBf16LoraOpsContractTest extends LoraOpsContract {
    @Override
    protected Backend openBackend() {
        BackendProvider.Availability a = new CudaBackendProvider().probe();
        assumeTrue(a.available(), "CUDA backend unavailable: " + a.detail());
        return CudaBackend.open(CudaProbe.deviceOrdinal(), DType.BF16);
    }

    /** The tensor cores multiply the F32 adapter rounded to BF16 (8 significant bits). */
    @Override
    protected double operandRoundoff() { return 0x1p-8; }
}
