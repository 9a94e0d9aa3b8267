package dev.lora4j.quant;

import java.util.Arrays;

/**
 * bitsandbytes' 8-bit dynamic quantization map ({@code create_dynamic_map(signed, max_exponent_bits=7,
 * total_bits=8)} in bitsandbytes/functional.py): 256 sorted float32 values in [-1, 1] (signed) or [0, 1]
 * (unsigned), dense near zero. Double quantization uses the signed map for the absmax values; the 8-bit
 * optimizers use the signed map for the first moment and the unsigned one for the second.
 *
 * <p>bitsandbytes builds the map at run time with torch, in float32, so its exact values are those torch computes.
 * For exponent i = 0..6 it takes {@code torch.linspace(0.1, 1, n)} with n = 2^i + 1 (signed) or 2^(i+1) + 1
 * (unsigned) points, the means of neighbouring points {@code (b[j] + b[j+1]) / 2}, and multiplies them by
 * {@code 10^(i-6)} (and, signed, also by {@code -10^(i-6)}); then it adds 0 and 1 and sorts. In float32:
 * <ul>
 *   <li>torch's CPU linspace computes {@code step = (1f - 0.1f) / (n - 1)}, then point j as
 *       {@code 0.1f + step * j} for j below n/2 and {@code 1f - step * (n - 1 - j)} above. Its x86 builds compile
 *       that kernel for AVX2/AVX512 with FMA enabled and GCC contracts each of those expressions into one fused
 *       multiply-add, so each point is rounded once: {@code fma(step, j, 0.1f)}, {@code fma(-step, n-1-j, 1f)}.
 *       (Without the fusion 42 of the 256 signed values would differ by one ulp; the fused values are those
 *       published from torch runs and the ones {@code tools/bnb_dynamic_map.py} prints on a machine with torch.)</li>
 *   <li>the scale {@code 10^(i-6)} is a Python float rounded to float32 before the multiplication (torch multiplies
 *       a float32 tensor by a Python scalar in float32).</li>
 * </ul>
 */
public final class DynamicMap {
    /** The decimal scales 10^(i-6) for i = 0..6, as Python's {@code 10 ** (i - 6)} gives them (correctly rounded doubles). */
    private static final double[] SCALES = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};
    private static final int EXPONENTS = 7;

    private static final float[] SIGNED = create(true);
    private static final float[] UNSIGNED = create(false);

    private DynamicMap() {}

    /** {@code create_dynamic_map(signed=True)}: from -0.99296875 to 1.0, with 0 at index 127. A copy. */
    public static float[] signed() {
        return SIGNED.clone();
    }

    /** {@code create_dynamic_map(signed=False)}: from 0 to 1.0. A copy. */
    public static float[] unsigned() {
        return UNSIGNED.clone();
    }

    private static float[] create(boolean signed) {
        float[] data = new float[256];
        int count = 0;
        for (int i = 0; i < EXPONENTS; i++) {
            int points = signed ? (1 << i) + 1 : (1 << (i + 1)) + 1;
            float[] b = linspace(0.1f, 1.0f, points);
            float scale = (float) SCALES[i];
            for (int j = 0; j + 1 < points; j++) {
                float mean = (b[j] + b[j + 1]) / 2.0f;
                data[count++] = scale * mean;
                if (signed) data[count++] = -scale * mean;
            }
        }
        data[count++] = 0f;
        data[count++] = 1.0f;
        if (count != data.length) throw new IllegalStateException("dynamic map has " + count + " values, not 256");
        Arrays.sort(data);
        return data;
    }

    /** torch.linspace(start, end, steps) in float32, as its CPU kernel computes it on x86 (see the class comment). */
    static float[] linspace(float start, float end, int steps) {
        float step = (end - start) / (float) (steps - 1);
        int halfway = steps / 2;
        float[] out = new float[steps];
        for (int j = 0; j < steps; j++) {
            out[j] = j < halfway ? Math.fma(step, (float) j, start) : Math.fma(-step, (float) (steps - j - 1), end);
        }
        return out;
    }
}
