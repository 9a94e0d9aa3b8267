package dev.lora4j.model;

import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Half;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.stream.IntStream;

/**
 * Fills off-heap tensors with normally distributed values, fast enough to write a 7B model in a minute or two:
 * blocks of a million elements are filled in parallel, each from its own SplitMix64 stream seeded by (seed,
 * tensor, block), so the bytes depend on the seed only, never on the thread count. Normal values come from the
 * inverse normal CDF (Acklam's rational approximation, relative error below 1.2e-9), which needs no logarithm for
 * 95% of the draws.
 */
final class NormalFiller {
    static final int BLOCK = 1 << 20;
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    private static final ValueLayout.OfShort I16 = ValueLayout.JAVA_SHORT_UNALIGNED;

    private NormalFiller() {}

    /** Fills {@code count} elements of {@code dst} (dtype F32, BF16 or F16) with N(0, std²) draws. */
    static void fill(MemorySegment dst, DType dtype, long count, double std, long seed, long tensorIndex) {
        long blocks = (count + BLOCK - 1) / BLOCK;
        if (blocks > Integer.MAX_VALUE) throw new IllegalArgumentException("tensor too large: " + count);
        if (dtype != DType.F32 && dtype != DType.BF16 && dtype != DType.F16) {
            throw new IllegalArgumentException("cannot fill " + dtype + " with normal values");
        }
        // Each block is generated into a heap array, where the loop compiles to tight code, then copied out in bulk.
        // The caller's thread works too (a parallel stream started outside the pool), so every core is busy.
        IntStream.range(0, (int) blocks).parallel().forEach(b -> {
            long state = mix(mix(seed ^ 0x9E3779B97F4A7C15L * (tensorIndex + 1)) + b);
            long from = (long) b * BLOCK;
            int n = (int) Math.min(BLOCK, count - from);
            float[] values = new float[n];
            normals(values, n, state, (float) std);
            if (dtype == DType.F32) {
                MemorySegment.copy(values, 0, dst, F32, from * 4, n);
            } else {
                short[] out = new short[n];
                if (dtype == DType.BF16) {
                    for (int i = 0; i < n; i++) out[i] = Half.floatToBf16(values[i]);
                } else {
                    for (int i = 0; i < n; i++) out[i] = Half.floatToF16(values[i]);
                }
                MemorySegment.copy(out, 0, dst, I16, from * 2, n);
            }
        });
    }

    /** Fills {@code count} elements with a constant (norm weights start at 1). */
    static void constant(MemorySegment dst, DType dtype, long count, float value) {
        for (long i = 0; i < count; i++) {
            switch (dtype) {
                case F32 -> dst.setAtIndex(F32, i, value);
                case BF16 -> dst.setAtIndex(I16, i, Half.floatToBf16(value));
                case F16 -> dst.setAtIndex(I16, i, Half.floatToF16(value));
                default -> throw new IllegalArgumentException("cannot fill " + dtype);
            }
        }
    }

    /** Standard normal draws for tests: {@code n} values from the stream seeded with {@code seed}. */
    static float[] standardNormals(int n, long seed) {
        float[] out = new float[n];
        normals(out, n, mix(seed), 1f);
        return out;
    }

    /** A uniform double in (0, 1), never 0 or 1, from the SplitMix64 state. */
    private static double uniform(long state) {
        return ((mix(state) >>> 11) + 0.5) * 0x1.0p-53;
    }

    /** SplitMix64's output function: a strong 64-bit mixer. */
    static long mix(long z) {
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    // Marsaglia and Tsang's ziggurat (2000) with 128 layers: the normal density cut into 128 strips of equal
    // area; a draw picks a strip and a point in it, and is accepted at once ~99% of the time (one table lookup,
    // one compare, one multiply). The strip index and the point use separate bits of the 64-bit draw, which
    // removes the correlation Doornik (2005) found in the original 32-bit version.
    private static final double R = 3.442619855899;       // where the base strip's tail starts
    private static final double AREA = 9.91256303526217e-3; // area of each strip
    private static final long[] K = new long[128];
    private static final double[] W = new double[128];
    private static final double[] F = new double[128];

    static {
        double m1 = 2147483648.0;
        double dn = R, tn = dn;
        double q = AREA / Math.exp(-0.5 * dn * dn);
        K[0] = (long) (dn / q * m1);
        K[1] = 0;
        W[0] = q / m1;
        W[127] = dn / m1;
        F[0] = 1;
        F[127] = Math.exp(-0.5 * dn * dn);
        for (int i = 126; i >= 1; i--) {
            dn = Math.sqrt(-2 * Math.log(AREA / dn + Math.exp(-0.5 * dn * dn)));
            K[i + 1] = (long) (dn / tn * m1);
            tn = dn;
            F[i] = Math.exp(-0.5 * dn * dn);
            W[i] = dn / m1;
        }
    }

    /** Fills n normal draws times {@code std} into out, from the SplitMix64 stream at {@code state}. */
    private static void normals(float[] out, int n, long state, float std) {
        for (int i = 0; i < n; i++) {
            state += 0x9E3779B97F4A7C15L;
            long bits = mix(state);
            int hz = (int) (bits >> 32);
            int iz = (int) bits & 127;
            if (Math.abs((long) hz) < K[iz]) {
                out[i] = (float) (hz * W[iz]) * std;
            } else {
                // The rare slow path draws from its own stream, so the main stream stays one draw per value.
                out[i] = (float) slowPath(hz, iz, mix(bits ^ 0xD1B54A32D192ED03L)) * std;
            }
        }
    }

    /** The ~1% of draws outside a strip's inner rectangle: the wedge test, or the tail beyond R. */
    private static double slowPath(int hz, int iz, long state) {
        while (true) {
            double x = hz * W[iz];
            if (iz == 0) {
                double y;
                do {
                    state += 0x9E3779B97F4A7C15L;
                    x = -Math.log(uniform(state)) / R;
                    state += 0x9E3779B97F4A7C15L;
                    y = -Math.log(uniform(state));
                } while (y + y < x * x);
                return hz > 0 ? R + x : -R - x;
            }
            state += 0x9E3779B97F4A7C15L;
            if (F[iz] + uniform(state) * (F[iz - 1] - F[iz]) < Math.exp(-0.5 * x * x)) return x;
            state += 0x9E3779B97F4A7C15L;
            long bits = mix(state);
            hz = (int) (bits >> 32);
            iz = (int) bits & 127;
            if (Math.abs((long) hz) < K[iz]) return hz * W[iz];
        }
    }
}
