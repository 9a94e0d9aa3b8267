package dev.lora4j.train.data;

/**
 * SplitMix64 (Steele, Lea and Flood 2014): a small generator whose output depends only on its seed, written out so
 * that shuffles do not depend on a JDK class's unspecified algorithm.
 */
public final class SplitMix64 {
    private long state;

    public SplitMix64(long seed) {
        this.state = seed;
    }

    public long nextLong() {
        state += 0x9E3779B97F4A7C15L;
        return mix(state);
    }

    /** Uniform in [0, bound), by rejection so that no value is favoured. */
    public int nextInt(int bound) {
        if (bound <= 0) throw new IllegalArgumentException("bound must be positive");
        // 2^64 mod bound values at the top would favour small results; draw again when one comes up.
        long excess = (Long.remainderUnsigned(-1L, bound) + 1) % bound;
        while (true) {
            long r = nextLong();
            if (excess == 0 || Long.compareUnsigned(r, -excess) < 0) return (int) Long.remainderUnsigned(r, bound);
        }
    }

    /** The SplitMix64 finaliser: a bijective scramble of 64 bits. */
    public static long mix(long z) {
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }
}
