package dev.lora4j.quant;

import java.util.Locale;

/**
 * The 4-bit data types of bitsandbytes: NF4 (normal-float, information-theoretically optimal for normally
 * distributed weights) and FP4 (a 1-2-1 sign/exponent/mantissa float). Each has 16 code values in [-1, 1]; a block's
 * values are divided by the block's absmax and stored as the index of the nearest code.
 */
public enum QuantType {
    NF4("nf4", new float[] {
            -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
            -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
            0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
            0.7229568362236023f, 1.0f}),
    /**
     * bitsandbytes' FP4 table divided by its absmax (12): index 8..15 are the negatives of 0..7, index 8 being -0.0
     * as its dequantization kernel computes it (the {@code quant_map} tensor bitsandbytes stores has +0.0 there).
     */
    FP4("fp4", new float[] {
            0.0f, 0.0625f / 12, 8.0f / 12, 12.0f / 12, 4.0f / 12, 6.0f / 12, 2.0f / 12, 3.0f / 12,
            -0.0f, -0.0625f / 12, -8.0f / 12, -12.0f / 12, -4.0f / 12, -6.0f / 12, -2.0f / 12, -3.0f / 12});

    private final String bnbName;
    private final float[] codes;

    QuantType(String bnbName, float[] codes) {
        this.bnbName = bnbName;
        this.codes = codes;
    }

    /** The name bitsandbytes and transformers use: "nf4" or "fp4". */
    public String bnbName() { return bnbName; }

    /** The 16 code values, by 4-bit index (a copy): bit for bit the dequantization tables of bitsandbytes' kernels. */
    public float[] codes() { return codes.clone(); }

    /** The value of a 4-bit code. */
    public float code(int index) { return codes[index]; }

    public static QuantType parse(String name) {
        for (QuantType t : values()) {
            if (t.bnbName.equalsIgnoreCase(name.trim())) return t;
        }
        throw new IllegalArgumentException("unknown 4-bit quant type '" + name + "': use nf4 or fp4");
    }

    @Override
    public String toString() { return bnbName.toUpperCase(Locale.ROOT); }
}
