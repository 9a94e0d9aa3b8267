package dev.lora4j.cuda;

import dev.lora4j.tensor.Half;

import java.util.Random;

/** Test values for the BF16 kernels: rounding to BF16 as the kernels store, and Gaussian values that may already be BF16. */
final class Bf16Values {
    private Bf16Values() {}

    /** v rounded to nearest even BF16, as a float. */
    static float bf(float v) { return Half.bf16ToFloat(Half.floatToBf16(v)); }

    /** count Gaussian values of standard deviation scale, each rounded to BF16 when bf16Values. */
    static float[] gaussian(Random rnd, int count, float scale, boolean bf16Values) {
        float[] v = new float[count];
        for (int i = 0; i < count; i++) {
            float x = (float) rnd.nextGaussian() * scale;
            v[i] = bf16Values ? bf(x) : x;
        }
        return v;
    }
}
