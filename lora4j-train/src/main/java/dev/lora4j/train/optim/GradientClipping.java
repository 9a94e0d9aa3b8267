package dev.lora4j.train.optim;

import dev.lora4j.backend.Backend;
import dev.lora4j.model.TrainableParameter;

import java.util.List;

/**
 * Gradient clipping by global norm, as torch.nn.utils.clip_grad_norm_ does it: the L2 norm of all gradients
 * together; when it exceeds {@code maxNorm}, every gradient is multiplied by {@code maxNorm / (norm + 1e-6)}. The
 * coefficient is formed in float32 as torch forms it from float32 norms.
 */
public final class GradientClipping {
    private GradientClipping() {}

    /** The global L2 norm of the gradients (summed in double precision). */
    public static double globalNorm(Backend backend, List<TrainableParameter> parameters) {
        double sum = 0;
        for (TrainableParameter p : parameters) sum += backend.sumOfSquares(p.grad());
        return Math.sqrt(sum);
    }

    /**
     * Clips the gradients to {@code maxNorm} (no clipping when maxNorm is not positive) and returns their norm
     * before clipping, the figure transformers logs as grad_norm.
     */
    public static double clip(Backend backend, List<TrainableParameter> parameters, double maxNorm) {
        double norm = globalNorm(backend, parameters);
        if (maxNorm > 0 && Double.isFinite(norm)) {
            float coef = (float) maxNorm / ((float) norm + 1e-6f);
            if (coef < 1f) for (TrainableParameter p : parameters) backend.scale(p.grad(), coef);
        }
        return norm;
    }
}
