package dev.lora4j.backend.cpu;

import dev.lora4j.quant.HostQuantizer;
import dev.lora4j.quant.QuantSpec;
import dev.lora4j.quant.QuantizedTensor;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import jdk.incubator.vector.ByteVector;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorShuffle;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static dev.lora4j.backend.cpu.VectorShapes.F;
import static dev.lora4j.backend.cpu.VectorShapes.I;
import static dev.lora4j.backend.cpu.VectorShapes.L;
import static dev.lora4j.backend.cpu.VectorShapes.LE;
import static jdk.incubator.vector.VectorOperators.LSHR;

/**
 * Reads a CPU {@link QuantizedTensor} back as floats, by {@link HostQuantizer}'s definition: the block's absmax
 * (stored, or {@code nestedCode[q] * nestedAbsmax + offset}), times the code's value, rounded to nearest even to one
 * dtype and then to another ({@link Rounding}). Immutable once built, so one decoder serves every thread of an op.
 *
 * <p>A block's 16 possible values are computed once per block, as one vector (the 16 code values times the
 * absmax, rounded on the float bits), the block's <i>table</i>; its elements are then looked up in that table
 * with a vector permute, two vectors of elements per step: L packed bytes are loaded and widened to int lanes
 * once; for each vector of elements, a permute gives every lane its byte ({@link #DUP_FIRST}), a shift brings
 * its nibble down ({@link #NIBBLE_SHIFTS}), and a permute looks its value up. On CPUs whose vectors hold neither 8 nor 16 floats every element is decoded in scalar code,
 * from the same table.
 */
final class FourBitDecoder {
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    private static final ValueLayout.OfByte U8 = ValueLayout.JAVA_BYTE;

    /** Whether the vector decoding applies: 16 codes fill one vector of 16 lanes or two of 8. */
    static final boolean VECTOR = L == 16 || L == 8;
    /** Elements per vector step. */
    static final int STEP = 2 * L;
    /**
     * The packed bytes of a vector step: L bytes hold 2L elements, one vector of high nibbles and one of low. They
     * are widened to ints by the sign-extending {@code castShape}, in place, never through a helper: on JDK 25
     * the zero-extending conversion is not compiled to vector instructions in these kernels, and the JIT declines
     * to inline the widening's deep call chain into a large kernel; either way the vectors would be boxed, at an
     * allocation per step.
     */
    static final VectorSpecies<Byte> PACKED_BYTES = VECTOR ? VectorSpecies.of(byte.class, VectorShape.forBitSize(8 * L)) : null;
    /**
     * Lane i of a step's first (second) vector of elements takes packed byte i/2 (L/2 + i/2) of the step: each byte
     * serves two lanes, its high nibble the even one.
     */
    static final VectorShuffle<Integer> DUP_FIRST = VECTOR ? VectorShuffle.fromOp(I, i -> i / 2) : null;
    static final VectorShuffle<Integer> DUP_SECOND = VECTOR ? VectorShuffle.fromOp(I, i -> L / 2 + i / 2) : null;
    /** Right shifts that bring the high nibble of its byte down in the even lanes; the odd lanes keep the low one. */
    static final IntVector NIBBLE_SHIFTS = VECTOR ? IntVector.fromArray(I, nibbleShifts(), 0) : null;

    private final float[] codes;
    private final int blockSize;
    private final long numel;
    private final MemorySegment packed;
    private final MemorySegment absmax; // F32 per block, or U8 codes with double quantization
    private final MemorySegment nestedAbsmax;
    private final float[] nestedCode;
    private final float offset;

    FourBitDecoder(QuantizedTensor q) {
        QuantSpec spec = q.spec();
        this.codes = spec.type().codes();
        this.blockSize = spec.blockSize();
        this.numel = q.numel();
        this.packed = segment(q.packed(), "packed codes");
        this.absmax = segment(q.absmax(), "absmax");
        if (spec.doubleQuant()) {
            this.nestedAbsmax = segment(q.nestedAbsmax(), "nested absmax");
            this.nestedCode = segment(q.nestedCode(), "nested code").toArray(ValueLayout.JAVA_FLOAT);
            this.offset = q.nestedOffset();
        } else {
            this.nestedAbsmax = null;
            this.nestedCode = null;
            this.offset = 0f;
        }
    }

    private static MemorySegment segment(Tensor t, String what) {
        if (!(t instanceof CpuTensor c)) throw new IllegalArgumentException("the " + what + " of a 4-bit weight on the CPU backend must be CPU tensors, got " + t);
        return c.segment();
    }

    private static int[] nibbleShifts() {
        int[] s = new int[L];
        for (int i = 0; i < L; i += 2) s[i] = 4;
        return s;
    }

    long numel() { return numel; }

    int blockSize() { return blockSize; }

    MemorySegment packed() { return packed; }

    /** The code values by 4-bit index: the table of a block of absmax 1 before rounding. */
    float[] codes() { return codes; }

    /** The absmax of block b as dequantization uses it. */
    float blockAbsmax(long b) {
        if (nestedCode == null) return absmax.getAtIndex(F32, b);
        return HostQuantizer.nestedAbsmaxValue(nestedCode, absmax.get(U8, b), nestedAbsmax.getAtIndex(F32, b / QuantSpec.NESTED_BLOCK_SIZE), offset);
    }

    /**
     * The roundings of a decoded value: to {@code first}, then to {@code second}. F32 leaves a value as it is and
     * rounding to BF16 twice is rounding once, so any pair of F32 and BF16 is at most one BF16 rounding, done on
     * the float bits in vector lanes: {@code (bits + 0x7fff + (bits >>> 16 & 1)) & 0xffff0000}, which is
     * {@link dev.lora4j.tensor.Half#floatToBf16} for every value but a NaN (its payload may carry into the
     * exponent). Pairs with F16, and blocks whose absmax is NaN, are rounded in scalar code, once per block.
     */
    record Rounding(DType first, DType second, boolean inVectors, int bias, int odd, int keep) {
        static Rounding of(DType first, DType second) {
            boolean inVectors = VECTOR && first != DType.F16 && second != DType.F16;
            boolean bf16 = first == DType.BF16 || second == DType.BF16;
            return new Rounding(first, second, inVectors, bf16 ? 0x7fff : 0, bf16 ? 1 : 0, bf16 ? 0xffff0000 : -1);
        }

        float scalar(float v) {
            return HostQuantizer.round(second, HostQuantizer.round(first, v));
        }
    }

    /** Lanes [c, c + L) of the table of a block of absmax a (not NaN): the code values {@code codes}, times a, rounded. */
    private static IntVector table(FloatVector codes, float a, int bias, int odd, int keep) {
        IntVector bits = codes.mul(a).reinterpretAsInts();
        return bits.add(bits.lanewise(LSHR, 16).and(odd).add(bias)).and(keep);
    }

    /**
     * The tables of blocks [b, b + count) into {@code out} from {@code off}: 16 values each, as float bits. The
     * absmax values are gathered first, apart from the vector code that scales and rounds them.
     */
    void tables(long b, int count, Rounding r, int[] out, int off, float[] scales) {
        blockAbsmax(b, count, scales);
        int bias = r.bias(), odd = r.odd(), keep = r.keep();
        FloatVector ca = VECTOR ? FloatVector.fromArray(F, codes, 0) : null;
        FloatVector cb = VECTOR && L == 8 ? FloatVector.fromArray(F, codes, L) : ca;
        for (int i = 0; i < count; i++) {
            float a = scales[i];
            int o = off + i * 16;
            if (r.inVectors() && a == a) {
                table(ca, a, bias, odd, keep).intoArray(out, o);
                if (L == 8) table(cb, a, bias, odd, keep).intoArray(out, o + 8);
            } else {
                for (int c = 0; c < 16; c++) out[o + c] = Float.floatToRawIntBits(r.scalar(codes[c] * a));
            }
        }
    }

    /** The absmax values of blocks [b, b + count) into {@code scales}. */
    void blockAbsmax(long b, int count, float[] scales) {
        if (nestedCode == null) {
            MemorySegment.copy(absmax, F32, b * Float.BYTES, scales, 0, count);
            return;
        }
        for (int i = 0; i < count; ) {
            // The blocks of one nested block share its scale.
            long nested = (b + i) / QuantSpec.NESTED_BLOCK_SIZE;
            int end = (int) Math.min(count, (nested + 1) * QuantSpec.NESTED_BLOCK_SIZE - b);
            float scale = nestedAbsmax.getAtIndex(F32, nested);
            for (; i < end; i++) scales[i] = HostQuantizer.nestedAbsmaxValue(nestedCode, absmax.get(U8, b + i), scale, offset);
        }
    }

    /** Block b's table into {@code lut}. */
    void fillTable(long b, Rounding r, float[] lut) {
        float a = blockAbsmax(b);
        if (r.inVectors() && a == a) {
            for (int c = 0; c < 16; c += L) table(FloatVector.fromArray(F, codes, c), a, r.bias(), r.odd(), r.keep()).reinterpretAsFloats().intoArray(lut, c);
        } else {
            for (int c = 0; c < 16; c++) lut[c] = r.scalar(codes[c] * a);
        }
    }

    /**
     * The table's values at the indices in idx's lanes, taken modulo 16: its one vector (L = 16) or its two
     * (L = 8). The lookup's own wrapping of indices picks the nibble out of a sign-extended byte shifted by
     * {@link #NIBBLE_SHIFTS}: no mask is needed.
     */
    static IntVector lookup(IntVector idx, IntVector t0, IntVector t1) {
        return L == 16 ? idx.selectFrom(t0) : idx.selectFrom(t0, t1);
    }

    /**
     * Elements [from, from + count) into {@code dst} from {@code off}: each {@code code * absmax} rounded as
     * {@code r} says. {@code lut} (16 floats) holds each block's table in turn.
     */
    void decode(long from, int count, Rounding r, float[] dst, int off, float[] lut) {
        long e = from, end = from + count;
        int o = off;
        long b = from / blockSize, next = (b + 1) * blockSize; // one division, not one per block
        for (; e < end; b++, next += blockSize) {
            int n = (int) (Math.min(end, next) - e); // elements of block b to decode
            fillTable(b, r, lut);
            if ((e & 1) != 0) { // the low nibble of a byte whose high one is not wanted
                dst[o++] = lut[packed.get(U8, e >>> 1) & 0x0F];
                e++;
                n--;
            }
            long at = e >>> 1;
            int i = 0;
            if (VECTOR && n >= STEP) {
                IntVector t0 = FloatVector.fromArray(F, lut, 0).reinterpretAsInts();
                IntVector t1 = L == 16 ? t0 : FloatVector.fromArray(F, lut, L).reinterpretAsInts();
                for (; i + STEP <= n; i += STEP) {
                    IntVector p = (IntVector) ByteVector.fromMemorySegment(PACKED_BYTES, packed, at + (i >>> 1), LE).castShape(I, 0);
                    lookup(p.rearrange(DUP_FIRST).lanewise(LSHR, NIBBLE_SHIFTS), t0, t1).reinterpretAsFloats().intoArray(dst, o + i);
                    lookup(p.rearrange(DUP_SECOND).lanewise(LSHR, NIBBLE_SHIFTS), t0, t1).reinterpretAsFloats().intoArray(dst, o + i + L);
                }
            }
            for (; i + 1 < n; i += 2) {
                int pair = packed.get(U8, at + (i >>> 1)) & 0xFF;
                dst[o + i] = lut[pair >>> 4];
                dst[o + i + 1] = lut[pair & 0x0F];
            }
            if (i < n) dst[o + i] = lut[(packed.get(U8, at + (i >>> 1)) & 0xFF) >>> 4];
            o += n;
            e += n;
        }
    }

    /** The same, with a table array of its own. */
    void decode(long from, int count, Rounding r, float[] dst, int off) {
        decode(from, count, r, dst, off, new float[16]);
    }

    /** The same with the two roundings named. */
    void decode(long from, int count, DType first, DType second, float[] dst, int off) {
        decode(from, count, Rounding.of(first, second), dst, off);
    }
}
