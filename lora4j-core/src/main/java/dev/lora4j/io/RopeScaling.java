package dev.lora4j.io;

import java.util.Objects;
import java.util.Set;

/**
 * A scaled RoPE variant, as transformers' {@code rope_parameters} (or the older {@code rope_scaling}) describes it.
 * Plain RoPE ({@code rope_type "default"}) is no scaling: {@link ModelConfig#ropeScaling()} is then null.
 *
 * <ul>
 *   <li>{@code "linear"}: inverse frequencies divided by {@code factor}.</li>
 *   <li>{@code "dynamic"}: NTK-aware base stretched with {@code factor} once the sequence outgrows
 *       {@code max_position_embeddings}.</li>
 *   <li>{@code "llama3"}: Llama 3.1's piecewise scaling with {@code factor}, {@code lowFreqFactor},
 *       {@code highFreqFactor} and {@code originalMaxPositionEmbeddings}.</li>
 * </ul>
 * Fields a type does not use are 0.
 */
public record RopeScaling(String ropeType, double factor, double lowFreqFactor, double highFreqFactor,
                          int originalMaxPositionEmbeddings) {

    public static final Set<String> SUPPORTED_TYPES = Set.of("linear", "dynamic", "llama3");

    public RopeScaling {
        Objects.requireNonNull(ropeType, "ropeType");
        if (!SUPPORTED_TYPES.contains(ropeType)) {
            throw new IllegalArgumentException("RoPE type '" + ropeType + "' is not supported: lora4j runs default,"
                    + " linear, dynamic and llama3 RoPE");
        }
        if (!(factor > 0) || !Double.isFinite(factor)) {
            throw new IllegalArgumentException("RoPE " + ropeType + " factor must be a positive number, got " + factor);
        }
        if (ropeType.equals("llama3")) {
            if (!(lowFreqFactor > 0) || !(highFreqFactor > lowFreqFactor)) {
                throw new IllegalArgumentException("llama3 RoPE needs 0 < low_freq_factor < high_freq_factor, got "
                        + lowFreqFactor + " and " + highFreqFactor);
            }
            if (originalMaxPositionEmbeddings <= 0) {
                throw new IllegalArgumentException("llama3 RoPE needs a positive original_max_position_embeddings, got "
                        + originalMaxPositionEmbeddings);
            }
        }
    }

    public static RopeScaling linear(double factor) {
        return new RopeScaling("linear", factor, 0, 0, 0);
    }

    public static RopeScaling dynamic(double factor) {
        return new RopeScaling("dynamic", factor, 0, 0, 0);
    }

    public static RopeScaling llama3(double factor, double lowFreqFactor, double highFreqFactor,
                                     int originalMaxPositionEmbeddings) {
        return new RopeScaling("llama3", factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings);
    }
}
