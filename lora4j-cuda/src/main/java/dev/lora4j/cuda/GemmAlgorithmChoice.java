package dev.lora4j.cuda;

import java.util.Locale;

/**
 * How {@link CublasLtMatmul} picks the algorithm of a product shape it has not seen before.
 *
 * <p>cuBLASLt's heuristic ranks the algorithms it would run from a model of the GPU; its first answer is good but
 * not always the fastest for the large, skinny products of training (a hidden size of 4096 against 4096 tokens, an
 * MLP of 14336), where another tile shape or split can be several percent faster. Timing the heuristic's first
 * answers once per shape and keeping the fastest, as cuBLAS' own auto-tuning samples do, costs a few milliseconds
 * per shape at the first step.
 */
public enum GemmAlgorithmChoice {
    /** The heuristic's first answer: the same algorithm, hence the same bits, on every run. */
    HEURISTIC,
    /**
     * The fastest of the heuristic's first {@link CublasLtMatmul#CANDIDATES} answers, timed on the first call of each
     * shape: into the call's own output when it overwrites it, else into a scratch block of the same size lent by the
     * allocator for the time of the trial. Results can differ from run to run in the last bits when the timing picks
     * a different split of the sum.
     */
    TIMED;

    /** -Dlora4j.cuda.gemm-algorithm=heuristic|timed. */
    public static final String PROPERTY = "lora4j.cuda.gemm-algorithm";

    /** The choice {@code -Dlora4j.cuda.gemm-algorithm} asks for; {@code fallback} when unset. */
    public static GemmAlgorithmChoice fromProperty(GemmAlgorithmChoice fallback) {
        String value = System.getProperty(PROPERTY);
        if (value == null || value.isBlank()) return fallback;
        return switch (value.strip().toLowerCase(Locale.ROOT)) {
            case "heuristic" -> HEURISTIC;
            case "timed" -> TIMED;
            default -> throw new IllegalArgumentException("-D" + PROPERTY + "=" + value + ": use heuristic or timed");
        };
    }
}
