package dev.lora4j.backend;

/**
 * What {@link Backend#adamw8bit} and {@link Backend#adamw32bit} share on every backend: bitsandbytes' block size
 * for 8-bit optimizer states, and the per-step scalars, computed once on the host so that every backend applies
 * the same float values (docs/optimizers.md gives the algorithm and its sources).
 */
public final class BitsandbytesAdam {
    /** Elements per absmax of the 8-bit states (bitsandbytes' BLOCKSIZE_2STATE). */
    public static final int BLOCK_SIZE = 256;
    /** Entries of a dynamic quantization map. */
    public static final int CODES = 256;

    private BitsandbytesAdam() {}

    /** The absmax values an 8-bit state of {@code elements} elements has: one per started block of 256. */
    public static long blocks(long elements) {
        return Math.ceilDiv(elements, BLOCK_SIZE);
    }

    /**
     * The scalars of one step, in float as bitsandbytes' kernels compute them from their float arguments:
     * {@code correction1 = 1 - beta1^step}, {@code correction2 = sqrt(1 - beta2^step)},
     * {@code stepSize = -lr * correction2 / correction1}, {@code epsCorrection2 = correction2 * eps},
     * {@code decay = 1 - lr * weightDecay}, applied only when weightDecay > 0. The powers are computed in double and
     * rounded to float (bitsandbytes calls powf or __powf on the GPU), every other operation is one float operation.
     */
    public record Scalars(float beta1, float oneMinusBeta1, float beta2, float oneMinusBeta2, float stepSize,
                          float epsCorrection2, float decay, boolean decays) {

        public static Scalars of(float lr, float beta1, float beta2, float eps, float weightDecay, long step) {
            if (step < 1) throw new IllegalArgumentException("the optimizer step counts from 1, got " + step);
            float correction1 = 1.0f - (float) Math.pow(beta1, step);
            float correction2 = (float) Math.sqrt(1.0f - (float) Math.pow(beta2, step));
            float stepSize = (-lr * correction2) / correction1;
            return new Scalars(beta1, 1.0f - beta1, beta2, 1.0f - beta2, stepSize, correction2 * eps,
                    1.0f - lr * weightDecay, weightDecay > 0.0f);
        }
    }
}
