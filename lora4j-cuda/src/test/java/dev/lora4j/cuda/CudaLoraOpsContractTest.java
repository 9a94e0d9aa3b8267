package dev.lora4j.cuda;

import dev.lora4j.backend.Backend;
import dev.lora4j.backend.BackendProvider;
import dev.lora4j.backend.testing.LoraOpsContract;
import dev.lora4j.tensor.DType;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The LoRA down projection and its gradients on the GPU with F32 activations (lora.cu's CUDA-core kernels, FP32
 * throughout) against the double-precision reference. Skips, with the probe's reason, where CUDA cannot run.
 */
class CudaLoraOpsContractTest extends LoraOpsContract {
    @Override
    protected Backend openBackend() {
        BackendProvider.Availability a = new CudaBackendProvider().probe();
        assumeTrue(a.available(), "CUDA backend unavailable: " + a.detail());
        return CudaBackend.open(CudaProbe.deviceOrdinal(), DType.F32);
    }
}
