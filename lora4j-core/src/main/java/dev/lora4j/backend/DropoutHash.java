package dev.lora4j.backend;

/**
 * The counter-based random numbers of {@link Backend#dropout} and of the LoRA ops' dropout: a pure function of
 * (seed, element index), so every backend, thread layout and resumed run draws the same mask.
 *
 * <p>Elements come in groups of four: elements 4j, 4j+1, 4j+2 and 4j+3 share one output z of SplitMix64's finaliser
 * over {@code seed + (j + 1) * golden gamma} ({@link #mix}), element 4j+k drawing bits 16k to 16k+15 of z. Read as
 * four little-endian 16-bit integers, z is the four draws in element order, so a vector of hashes reinterpreted as
 * shorts, or a 32-bit half of z as a BF16 pair, lines up with the elements. The finaliser's output bits are all well
 * mixed, so the four draws are as independent as four outputs, and one hash of two 64-bit multiplies serves four
 * elements: on a GPU, where a 64-bit multiply is several 32-bit ones, those multiplies, not memory, bounded the
 * kernels that drew one hash for fewer elements. Only the element's flat index matters: a group may straddle rows,
 * views and the ends of a kernel's vectors, and a kernel that starts in the middle of a group draws the same bits.
 *
 * <p>A draw is a 16-bit integer ({@link #bits}); {@link #uniform} is it times 2^-16, a float in [0, 1) on a grid of
 * 2^-16. Element i is dropped with probability p when {@code uniform(seed, i) < p}, which is
 * {@code bits(seed, i) < dropThreshold(p)}: kernels compare the integers. The realised drop probability is then
 * {@code dropThreshold(p) / 2^16}, p rounded up to a multiple of 2^-16: at least p and less than p + 2^-16 (0.05 drops
 * with probability 3277/65536 = 0.0500030...). Rounding up rather than to nearest keeps the plain definition
 * {@code uniform < p}, and any p > 0 drops something. tools/dropout_hash_values.py computes the same numbers
 * independently.
 */
public final class DropoutHash {
    /** Elements per hash. */
    public static final int GROUP = 4;

    private DropoutHash() {}

    /** SplitMix64's finaliser over {@code seed + (index + 1) * 0x9E3779B97F4A7C15}; also derives per-adapter seeds. */
    public static long mix(long seed, long index) {
        long z = seed + (index + 1) * 0x9E3779B97F4A7C15L;
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    /** The 16-bit draw of element {@code index}: bits 16k .. 16k+15 of {@code mix(seed, index / 4)}, k = index % 4. */
    public static int bits(long seed, long index) {
        return draw(mix(seed, index >>> 2), (int) (index & 3));
    }

    /** Draw k (0 to 3) of a group's hash z: the draw of element 4j+k when z is {@code mix(seed, j)}. */
    public static int draw(long z, int k) {
        return (int) (z >>> (16 * k)) & 0xFFFF;
    }

    /** {@link #bits} times 2^-16: a float in [0, 1), exact in FP32. */
    public static float uniform(long seed, long index) {
        return bits(seed, index) * 0x1.0p-16f;
    }

    /**
     * The draws an element is dropped below at probability p, in [0, 2^16]: {@code bits < dropThreshold(p)} exactly
     * when {@code uniform < p} (p·2^16 is exact in double, and an integer is below it exactly when it is below its
     * ceiling). An element is dropped with probability {@code dropThreshold(p) / 2^16}, in [p, p + 2^-16).
     */
    public static int dropThreshold(float p) {
        if (!(p >= 0 && p <= 1)) throw new IllegalArgumentException("dropout: p must be in [0, 1], got " + p);
        return (int) Math.ceil(p * 65536.0);
    }
}
