package dev.lora4j.model;

import java.util.Locale;

/**
 * The inverse frequencies of rotary position embeddings, computed the way Hugging Face transformers computes them
 * ({@code modeling_rope_utils.py}): in FP32, operation by operation, so that the angles the model sees match the
 * reference bit for bit or within one rounding.
 *
 * <p>Rope scaling is folded into the frequencies, which is what every supported type amounts to:
 * <ul>
 *   <li>{@code default}: {@code 1 / theta^(2i/d)};</li>
 *   <li>{@code linear}: the default frequencies divided by {@code factor};</li>
 *   <li>{@code llama3}: long wavelengths divided by {@code factor}, short ones kept, the band between blended.</li>
 * </ul>
 */
public final class RopeFrequencies {
    private RopeFrequencies() {}

    /** The rope settings of a model: the base, and the scaling when config.json has one. */
    public record Rope(String type, double theta, double factor, double lowFreqFactor, double highFreqFactor,
                       int originalMaxPositions) {

        public static Rope unscaled(double theta) {
            return new Rope("default", theta, 1, 0, 0, 0);
        }

        public static Rope linear(double theta, double factor) {
            return new Rope("linear", theta, factor, 0, 0, 0);
        }

        public static Rope llama3(double theta, double factor, double lowFreqFactor, double highFreqFactor,
                                  int originalMaxPositions) {
            return new Rope("llama3", theta, factor, lowFreqFactor, highFreqFactor, originalMaxPositions);
        }
    }

    /** The {@code headDim / 2} inverse frequencies for this rope. */
    public static float[] inverseFrequencies(int headDim, Rope rope) {
        String type = rope.type() == null ? "default" : rope.type().toLowerCase(Locale.ROOT);
        return switch (type) {
            case "default" -> unscaled(headDim, rope.theta());
            case "linear" -> linear(headDim, rope.theta(), rope.factor());
            case "llama3" -> llama3(headDim, rope.theta(), rope.factor(), rope.lowFreqFactor(),
                    rope.highFreqFactor(), rope.originalMaxPositions());
            default -> throw new IllegalArgumentException("config.json: rope_scaling.rope_type '" + rope.type()
                    + "' is not supported; supported types are default, linear and llama3");
        };
    }

    /**
     * {@code 1 / base^(arange(0, d, 2) / d)}. torch computes the exponent and the power in float32 (the base is
     * rounded to float32 first), then the reciprocal in float32; each step here rounds the same way.
     */
    public static float[] unscaled(int headDim, double theta) {
        if (headDim <= 0 || headDim % 2 != 0) {
            throw new IllegalArgumentException("rotary head dimension must be a positive even number, got " + headDim);
        }
        if (!(theta > 0) || Double.isInfinite(theta)) {
            throw new IllegalArgumentException("config.json: rope_theta must be a positive number, got " + theta);
        }
        float base = (float) theta;
        float[] inv = new float[headDim / 2];
        for (int i = 0; i < inv.length; i++) {
            float exponent = (float) (2 * i) / (float) headDim;
            float power = (float) Math.pow(base, exponent);
            inv[i] = 1f / power;
        }
        return inv;
    }

    /** Linear ("position interpolation") scaling: every frequency divided by {@code factor}. */
    public static float[] linear(int headDim, double theta, double factor) {
        requireFactor(factor);
        float[] inv = unscaled(headDim, theta);
        float f = (float) factor;
        for (int i = 0; i < inv.length; i++) inv[i] = inv[i] / f;
        return inv;
    }

    /**
     * Llama 3.1 scaling. Wavelengths longer than {@code original / lowFreqFactor} are slowed by {@code factor},
     * those shorter than {@code original / highFreqFactor} are kept, and the ones between are a linear blend
     * whose weight grows with {@code original / wavelength}.
     *
     * <p>Python's {@code scalar / tensor} is evaluated by torch as {@code tensor.reciprocal() * scalar}, which
     * rounds differently from a division; the code mirrors that so the frequencies match to the last bit.
     */
    public static float[] llama3(int headDim, double theta, double factor, double lowFreqFactor,
                                 double highFreqFactor, int originalMaxPositions) {
        requireFactor(factor);
        if (originalMaxPositions <= 0) {
            throw new IllegalArgumentException("config.json: rope_scaling.original_max_position_embeddings must be positive for llama3 rope, got "
                    + originalMaxPositions);
        }
        if (!(highFreqFactor > lowFreqFactor)) {
            throw new IllegalArgumentException("config.json: rope_scaling.high_freq_factor (" + highFreqFactor
                    + ") must be greater than low_freq_factor (" + lowFreqFactor + ") for llama3 rope");
        }
        float[] inv = unscaled(headDim, theta);
        float lowFreqWavelen = (float) (originalMaxPositions / lowFreqFactor);
        float highFreqWavelen = (float) (originalMaxPositions / highFreqFactor);
        float twoPi = (float) (2 * Math.PI);
        float f = (float) factor;
        float low = (float) lowFreqFactor;
        float span = (float) (highFreqFactor - lowFreqFactor);
        float original = (float) originalMaxPositions;
        float[] out = new float[inv.length];
        for (int i = 0; i < inv.length; i++) {
            float wavelen = (1f / inv[i]) * twoPi;
            if (wavelen > lowFreqWavelen) {
                out[i] = inv[i] / f;
            } else if (wavelen < highFreqWavelen) {
                out[i] = inv[i];
            } else {
                float smooth = ((1f / wavelen) * original - low) / span;
                out[i] = (1f - smooth) * inv[i] / f + smooth * inv[i];
            }
        }
        return out;
    }

    private static void requireFactor(double factor) {
        if (!(factor > 0) || Double.isInfinite(factor)) {
            throw new IllegalArgumentException("config.json: rope_scaling.factor must be a positive number, got " + factor);
        }
    }
}
