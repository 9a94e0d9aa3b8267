package dev.lora4j.quant;

import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Half;

import java.util.Objects;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.stream.IntStream;

/**
 * 4-bit quantization of a weight on the host, exactly as bitsandbytes' {@code quantize_4bit} defines it, and its
 * inverse {@code dequantize_4bit}. This is the definition every backend reproduces bit for bit (the CUDA kernels
 * included), so each float operation is spelled out:
 *
 * <ol>
 *   <li>The weight is cut into blocks of {@link QuantSpec#blockSize()} elements in row-major order (the last one
 *       may be shorter). A block's absmax is the largest |value|.</li>
 *   <li>Each value is multiplied by the block's scale {@code 1.0f / absmax} (an IEEE float division, then an IEEE
 *       float multiplication; never a division per value) and coded by {@link FourBitCodec}.</li>
 *   <li>Element 2j goes into the high nibble of byte j, element 2j+1 into the low nibble. With an odd element
 *       count the last byte's low nibble codes the value 0 (bitsandbytes reads past the end as 0).</li>
 *   <li>Double quantization: {@code offset = } {@link #nestedOffset}{@code (absmax)}; the floats
 *       {@code absmax[b] - offset} are quantized by {@link Blockwise8bit} with {@link DynamicMap#signed()} in blocks
 *       of {@link QuantSpec#NESTED_BLOCK_SIZE}.</li>
 * </ol>
 *
 * Dequantization: a block's absmax is the stored float, or {@link #nestedAbsmaxValue} with double quantization;
 * an element is {@code FourBitCodec.value(code) * absmax} (one float multiplication), rounded to nearest even to
 * the output dtype.
 *
 * <p>Where bitsandbytes' own build differs: it compiles its kernels with {@code --use_fast_math}, so its
 * {@code 1.0f / absmax} is an approximate reciprocal (within an ulp or two) and subnormal floats are flushed to
 * zero. Both can change the code of a value that lies within an ulp of a threshold; lora4j uses IEEE arithmetic so
 * that its CPU and GPU results agree exactly. Its offset is torch's float32 {@code mean()}, whose summation order
 * depends on the device; ours is defined by {@link #nestedOffset}. Checkpoints bitsandbytes wrote dequantize
 * exactly as bitsandbytes dequantizes them: that direction has no such freedom.
 *
 * <p>A block of zeros has absmax 0 and scale +Infinity; its values become NaN and take code 0, as in bitsandbytes
 * (NF4 code 0 is -1.0, so they dequantize to -0.0). NaN or infinite weights are rejected.
 */
public final class HostQuantizer {
    /** Blocks per parallel task: a few hundred KiB of input. */
    private static final int BLOCKS_PER_TASK = 1024;

    private HostQuantizer() {}

    /** Quantizes a weight's values (row-major, already widened from BF16/F16 if need be). */
    public static QuantizedArrays quantize(float[] values, QuantSpec spec) {
        return quantize(values, spec, "weight");
    }

    /**
     * Quantizes a weight's values; {@code name} (a tensor name such as {@code model.layers.0.mlp.up_proj.weight})
     * appears in the error message when a value is NaN or infinite.
     */
    public static QuantizedArrays quantize(float[] values, QuantSpec spec, String name) {
        Objects.requireNonNull(values, "values");
        Objects.requireNonNull(spec, "spec");
        if (values.length == 0) throw new IllegalArgumentException("cannot quantize " + name + ": it has no elements");
        int n = values.length;
        int blocks = (int) spec.blocks(n);
        byte[] packed = new byte[(n + 1) / 2];
        float[] absmax = new float[blocks];
        AtomicBoolean nonFinite = new AtomicBoolean();
        int tasks = (blocks + BLOCKS_PER_TASK - 1) / BLOCKS_PER_TASK;
        IntStream.range(0, tasks).parallel().forEach(t -> {
            int from = t * BLOCKS_PER_TASK, to = Math.min(blocks, from + BLOCKS_PER_TASK);
            if (!quantizeBlocks(spec, values, from, to, packed, absmax)) nonFinite.set(true);
        });
        if (nonFinite.get()) throw nonFinite(values, name);
        if (!spec.doubleQuant()) return new QuantizedArrays(spec, n, packed, absmax, null, null, null, 0f);

        float offset = nestedOffset(absmax);
        float[] centered = new float[blocks];
        for (int b = 0; b < blocks; b++) centered[b] = absmax[b] - offset;
        float[] code = DynamicMap.signed();
        byte[] codes = new byte[blocks];
        float[] nested = new float[(int) spec.nestedBlocks(n)];
        Blockwise8bit.quantize(code, QuantSpec.NESTED_BLOCK_SIZE, centered, 0, blocks, codes, 0, nested, 0);
        return new QuantizedArrays(spec, n, packed, null, codes, nested, code, offset);
    }

    /**
     * Quantizes blocks [from, to) of {@code values}: their absmax into {@code absmax[b]}, their codes into their
     * bytes of {@code packed}. Returns false (leaving the blocks' results undefined) if a value is NaN or infinite.
     */
    public static boolean quantizeBlocks(QuantSpec spec, float[] values, int from, int to, byte[] packed, float[] absmax) {
        QuantType type = spec.type();
        int n = values.length, size = spec.blockSize();
        for (int b = from; b < to; b++) {
            int start = b * size, end = Math.min(n, start + size);
            float max = 0f;
            for (int i = start; i < end; i++) {
                float v = values[i];
                if (!Float.isFinite(v)) return false;
                max = Math.max(max, Math.abs(v));
            }
            absmax[b] = max;
            float scale = 1.0f / max;
            // The block size is even, so a block's pairs are whole bytes.
            for (int i = start; i < end; i += 2) {
                float second = i + 1 < end ? values[i + 1] : 0f;
                int hi = FourBitCodec.quantize(type, values[i] * scale);
                int lo = FourBitCodec.quantize(type, second * scale);
                packed[i >> 1] = (byte) (hi << 4 | lo);
            }
        }
        return true;
    }

    /**
     * The offset subtracted from the absmax values before their 8-bit quantization: their mean, defined here as the
     * sum of the floats accumulated in double precision in index order, divided by their count in double, and
     * rounded to the nearest float. (bitsandbytes uses torch's float32 {@code mean()}, whose rounding depends on
     * the device's summation order; every lora4j backend computes this definition, sequentially, so that they
     * produce the same bytes.)
     */
    public static float nestedOffset(float[] absmax) {
        if (absmax.length == 0) throw new IllegalArgumentException("the mean of no absmax values is undefined");
        double sum = 0;
        for (float a : absmax) sum += a;
        return (float) (sum / absmax.length);
    }

    /**
     * A double-quantized block's absmax: {@code nestedCode[q] * nestedAbsmax + offset}, a float multiplication then a
     * float addition, each rounded (never one fused multiply-add), as bitsandbytes' {@code dequantize_blockwise}
     * followed by {@code absmax += offset}.
     */
    public static float nestedAbsmaxValue(float[] nestedCode, byte q, float nestedAbsmax, float offset) {
        float scaled = nestedCode[q & 0xFF] * nestedAbsmax;
        return scaled + offset;
    }

    /** The whole weight dequantized, each value rounded to {@code dtype} (F32, BF16 or F16) and returned as a float. */
    public static float[] dequantize(QuantizedArrays q, DType dtype) {
        float[] out = new float[q.numel()];
        dequantize(q, 0, q.numel(), dtype, out, 0);
        return out;
    }

    /** Elements [from, from + count) dequantized into {@code out} from {@code outOffset}, rounded to {@code dtype}. */
    public static void dequantize(QuantizedArrays q, int from, int count, DType dtype, float[] out, int outOffset) {
        requireOutputType(dtype);
        Objects.checkFromIndexSize(from, count, q.numel());
        Objects.checkFromIndexSize(outOffset, count, out.length);
        QuantType type = q.spec().type();
        int size = q.spec().blockSize();
        int end = from + count;
        for (int start = from; start < end; ) {
            int b = start / size, stop = Math.min(end, (b + 1) * size);
            float a = q.blockAbsmax(b);
            for (int i = start; i < stop; i++) out[outOffset + i - from] = round(dtype, FourBitCodec.value(type, q.code(i)) * a);
            start = stop;
        }
    }

    /**
     * The weight as bitsandbytes' 4-bit matmul multiplies by it: dequantized to the original dtype of the weight
     * ({@code quant_state.dtype}), then cast to the compute dtype ({@code .to(A.dtype)}): two roundings to nearest
     * even, of which at most one changes anything when either dtype is F32 or both are the same.
     */
    public static float matmulValue(float dequantized, DType originalType, DType computeType) {
        return round(computeType, round(originalType, dequantized));
    }

    /** {@code v} rounded to nearest even to F32 (unchanged), BF16 or F16, as a float. */
    public static float round(DType dtype, float v) {
        return switch (dtype) {
            case F32 -> v;
            case BF16 -> Half.bf16ToFloat(Half.floatToBf16(v));
            case F16 -> Float.float16ToFloat(Float.floatToFloat16(v));
            default -> throw new IllegalArgumentException("4-bit weights dequantize to F32, BF16 or F16, not " + dtype);
        };
    }

    private static void requireOutputType(DType dtype) {
        if (dtype != DType.F32 && dtype != DType.BF16 && dtype != DType.F16) {
            throw new IllegalArgumentException("4-bit weights dequantize to F32, BF16 or F16, not " + dtype);
        }
    }

    private static IllegalArgumentException nonFinite(float[] values, String name) {
        for (int i = 0; i < values.length; i++) {
            if (!Float.isFinite(values[i])) {
                return new IllegalArgumentException("cannot quantize " + name + ": element " + i + " is " + values[i]
                        + "; 4-bit quantization needs finite weights (check the checkpoint)");
            }
        }
        return new IllegalArgumentException("cannot quantize " + name + ": it has a non-finite value");
    }
}
