package dev.lora4j.quant;

/**
 * One value to its 4-bit code and back, exactly as bitsandbytes' CUDA kernels do it ({@code dQuantizeNF4},
 * {@code dQuantizeFP4}, {@code dDequantizeNF4}, {@code dDequantizeFP4Tree} in csrc/kernels.cu).
 *
 * <p>The value given is already normalized (multiplied by its block's 1/absmax, so in [-1, 1]). bitsandbytes does
 * not search the code table: it walks a fixed decision tree whose thresholds are the midpoints between neighbouring
 * codes, written as float literals, and every comparison is a strict {@code x > threshold}. So a value exactly on a
 * threshold gets the lower code, and a NaN, which fails every comparison, gets the lowest: NF4 code 0 (-1.0) and
 * FP4 code 0 (+0.0). bitsandbytes relies on that for a block of zeros (absmax 0, so 0 * (1/0) = NaN); so do we.
 *
 * <p>The trees are balanced binary searches over the sorted thresholds, so the NF4 code is simply the number of
 * NF4 thresholds below x; FP4 takes the sign from {@code x < 0} (so -0.0 counts as positive) and the magnitude
 * code from the number of magnitude thresholds below |x|, mapped through FP4's bit-pattern order.
 */
public final class FourBitCodec {

    /** bitsandbytes' NF4 thresholds (dQuantizeNF4), increasing: x above threshold i and not above i+1 is code i+1. */
    private static final float[] NF4_THRESHOLDS = {
            -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
            -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
            0.1202552504837513f, 0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
            0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f};

    /** bitsandbytes' FP4 magnitude thresholds (dQuantizeFP4), increasing: midpoints of 0, 1/192, 1/6, 1/4, 1/3, 1/2, 2/3, 1. */
    private static final float[] FP4_THRESHOLDS = {
            0.00260417f, 0.0859375f, 0.20833333f, 0.29166667f, 0.4166667f, 0.583333f, 0.8333333f};

    /** FP4's 3-bit magnitude codes in increasing order of value: 0, 1/192, 1/6, 1/4, 1/3, 1/2, 2/3, 1. */
    private static final int[] FP4_MAGNITUDE_ORDER = {0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011};

    private FourBitCodec() {}

    /**
     * The 4-bit code of a normalized value: the same code as the decision trees ({@link #quantizeNf4},
     * {@link #quantizeFp4}), computed without branches as the count of thresholds below the value, which is
     * several times faster on random weights (the trees' branches cannot be predicted).
     */
    public static int quantize(QuantType type, float x) {
        if (type == QuantType.NF4) return countAbove(NF4_THRESHOLDS, x);
        return FP4_MAGNITUDE_ORDER[countAbove(FP4_THRESHOLDS, Math.abs(x))] | (x < 0 ? 0b1000 : 0);
    }

    /** How many of the thresholds x is strictly above (none for NaN). */
    private static int countAbove(float[] thresholds, float x) {
        int count = 0;
        for (float t : thresholds) count += x > t ? 1 : 0;
        return count;
    }

    /** The value of a 4-bit code (bitsandbytes' dequantization tables; FP4 codes 8..15 are the negatives, 8 is -0.0). */
    public static float value(QuantType type, int code) {
        return type.code(code);
    }

    /** dQuantizeNF4: the tree of bitsandbytes, comparison by comparison. */
    public static int quantizeNf4(float x) {
        if (x > 0.03979014977812767f) {
            if (x > 0.3893125355243683f) {
                if (x > 0.6427869200706482f) return x > 0.8614784181118011f ? 0b1111 : 0b1110;
                return x > 0.5016634166240692f ? 0b1101 : 0b1100;
            }
            if (x > 0.2035212516784668f) return x > 0.2920137718319893f ? 0b1011 : 0b1010;
            return x > 0.1202552504837513f ? 0b1001 : 0b1000;
        }
        if (x > -0.33967943489551544f) {
            if (x > -0.13791173323988914f) return x > -0.045525018125772476f ? 0b0111 : 0b0110;
            return x > -0.23460740596055984f ? 0b0101 : 0b0100;
        }
        if (x > -0.6106329262256622f) return x > -0.4599952697753906f ? 0b0011 : 0b0010;
        return x > -0.8480964004993439f ? 0b0001 : 0b0000;
    }

    /** dQuantizeFP4: sign bit from x < 0, then the tree on |x|. */
    public static int quantizeFp4(float x) {
        int sign = x < 0 ? 0b1000 : 0;
        float a = Math.abs(x);
        int code;
        if (a > 0.29166667f) {
            if (a > 0.583333f) code = a > 0.8333333f ? 0b011 : 0b010;
            else code = a > 0.4166667f ? 0b101 : 0b100;
        } else if (a > 0.0859375f) {
            code = a > 0.20833333f ? 0b111 : 0b110;
        } else {
            code = a > 0.00260417f ? 0b001 : 0b000;
        }
        return code + sign;
    }

    /** The decision thresholds of a type, increasing (for FP4: of the magnitude). A copy. */
    public static float[] thresholds(QuantType type) {
        return (type == QuantType.NF4 ? NF4_THRESHOLDS : FP4_THRESHOLDS).clone();
    }

    /** FP4's magnitude codes (0..7) in increasing order of value. A copy. */
    public static int[] fp4MagnitudeOrder() {
        return FP4_MAGNITUDE_ORDER.clone();
    }
}
