package dev.lora4j.quant;

import java.util.Objects;

/**
 * The parts of a 4-bit quantized weight as Java arrays, laid out as bitsandbytes stores them (see
 * {@link QuantizedTensor} for the same parts as tensors):
 *
 * @param spec         how it was quantized
 * @param numel        the number of elements of the weight
 * @param packed       ceil(numel/2) bytes, two codes per byte, element 2j in the high nibble
 * @param absmax       one F32 absmax per block; null with double quantization
 * @param absmaxCodes  with double quantization: one 8-bit code of {@code nestedCode} per block; else null
 * @param nestedAbsmax with double quantization: one F32 scale per {@link QuantSpec#NESTED_BLOCK_SIZE} blocks; else null
 * @param nestedCode   with double quantization: the 256-value map of the absmax codes (bitsandbytes' signed dynamic
 *                     map when lora4j quantized it); else null
 * @param nestedOffset with double quantization: the value added back to every dequantized absmax; else 0
 */
public record QuantizedArrays(QuantSpec spec, int numel, byte[] packed, float[] absmax, byte[] absmaxCodes,
                              float[] nestedAbsmax, float[] nestedCode, float nestedOffset) {

    public QuantizedArrays {
        Objects.requireNonNull(spec, "spec");
        Objects.requireNonNull(packed, "packed");
        if (numel < 0) throw new IllegalArgumentException("numel must not be negative, got " + numel);
        int blocks = (int) spec.blocks(numel);
        check(packed.length, (numel + 1) / 2, "packed codes");
        if (spec.doubleQuant()) {
            if (absmax != null) throw new IllegalArgumentException("with double quantization the absmax values are 8-bit codes, not floats");
            check(Objects.requireNonNull(absmaxCodes, "absmaxCodes").length, blocks, "absmax codes");
            check(Objects.requireNonNull(nestedAbsmax, "nestedAbsmax").length, (int) spec.nestedBlocks(numel), "nested absmax");
            check(Objects.requireNonNull(nestedCode, "nestedCode").length, 256, "nested code");
        } else {
            check(Objects.requireNonNull(absmax, "absmax").length, blocks, "absmax");
            if (absmaxCodes != null || nestedAbsmax != null || nestedCode != null || nestedOffset != 0f) {
                throw new IllegalArgumentException("nested quantization state given without double quantization");
            }
        }
    }

    private static void check(int length, int expected, String what) {
        if (length != expected) throw new IllegalArgumentException(what + ": expected " + expected + " values, got " + length);
    }

    /** The number of absmax blocks. */
    public int blocks() {
        return (int) spec.blocks(numel);
    }

    /**
     * The absmax of block b as dequantization uses it: the stored float, or with double quantization
     * {@code nestedCode[q] * nestedAbsmax + nestedOffset} ({@link HostQuantizer#nestedAbsmaxValue}).
     */
    public float blockAbsmax(int b) {
        if (!spec.doubleQuant()) return absmax[b];
        return HostQuantizer.nestedAbsmaxValue(nestedCode, absmaxCodes[b], nestedAbsmax[b / QuantSpec.NESTED_BLOCK_SIZE], nestedOffset);
    }

    /** The 4-bit code of element i. */
    public int code(long i) {
        int b = packed[(int) (i >>> 1)] & 0xFF;
        return (i & 1) == 0 ? b >>> 4 : b & 0x0F;
    }
}
