package dev.lora4j.quant;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Objects;

/**
 * bitsandbytes' 8-bit blockwise quantization with a 256-value code ({@code quantize_blockwise} /
 * {@code dequantize_blockwise}; kernels {@code kQuantizeBlockwise<..., General8bit>}, {@code dQuantize<0>},
 * {@code kDequantizeBlockwise}): values are cut into blocks of {@code blockSize}; a block's absmax is the largest
 * |value|; each value is multiplied by the float {@code 1.0f / absmax} and stored as the index of its nearest code
 * value, found by {@link #nearestCode}; dequantization is {@code code[q] * absmax}.
 *
 * <p>Double quantization uses it for the 4-bit absmax values (blocks of 256, {@link DynamicMap#signed()}). The 8-bit
 * optimizers do not: bitsandbytes requantizes their states with another search ({@code quantize_2D}, see
 * docs/optimizers.md and {@code BitsandbytesAdamKernels}). Block b of a slice starts at element {@code b * blockSize} of the slice, and the
 * last block may be shorter. A block of zeros has absmax 0, so its values become 0 * (1/0) = NaN and get code 0,
 * which dequantizes to {@code code[0] * 0}, as in bitsandbytes.
 *
 * <p>The code must be sorted increasing with 256 values and {@code code[255]} its largest (bitsandbytes' maps end
 * at 1.0).
 */
public final class Blockwise8bit {
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;

    private Blockwise8bit() {}

    /**
     * bitsandbytes' dQuantize (not stochastic): a binary search from index 127 in seven halving steps, remembering
     * the last code below and above x, then the nearer of the final candidate and its neighbour on x's side,
     * decided against their midpoint {@code (a + b) * 0.5f}: a value exactly on the midpoint keeps the final
     * candidate, whichever side it is on. NaN gets index 0.
     */
    public static int nearestCode(float[] code, float x) {
        return search(code, x, -1.0f, true);
    }

    /**
     * bitsandbytes' binary search of a sorted 256-value code, in both of its forms: from index 127 in seven halving
     * steps, remembering the last code below and above x (starting from {@code lowerBound} below and 1 above), then the
     * nearer of the final candidate and its neighbour on x's side by their midpoint {@code (a + b) * 0.5f}, a value on
     * the midpoint keeping the final candidate. {@code dQuantize} ({@link #nearestCode}) starts from -1 and takes the
     * bounds at the ends of the code from the code itself ({@code boundsFromCode}); the 8-bit optimizers'
     * {@code quantize_2D} starts from -1 (signed map) or 0 (unsigned) and keeps its bounds. NaN gets index 0.
     */
    public static int search(float[] code, float x, float lowerBound, boolean boundsFromCode) {
        int pivot = 127, upperPivot = 255, lowerPivot = 0;
        float lower = lowerBound, upper = 1.0f;
        float val = code[pivot];
        for (int i = 64; i > 0; i >>= 1) {
            if (x > val) {
                lowerPivot = pivot;
                lower = val;
                pivot += i;
            } else {
                upperPivot = pivot;
                upper = val;
                pivot -= i;
            }
            val = code[pivot];
        }
        if (boundsFromCode) {
            if (upperPivot == 255) upper = code[upperPivot];
            if (lowerPivot == 0) lower = code[lowerPivot];
        }
        if (x > val) {
            float midpoint = (upper + val) * 0.5f;
            return x > midpoint ? upperPivot : pivot;
        }
        float midpoint = (lower + val) * 0.5f;
        return x < midpoint ? lowerPivot : pivot;
    }

    /**
     * Quantizes {@code count} values of {@code in} from {@code inOffset}: codes to {@code out} from
     * {@code outOffset}, one absmax per block to {@code absmax} from {@code absmaxOffset}.
     */
    public static void quantize(float[] code, int blockSize, float[] in, int inOffset, int count,
                                byte[] out, int outOffset, float[] absmax, int absmaxOffset) {
        checkCode(code);
        checkBlockSize(blockSize);
        Objects.checkFromIndexSize(inOffset, count, in.length);
        Objects.checkFromIndexSize(outOffset, count, out.length);
        Objects.checkFromIndexSize(absmaxOffset, blocks(count, blockSize), absmax.length);
        for (int b = 0, start = 0; start < count; b++, start += blockSize) {
            int len = Math.min(blockSize, count - start);
            float max = 0f;
            for (int i = 0; i < len; i++) max = Math.max(max, Math.abs(in[inOffset + start + i]));
            absmax[absmaxOffset + b] = max;
            float scale = 1.0f / max;
            for (int i = 0; i < len; i++) {
                out[outOffset + start + i] = (byte) nearestCode(code, in[inOffset + start + i] * scale);
            }
        }
    }

    /** The inverse: {@code out[i] = code[q[i]] * absmax[block of i]} for {@code count} values. */
    public static void dequantize(float[] code, int blockSize, byte[] in, int inOffset, int count,
                                  float[] absmax, int absmaxOffset, float[] out, int outOffset) {
        checkCode(code);
        checkBlockSize(blockSize);
        Objects.checkFromIndexSize(inOffset, count, in.length);
        Objects.checkFromIndexSize(outOffset, count, out.length);
        Objects.checkFromIndexSize(absmaxOffset, blocks(count, blockSize), absmax.length);
        for (int i = 0; i < count; i++) {
            out[outOffset + i] = code[in[inOffset + i] & 0xFF] * absmax[absmaxOffset + i / blockSize];
        }
    }

    /**
     * {@link #quantize} on native memory: {@code count} F32 values at element {@code inIndex} of {@code in}, codes
     * (one byte each) at byte {@code outIndex} of {@code out}, F32 absmax values at element {@code absmaxIndex}.
     */
    public static void quantize(float[] code, int blockSize, MemorySegment in, long inIndex, long count,
                                MemorySegment out, long outIndex, MemorySegment absmax, long absmaxIndex) {
        checkCode(code);
        checkBlockSize(blockSize);
        for (long b = 0, start = 0; start < count; b++, start += blockSize) {
            int len = (int) Math.min(blockSize, count - start);
            long first = inIndex + start;
            float max = 0f;
            for (int i = 0; i < len; i++) max = Math.max(max, Math.abs(in.getAtIndex(F32, first + i)));
            absmax.setAtIndex(F32, absmaxIndex + b, max);
            float scale = 1.0f / max;
            for (int i = 0; i < len; i++) {
                out.set(ValueLayout.JAVA_BYTE, outIndex + start + i, (byte) nearestCode(code, in.getAtIndex(F32, first + i) * scale));
            }
        }
    }

    /** {@link #dequantize} on native memory, with the same layout as the native {@link #quantize}. */
    public static void dequantize(float[] code, int blockSize, MemorySegment in, long inIndex, long count,
                                  MemorySegment absmax, long absmaxIndex, MemorySegment out, long outIndex) {
        checkCode(code);
        checkBlockSize(blockSize);
        for (long start = 0, b = 0; start < count; start += blockSize, b++) {
            int len = (int) Math.min(blockSize, count - start);
            float a = absmax.getAtIndex(F32, absmaxIndex + b);
            for (int i = 0; i < len; i++) {
                int q = in.get(ValueLayout.JAVA_BYTE, inIndex + start + i) & 0xFF;
                out.setAtIndex(F32, outIndex + start + i, code[q] * a);
            }
        }
    }

    /** One dequantized value: {@code code[q] * absmax}, one float multiplication. */
    public static float value(float[] code, byte q, float absmax) {
        return code[q & 0xFF] * absmax;
    }

    /** The number of blocks of {@code count} values. */
    public static int blocks(int count, int blockSize) {
        return (count + blockSize - 1) / blockSize;
    }

    private static void checkCode(float[] code) {
        if (code.length != 256) throw new IllegalArgumentException("an 8-bit code has 256 values, got " + code.length);
    }

    private static void checkBlockSize(int blockSize) {
        if (blockSize <= 0) throw new IllegalArgumentException("block size must be positive, got " + blockSize);
    }
}
