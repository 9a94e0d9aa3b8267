package dev.lora4j.backend;

import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Half;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/** Element conversions of host memory, shared by the backends' upload/download paths and by tests. */
public final class HostConversions {
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    private static final ValueLayout.OfShort I16 = ValueLayout.JAVA_SHORT_UNALIGNED;
    private static final ValueLayout.OfDouble F64 = ValueLayout.JAVA_DOUBLE_UNALIGNED;

    private HostConversions() {}

    /** Reads element {@code i} of a float-typed host buffer as float. */
    public static float getFloat(MemorySegment src, DType dtype, long i) {
        return switch (dtype) {
            case F32 -> src.getAtIndex(F32, i);
            case BF16 -> Half.bf16ToFloat(src.getAtIndex(I16, i));
            case F16 -> Half.f16ToFloat(src.getAtIndex(I16, i));
            case F64 -> (float) src.getAtIndex(F64, i);
            default -> throw new IllegalArgumentException("not a float dtype: " + dtype);
        };
    }

    /** Writes element {@code i} of a float-typed host buffer, rounding to nearest even. */
    public static void setFloat(MemorySegment dst, DType dtype, long i, float v) {
        switch (dtype) {
            case F32 -> dst.setAtIndex(F32, i, v);
            case BF16 -> dst.setAtIndex(I16, i, Half.floatToBf16(v));
            case F16 -> dst.setAtIndex(I16, i, Half.floatToF16(v));
            case F64 -> dst.setAtIndex(F64, i, v);
            default -> throw new IllegalArgumentException("not a float dtype: " + dtype);
        }
    }

    public static float[] toFloats(MemorySegment src, DType dtype, long count) {
        if (count > Integer.MAX_VALUE - 8) throw new IllegalArgumentException("too many elements for a float[]: " + count);
        float[] out = new float[(int) count];
        if (dtype == DType.F32) {
            MemorySegment.copy(src, F32, 0, out, 0, out.length);
            return out;
        }
        for (int i = 0; i < out.length; i++) out[i] = getFloat(src, dtype, i);
        return out;
    }

    /**
     * Converts {@code count} elements from {@code src} (dtype s) into {@code dst} (dtype d). Same dtypes copy
     * bytes; float dtypes convert; anything else is an error.
     */
    public static void convert(MemorySegment src, DType s, MemorySegment dst, DType d, long count) {
        if (s == d) {
            MemorySegment.copy(src, 0, dst, 0, s.bytesFor(count));
            return;
        }
        if (!s.isFloatingPoint() || !d.isFloatingPoint() || s == DType.F8_E4M3 || s == DType.F8_E5M2
                || d == DType.F8_E4M3 || d == DType.F8_E5M2) {
            throw new IllegalArgumentException("cannot convert " + s + " to " + d);
        }
        for (long i = 0; i < count; i++) setFloat(dst, d, i, getFloat(src, s, i));
    }
}
