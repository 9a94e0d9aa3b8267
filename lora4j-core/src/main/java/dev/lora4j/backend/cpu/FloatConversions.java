package dev.lora4j.backend.cpu;

import dev.lora4j.backend.HostConversions;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Half;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorMask;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static dev.lora4j.backend.cpu.VectorShapes.H;
import static dev.lora4j.backend.cpu.VectorShapes.L;
import static dev.lora4j.backend.cpu.VectorShapes.LE;
import static jdk.incubator.vector.VectorOperators.GT;
import static jdk.incubator.vector.VectorOperators.I2S;
import static jdk.incubator.vector.VectorOperators.LSHR;

/**
 * Vectorized conversions among F32, BF16 and F16 runs of elements, with exactly the results of {@link Half}'s
 * scalar conversions (round to nearest even; NaN stays NaN). Offsets and counts are in elements.
 */
final class FloatConversions {
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    private static final ValueLayout.OfShort I16 = ValueLayout.JAVA_SHORT_UNALIGNED;

    /** Elements per round trip through the staging arrays: small enough to stay in the L1 cache. */
    private static final int STAGE = 1024;

    private FloatConversions() {}

    static boolean isVectorized(DType s, DType d) {
        return isFloat16or32(s) && isFloat16or32(d);
    }

    private static boolean isFloat16or32(DType t) {
        return t == DType.F32 || t == DType.BF16 || t == DType.F16;
    }

    /** Converts {@code count} elements; any pair of F32/BF16/F16 is vectorized, other float pairs go element by element. */
    static void convert(MemorySegment src, DType s, long srcIndex, MemorySegment dst, DType d, long dstIndex, long count) {
        if (s == d) {
            MemorySegment.copy(src, s.bytesFor(srcIndex), dst, d.bytesFor(dstIndex), s.bytesFor(count));
        } else if (d == DType.F32 && s == DType.BF16) {
            bf16ToF32(src, srcIndex, dst, dstIndex, count);
        } else if (d == DType.F32 && s == DType.F16) {
            f16ToF32(src, srcIndex, dst, dstIndex, count);
        } else if (s == DType.F32 && d == DType.BF16) {
            f32ToBf16(src, srcIndex, dst, dstIndex, count);
        } else if (s == DType.F32 && d == DType.F16) {
            f32ToF16(src, srcIndex, dst, dstIndex, count);
        } else if (isVectorized(s, d)) { // BF16 <-> F16: through F32, which holds both exactly
            for (long i = 0; i < count; i++) {
                HostConversions.setFloat(dst, d, dstIndex + i, HostConversions.getFloat(src, s, srcIndex + i));
            }
        } else {
            HostConversions.convert(src.asSlice(s.bytesFor(srcIndex)), s, dst.asSlice(d.bytesFor(dstIndex)), d, count);
        }
    }

    static void bf16ToF32(MemorySegment src, long srcIndex, MemorySegment dst, long dstIndex, long count) {
        long i = 0;
        for (; i <= count - L; i += L) {
            VectorShapes.bf16(src, (srcIndex + i) * 2).intoMemorySegment(dst, (dstIndex + i) * 4, LE);
        }
        for (; i < count; i++) dst.setAtIndex(F32, dstIndex + i, Half.bf16ToFloat(src.getAtIndex(I16, srcIndex + i)));
    }

    /**
     * F16 goes through small arrays: the JIT turns a loop of {@link Float#float16ToFloat} over arrays into the
     * CPU's vector conversion instruction, which beats any Vector API bit manipulation, but does not do so for
     * loops over memory segments.
     */
    static void f16ToF32(MemorySegment src, long srcIndex, MemorySegment dst, long dstIndex, long count) {
        Scratch scratch = Scratch.get();
        short[] h = scratch.halves(STAGE);
        float[] f = scratch.floats(STAGE);
        for (long i = 0; i < count; i += STAGE) {
            int c = (int) Math.min(STAGE, count - i);
            MemorySegment.copy(src, I16, (srcIndex + i) * 2, h, 0, c);
            widenF16(h, f, 0, c);
            MemorySegment.copy(f, 0, dst, F32, (dstIndex + i) * 4, c);
        }
    }

    /** Elements of a float-typed segment into a float array, widened to F32. */
    static void toFloatArray(MemorySegment src, DType s, long srcIndex, float[] dst, int dstIndex, int count) {
        switch (s) {
            case F32 -> MemorySegment.copy(src, F32, srcIndex * 4, dst, dstIndex, count);
            case BF16 -> {
                int i = 0;
                for (; i <= count - L; i += L) VectorShapes.bf16(src, (srcIndex + i) * 2).intoArray(dst, dstIndex + i);
                for (; i < count; i++) dst[dstIndex + i] = Half.bf16ToFloat(src.getAtIndex(I16, srcIndex + i));
            }
            case F16 -> {
                short[] h = Scratch.get().halves(STAGE);
                for (int i = 0; i < count; i += STAGE) {
                    int c = Math.min(STAGE, count - i);
                    MemorySegment.copy(src, I16, (srcIndex + i) * 2, h, 0, c);
                    widenF16(h, dst, dstIndex + i, c);
                }
            }
            default -> {
                for (int i = 0; i < count; i++) dst[dstIndex + i] = HostConversions.getFloat(src, s, srcIndex + i);
            }
        }
    }

    private static void widenF16(short[] h, float[] f, int at, int count) {
        for (int i = 0; i < count; i++) f[at + i] = Float.float16ToFloat(h[i]);
    }

    /** Round to nearest even on the dropped 16 bits, as {@link Half#floatToBf16}; NaNs are quieted, keeping their sign. */
    static void f32ToBf16(MemorySegment src, long srcIndex, MemorySegment dst, long dstIndex, long count) {
        long i = 0;
        for (; i <= count - L; i += L) {
            IntVector bits = FloatVector.fromMemorySegment(VectorShapes.F, src, (srcIndex + i) * 4, LE).reinterpretAsInts();
            IntVector high = bits.lanewise(LSHR, 16);
            IntVector rounded = bits.add(high.and(1).add(0x7fff)).lanewise(LSHR, 16);
            VectorMask<Integer> nan = bits.and(0x7fffffff).compare(GT, 0x7f800000);
            IntVector result = rounded.blend(high.or(0x0040), nan);
            ((ShortVector) result.convertShape(I2S, H, 0)).intoMemorySegment(dst, (dstIndex + i) * 2, LE);
        }
        for (; i < count; i++) dst.setAtIndex(I16, dstIndex + i, Half.floatToBf16(src.getAtIndex(F32, srcIndex + i)));
    }

    /** Through arrays, like {@link #f16ToF32}: the JIT vectorizes {@link Float#floatToFloat16} there. */
    static void f32ToF16(MemorySegment src, long srcIndex, MemorySegment dst, long dstIndex, long count) {
        Scratch scratch = Scratch.get();
        short[] h = scratch.halves(STAGE);
        float[] f = scratch.floats(STAGE);
        for (long i = 0; i < count; i += STAGE) {
            int c = (int) Math.min(STAGE, count - i);
            MemorySegment.copy(src, F32, (srcIndex + i) * 4, f, 0, c);
            for (int j = 0; j < c; j++) h[j] = Float.floatToFloat16(f[j]);
            MemorySegment.copy(h, 0, dst, I16, (dstIndex + i) * 2, c);
        }
    }
}
