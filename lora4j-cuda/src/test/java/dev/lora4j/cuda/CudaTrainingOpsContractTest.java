package dev.lora4j.cuda;

import dev.lora4j.backend.Backend;
import dev.lora4j.backend.BackendProvider;
import dev.lora4j.backend.testing.TrainingOpsContract;
import dev.lora4j.tensor.Half;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The training-op contract every backend meets, on the GPU: the CUDA backend's gradients, loss, optimizer step and
 * dropout against the double-precision references. Skips, with the probe's reason, where CUDA cannot run.
 */
class CudaTrainingOpsContractTest extends TrainingOpsContract {
    @Override
    protected Backend openBackend() {
        BackendProvider.Availability a = new CudaBackendProvider().probe();
        assumeTrue(a.available(), "CUDA backend unavailable: " + a.detail());
        return CudaBackend.open();
    }

    /** BF16 weights multiply dY rounded to BF16 (8 significant bits) on the tensor cores, as the forward pass rounds x. */
    @Override
    protected double matmulRoundoff() { return 0x1p-8; }

    /** CUDA's expf, logf, sinf and cosf are within 2 ulp, not 1 (CUDA C Programming Guide, mathematical functions). */
    @Override
    protected double elementwiseRoundoff() { return 0x1p-23; }

    /** Head sizes 64 and 128 run on the tensor cores (FlashAttention), which multiply q, k, v and dOut as BF16. */
    @Override
    protected float[] attentionOperands(float[] values, int headDim) {
        if (!((CudaBackend) backend()).attentionOnTensorCores(headDim)) return values;
        float[] rounded = new float[values.length];
        for (int i = 0; i < values.length; i++) rounded[i] = Half.bf16ToFloat(Half.floatToBf16(values[i]));
        return rounded;
    }

    /** And round the probabilities and score gradients to BF16 (8 significant bits) between the products. */
    @Override
    protected double attentionIntermediateRoundoff(int headDim) {
        return ((CudaBackend) backend()).attentionOnTensorCores(headDim) ? 0x1p-8 : 0;
    }
}
