package dev.lora4j.backend;

import dev.lora4j.tensor.Tensor;

/**
 * {@link Backend#loraDown} and {@link Backend#loraDownBackward} composed of a backend's other ops: what a backend
 * without its own implementation runs (the interface's defaults), and what the fused implementations are tested
 * against. dropout(x) is formed in a temporary tensor as large as x, released once the ops that read it are queued.
 */
public final class LoraComposition {
    private LoraComposition() {}

    /** {@code hidden = scaling · dropout(x) · aᵀ}: dropout into a temporary, the product, then the scaling. */
    public static void down(Backend b, Tensor x, Tensor a, float scaling, float p, long seed, Tensor hidden) {
        if (p == 0f) {
            b.matmul(x, a, hidden);
        } else {
            try (Tensor dropped = b.allocate(x.dtype(), x.shape())) {
                b.dropout(x, p, seed, dropped);
                b.matmul(dropped, a, hidden);
            }
        }
        b.scale(hidden, scaling);
    }

    /**
     * {@code gradA += (scaling·dHidden)ᵀ · dropout(x)} and {@code dX (+)= dropout(scaling·dHidden · a)}, the second
     * dropout with the same mask (p and seed), as dropout's gradient is.
     */
    public static void downBackward(Backend b, Tensor x, Tensor a, float scaling, float p, long seed, Tensor dHidden,
                                    Tensor gradA, Tensor dX, boolean accumulate) {
        try (Tensor scaled = b.allocate(dHidden.dtype(), dHidden.shape())) {
            b.copy(dHidden, scaled);
            b.scale(scaled, scaling);
            if (p == 0f) {
                b.matmulBackwardWeight(scaled, x, gradA, true);
                b.matmulBackwardInput(scaled, a, dX, accumulate);
                return;
            }
            try (Tensor t = b.allocate(x.dtype(), x.shape())) {
                b.dropout(x, p, seed, t);
                b.matmulBackwardWeight(scaled, t, gradA, true);
                b.matmulBackwardInput(scaled, a, t, false);
                b.dropout(t, p, seed, t);
                if (accumulate) b.add(dX, t);
                else b.copy(t, dX);
            }
        }
    }
}
