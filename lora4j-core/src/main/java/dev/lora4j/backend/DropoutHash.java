package dev.lora4j.backend;

/**
 * The counter-based random numbers of {@link Backend#dropout}: a pure function of (seed, element index), so every
 * backend, thread layout and resumed run draws the same mask. SplitMix64's finaliser over seed + index * golden
 * gamma; the top 24 bits give a float in [0, 1) exactly representable in FP32 (GPU kernels compute the same).
 */
public final class DropoutHash {
    private DropoutHash() {}

    public static long mix(long seed, long index) {
        long z = seed + (index + 1) * 0x9E3779B97F4A7C15L;
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    public static float uniform(long seed, long index) {
        return (mix(seed, index) >>> 40) * 0x1.0p-24f;
    }
}
