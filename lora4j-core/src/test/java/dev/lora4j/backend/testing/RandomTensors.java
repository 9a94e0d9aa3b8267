package dev.lora4j.backend.testing;

import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Half;

import java.util.SplittableRandom;

/**
 * Seeded random test data. Values meant for a 16-bit tensor are rounded to that dtype first
 * ({@link #representable}), so the backend holds exactly the floats the reference computes with.
 */
public final class RandomTensors {
    private final SplittableRandom random;

    public RandomTensors(long seed) {
        this.random = new SplittableRandom(seed);
    }

    /** count values uniform in [lo, hi). */
    public float[] uniform(int count, double lo, double hi) {
        float[] v = new float[count];
        for (int i = 0; i < count; i++) v[i] = (float) random.nextDouble(lo, hi);
        return v;
    }

    /** count values, normal with mean 0 and the given standard deviation. */
    public float[] gaussian(int count, double std) {
        float[] v = new float[count];
        for (int i = 0; i < count; i++) v[i] = (float) (nextGaussian() * std);
        return v;
    }

    /** uniform values rounded to what {@code dtype} can hold. */
    public float[] uniform(int count, double lo, double hi, DType dtype) {
        return representable(uniform(count, lo, hi), dtype);
    }

    /** An int in [lo, hi]. */
    public int between(int lo, int hi) {
        return random.nextInt(lo, hi + 1);
    }

    /** One of the given choices. */
    @SafeVarargs
    public final <T> T pick(T... choices) {
        return choices[random.nextInt(choices.length)];
    }

    /** One of the given ints. */
    public int pickInt(int... choices) {
        return choices[random.nextInt(choices.length)];
    }

    public int[] ints(int count, int lo, int hi) {
        int[] v = new int[count];
        for (int i = 0; i < count; i++) v[i] = between(lo, hi);
        return v;
    }

    private double nextGaussian() {
        // Box-Muller: SplittableRandom has no nextGaussian before Java 17's RandomGenerator default, kept explicit.
        double u = 1.0 - random.nextDouble(), w = random.nextDouble();
        return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * w);
    }

    /** The values each rounded (to nearest even) to {@code dtype} and widened back: exactly what a tensor of that dtype holds. */
    public static float[] representable(float[] values, DType dtype) {
        float[] out = values.clone();
        for (int i = 0; i < out.length; i++) {
            out[i] = switch (dtype) {
                case F32 -> out[i];
                case BF16 -> Half.bf16ToFloat(Half.floatToBf16(out[i]));
                case F16 -> Half.f16ToFloat(Half.floatToF16(out[i]));
                default -> throw new IllegalArgumentException("not a 16/32-bit float dtype: " + dtype);
            };
        }
        return out;
    }
}
