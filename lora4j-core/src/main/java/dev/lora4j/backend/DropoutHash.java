package dev.lora4j.backend;

/**
 * The counter-based random numbers of {@link Backend#dropout} and of the LoRA ops' dropout: a pure function of
 * (seed, element index), so every backend, thread layout and resumed run draws the same mask.
 *
 * <p>Elements come in pairs: elements 2j and 2j+1 share one output of SplitMix64's finaliser over
 * {@code seed + (j + 1) * golden gamma} ({@link #mix}), element 2j drawing its top 24 bits and element 2j+1 the 24
 * bits below them (bits 16 to 39). The finaliser's output bits are all well mixed, so the two draws are as independent
 * as two outputs, and one hash of two 64-bit multiplies serves two elements: on a GPU those multiplies, not memory,
 * bounded the kernels that drew one hash per element. A draw is a 24-bit integer ({@link #bits}); {@link #uniform} is
 * it times 2^-24, a float in [0, 1) that FP32 holds exactly. Element i is dropped with probability p when
 * {@code uniform(seed, i) < p}, which is {@code bits(seed, i) < dropThreshold(p)}: kernels compare the integers.
 * tools/dropout_hash_values.py computes the same numbers independently.
 */
public final class DropoutHash {
    private DropoutHash() {}

    /** SplitMix64's finaliser over {@code seed + (index + 1) * 0x9E3779B97F4A7C15}; also derives per-adapter seeds. */
    public static long mix(long seed, long index) {
        long z = seed + (index + 1) * 0x9E3779B97F4A7C15L;
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    /** The 24-bit draw of element {@code index}: bits 40..63 of the pair's mix for an even index, 16..39 for an odd one. */
    public static int bits(long seed, long index) {
        long z = mix(seed, index >>> 1);
        return (int) ((index & 1) == 0 ? z >>> 40 : (z >>> 16) & 0xFFFFFF);
    }

    /** {@link #bits} times 2^-24: a float in [0, 1), exact in FP32. */
    public static float uniform(long seed, long index) {
        return bits(seed, index) * 0x1.0p-24f;
    }

    /**
     * The draws an element is dropped below at probability p, in [0, 2^24]: {@code bits < dropThreshold(p)} exactly
     * when {@code uniform < p} (p·2^24 is exact in double, and a 24-bit integer is below it exactly when it is below
     * its ceiling).
     */
    public static int dropThreshold(float p) {
        if (!(p >= 0 && p <= 1)) throw new IllegalArgumentException("dropout: p must be in [0, 1], got " + p);
        return (int) Math.ceil(p * 16777216.0);
    }
}
