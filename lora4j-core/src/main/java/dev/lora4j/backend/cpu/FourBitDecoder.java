package dev.lora4j.backend.cpu;

import dev.lora4j.quant.HostQuantizer;
import dev.lora4j.quant.QuantSpec;
import dev.lora4j.quant.QuantizedTensor;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * Reads ranges of a CPU {@link QuantizedTensor} back as floats, by {@link HostQuantizer}'s definition: the block's
 * absmax (stored, or {@code nestedCode[q] * nestedAbsmax + offset}), times the code's value, rounded to nearest even
 * to one dtype and then to another. The 16 values of a block are rounded once per block and looked up per element.
 * Immutable once built, so one decoder serves every thread of an op.
 */
final class FourBitDecoder {
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    private static final ValueLayout.OfByte U8 = ValueLayout.JAVA_BYTE;

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

    long numel() {
        return numel;
    }

    /** The absmax of block b as dequantization uses it. */
    float blockAbsmax(long b) {
        if (nestedCode == null) return absmax.getAtIndex(F32, b);
        return HostQuantizer.nestedAbsmaxValue(nestedCode, absmax.get(U8, b), nestedAbsmax.getAtIndex(F32, b / QuantSpec.NESTED_BLOCK_SIZE), offset);
    }

    /**
     * Elements [from, from + count) into {@code dst} from {@code off}: each {@code code * absmax} rounded to
     * {@code first}, then to {@code second} (F32 leaves a value as it is).
     */
    void decode(long from, int count, DType first, DType second, float[] dst, int off) {
        float[] lut = new float[16];
        long e = from, end = from + count;
        int o = off;
        while (e < end) {
            long b = e / blockSize;
            long stop = Math.min(end, (b + 1) * blockSize);
            float a = blockAbsmax(b);
            for (int c = 0; c < 16; c++) lut[c] = HostQuantizer.round(second, HostQuantizer.round(first, codes[c] * a));
            if ((e & 1) != 0) {
                dst[o++] = lut[packed.get(U8, e >>> 1) & 0x0F];
                e++;
            }
            for (; e + 1 < stop; e += 2) {
                int pair = packed.get(U8, e >>> 1) & 0xFF;
                dst[o++] = lut[pair >>> 4];
                dst[o++] = lut[pair & 0x0F];
            }
            if (e < stop) {
                dst[o++] = lut[(packed.get(U8, e >>> 1) & 0xFF) >>> 4];
                e++;
            }
        }
    }
}
