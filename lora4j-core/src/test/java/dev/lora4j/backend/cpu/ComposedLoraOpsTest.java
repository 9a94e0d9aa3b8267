package dev.lora4j.backend.cpu;

import dev.lora4j.backend.Backend;
import dev.lora4j.backend.LoraComposition;
import dev.lora4j.backend.testing.LoraOpsContract;
import dev.lora4j.tensor.Tensor;

/**
 * The LoRA down projection as {@link Backend}'s defaults compose it (dropout into a temporary, products, scaling), on
 * the CPU backend, against the same reference and contract as the fused implementations.
 */
class ComposedLoraOpsTest extends LoraOpsContract {
    @Override
    protected Backend openBackend() { return new CpuBackend(2); }

    @Override
    protected void down(Backend b, Tensor x, Tensor a, float scaling, float p, long seed, Tensor hidden) {
        LoraComposition.down(b, x, a, scaling, p, seed, hidden);
    }

    @Override
    protected void downBackward(Backend b, Tensor x, Tensor a, float scaling, float p, long seed, Tensor dHidden,
                                Tensor gradA, Tensor dX, boolean accumulate) {
        LoraComposition.downBackward(b, x, a, scaling, p, seed, dHidden, gradA, dX, accumulate);
    }
}
