package dev.lora4j.backend.cpu;

import dev.lora4j.backend.testing.RandomTensors;
import dev.lora4j.quant.HostQuantizer;
import dev.lora4j.quant.QuantSpec;
import dev.lora4j.quant.QuantType;
import dev.lora4j.quant.QuantizedArrays;
import dev.lora4j.quant.QuantizedTensor;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;

import java.util.SplittableRandom;

import static dev.lora4j.backend.testing.TensorAssert.assertSameFloats;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.fail;

/**
 * The vector kernels behind the CPU backend's 4-bit products: the decoder gives HostQuantizer's values, rounded as
 * asked, for any range of elements and any absmax (ties, overflow, zero, NaN); the fused product (one to eight x
 * rows) and the packed one (any number) give the same bits as each other and as the dense product on the
 * dequantized weight, whatever the shape, the quantization and the threads.
 *
 * <p>The vector paths depend on the CPU's vector width: with 16 floats per vector (AVX-512) both paths run; with 8
 * the fused path gives way to the packed one; with 4 the decoder works in scalar code. Run this class with
 * {@code -XX:MaxVectorSize=32} or {@code =16} to check the other widths.
 */
class FourBitKernelsTest {
    private static final CpuBackend CPU = new CpuBackend(3);
    private static final DType[] ROUNDINGS = {DType.F32, DType.BF16, DType.F16};
    private final RandomTensors random = new RandomTensors(77);

    @AfterAll
    static void close() {
        CPU.close();
    }

    /** The value HostQuantizer gives element i of q, rounded to first, then to second. */
    private static float expected(QuantizedArrays q, int i, DType first, DType second) {
        float a = q.blockAbsmax(i / q.spec().blockSize());
        return HostQuantizer.round(second, HostQuantizer.round(first, q.spec().type().code(q.code(i)) * a));
    }

    private static void assertSameBits(String what, float[] actual, int off, QuantizedArrays q, int from, int count, DType first, DType second) {
        for (int i = 0; i < count; i++) {
            float e = expected(q, from + i, first, second);
            if (Float.floatToRawIntBits(actual[off + i]) != Float.floatToRawIntBits(e)) {
                fail(String.format("%s: element %d decodes to %s (bits %08x), expected %s (bits %08x)", what, from + i,
                        actual[off + i], Float.floatToRawIntBits(actual[off + i]), e, Float.floatToRawIntBits(e)));
            }
        }
    }

    @Test
    void theDecoderGivesHostQuantizersValuesForAnyRangeAndEveryPairOfRoundings() {
        int numel = 37 * 129; // odd: the last byte has a padding nibble
        float[] w = random.gaussian(numel, 0.05);
        QuantSpec[] specs = {QuantSpec.QLORA, new QuantSpec(QuantType.FP4, 128, false, DType.F32),
                new QuantSpec(QuantType.NF4, 4096, true, DType.F16)};
        for (QuantSpec spec : specs) {
            QuantizedArrays host = HostQuantizer.quantize(w, spec);
            try (QuantizedTensor q = QuantizedTensor.upload(CPU, host, DType.BF16, 37, 129)) {
                FourBitDecoder decoder = new FourBitDecoder(q);
                for (DType first : ROUNDINGS) {
                    for (DType second : ROUNDINGS) {
                        float[] all = new float[numel + 3];
                        decoder.decode(0, numel, first, second, all, 3);
                        assertSameBits(spec + " " + first + "→" + second + " whole", all, 3, host, 0, numel, first, second);
                        for (int trial = 0; trial < 40; trial++) {
                            int from = random.between(0, numel - 1), count = random.between(0, Math.min(300, numel - from));
                            float[] part = new float[count + 5];
                            decoder.decode(from, count, FourBitDecoder.Rounding.of(first, second), part, 5, new float[16]);
                            assertSameBits(spec + " " + first + "→" + second + " [" + from + ", +" + count + ")", part, 5, host, from, count, first, second);
                        }
                    }
                }
            }
        }
    }

    @Test
    void everyAbsmaxDecodesAsHostQuantizerRoundsItTiesOverflowZeroAndNaNIncluded() {
        SplittableRandom r = new SplittableRandom(5);
        int blocks = 3000, size = 64, numel = blocks * size;
        float[] absmax = new float[blocks];
        for (int b = 0; b < blocks; b++) {
            int bits = r.nextInt();
            absmax[b] = switch (b % 8) {
                case 0 -> Float.intBitsToFloat((bits & 0x7fff0000) | 0x8000); // code ±1 lands on a BF16 tie
                case 1 -> Float.intBitsToFloat((bits & 0x7ffe0000) | 0x18000); // a tie rounding up to even
                case 2 -> Float.intBitsToFloat(0x7f7f8000 | (bits & 0x7fff)); // near Float.MAX_VALUE: BF16 overflows
                case 3 -> Float.intBitsToFloat(bits & 0x007fffff); // subnormal
                case 4 -> b % 16 == 4 ? 0f : Float.NaN;
                case 5 -> Float.intBitsToFloat(0x7f800001 | (bits & 0x007fffff)); // NaNs of every payload
                default -> Math.abs(Float.intBitsToFloat(bits & 0x7fffffff)) % 1e6f;
            };
        }
        byte[] packed = new byte[numel / 2];
        r.nextBytes(packed);
        for (QuantType type : QuantType.values()) {
            QuantizedArrays host = new QuantizedArrays(new QuantSpec(type, size, false, DType.BF16), numel, packed, absmax, null, null, null, 0f);
            try (QuantizedTensor q = QuantizedTensor.upload(CPU, host, DType.BF16, blocks, size)) {
                FourBitDecoder decoder = new FourBitDecoder(q);
                for (DType first : ROUNDINGS) {
                    for (DType second : ROUNDINGS) {
                        float[] out = new float[numel];
                        decoder.decode(0, numel, first, second, out, 0);
                        assertSameBits(type + " " + first + "→" + second, out, 0, host, 0, numel, first, second);
                        // The fused path's tables are made apart from the decoder's.
                        int[] tables = new int[blocks * 16];
                        decoder.tables(0, blocks, FourBitDecoder.Rounding.of(first, second), tables, 0, new float[blocks]);
                        for (int b = 0; b < blocks; b++) {
                            for (int c = 0; c < 16; c++) {
                                float e = HostQuantizer.round(second, HostQuantizer.round(first, type.code(c) * absmax[b]));
                                if (tables[b * 16 + c] != Float.floatToRawIntBits(e)) {
                                    fail(type + " " + first + "→" + second + ": table of block " + b + " (absmax " + absmax[b]
                                            + ") has " + Integer.toHexString(tables[b * 16 + c]) + " for code " + c
                                            + ", expected " + Integer.toHexString(Float.floatToRawIntBits(e)));
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /** The dense weight bitsandbytes' 4-bit matmul multiplies by, as a tensor of the compute dtype. */
    private static Tensor denseMatmulWeight(QuantizedTensor q) {
        try (Tensor f32 = CPU.allocate(DType.F32, q.shape())) {
            CPU.dequantize4bit(q, f32);
            float[] v = CPU.toFloats(f32);
            for (int i = 0; i < v.length; i++) v[i] = HostQuantizer.matmulValue(v[i], q.originalType(), q.spec().computeType());
            return CPU.fromFloats(v, q.spec().computeType(), q.shape());
        }
    }

    @Test
    void fusedAndPackedProductsGiveTheDenseProductsBitsForOneToNineRows() {
        QuantSpec[] specs = {QuantSpec.QLORA, new QuantSpec(QuantType.FP4, 128, false, DType.F32),
                new QuantSpec(QuantType.NF4, 64, false, DType.BF16), new QuantSpec(QuantType.NF4, 256, true, DType.F32)};
        int[][] shapes = {{64, 1}, {192, 3}, {256, 4}, {1088, 9}, {512, 17}};
        for (QuantSpec spec : specs) {
            for (DType original : new DType[] {DType.BF16, DType.F32}) {
                for (int[] s : shapes) {
                    int k = s[0], m = s[1];
                    if (k % spec.blockSize() != 0) continue;
                    float[] w = random.gaussian(m * k, 0.03);
                    try (Tensor wt = CPU.fromFloats(w, original, m, k); QuantizedTensor q = CPU.quantize4bit(wt, spec);
                         Tensor dense = denseMatmulWeight(q)) {
                        FourBitDecoder decoder = new FourBitDecoder(q);
                        FourBitDecoder.Rounding rounding = FourBitDecoder.Rounding.of(original, spec.computeType());
                        assertThat(FourBitKernels.fuses(decoder, rounding, k)).as("the fused path takes %s", spec).isEqualTo(VectorShapes.L == 16);
                        for (int n : new int[] {1, 2, 3, 4, 5, 8, 9}) {
                            String what = n + "x" + k + "x" + m + " " + spec + " from " + original;
                            float[] x = random.uniform(n * k, -1, 1), init = random.uniform(n * m, -1, 1);
                            try (Tensor xt = CPU.fromFloats(x, DType.F32, n, k); Tensor expected = CPU.fromFloats(init, DType.F32, n, m);
                                 Tensor viaBackend = CPU.fromFloats(init, DType.F32, n, m); Tensor packed = CPU.fromFloats(init, DType.F32, n, m)) {
                                CPU.matmul(xt, dense, expected, true);
                                CPU.matmul(xt, q, viaBackend, true);
                                assertSameFloats(what, CPU.toFloats(viaBackend), CPU.toFloats(expected));
                                FourBitKernels.packed(((CpuTensor) xt).segment(), decoder, rounding, ((CpuTensor) packed).segment(), k, m, 0, n, 0, m, true);
                                assertSameFloats(what + ", packed path", CPU.toFloats(packed), CPU.toFloats(expected));
                                if (n <= FourBitKernels.MAX_FUSED_ROWS && FourBitKernels.fuses(decoder, rounding, k)) {
                                    try (Tensor fused = CPU.allocate(DType.F32, n, m)) {
                                        FourBitKernels.fused(((CpuTensor) xt).segment(), decoder, rounding, ((CpuTensor) fused).segment(), k, m, 0, n, 0, m, false);
                                        CPU.matmul(xt, dense, expected, false);
                                        assertSameFloats(what + ", fused path", CPU.toFloats(fused), CPU.toFloats(expected));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    @Test
    void packedProductsOfPromptsSpanningSlicesOfKGiveTheDenseProductsBits() {
        int k = 1088, m = 70; // three slices of k; a partial group of weight rows
        for (QuantSpec spec : new QuantSpec[] {QuantSpec.QLORA, new QuantSpec(QuantType.FP4, 64, false, DType.F16)}) {
            float[] w = random.gaussian(m * k, 0.02);
            try (Tensor wt = CPU.fromFloats(w, DType.BF16, m, k); QuantizedTensor q = CPU.quantize4bit(wt, spec); Tensor dense = denseMatmulWeight(q)) {
                for (int n : new int[] {4, 7, 35, 133}) {
                    float[] x = random.uniform(n * k, -1, 1);
                    try (Tensor xt = CPU.fromFloats(x, DType.F32, n, k); Tensor expected = CPU.allocate(DType.F32, n, m);
                         Tensor actual = CPU.allocate(DType.F32, n, m)) {
                        CPU.matmul(xt, dense, expected);
                        CPU.matmul(xt, q, actual);
                        assertSameFloats(n + "x" + k + "x" + m + " " + spec, CPU.toFloats(actual), CPU.toFloats(expected));
                    }
                }
            }
        }
    }

    @Test
    void theFusedProductDoesNotDependOnTheNumberOfThreads() {
        int k = 512, m = 600; // enough weight rows for several tasks
        float[] w = random.gaussian(m * k, 0.02);
        for (int n : new int[] {1, 3, 8}) {
            float[] x = random.uniform(n * k, -1, 1);
            float[] reference = null;
            for (int threads : new int[] {1, 2, 5, 16}) {
                try (CpuBackend b = new CpuBackend(threads); Tensor wt = b.fromFloats(w, DType.BF16, m, k);
                     QuantizedTensor q = b.quantize4bit(wt, QuantSpec.QLORA); Tensor xt = b.fromFloats(x, DType.F32, n, k);
                     Tensor out = b.allocate(DType.F32, n, m)) {
                    b.matmul(xt, q, out);
                    float[] result = b.toFloats(out);
                    if (reference == null) reference = result;
                    else assertSameFloats(n + " rows on " + threads + " threads", result, reference);
                }
            }
        }
    }
}
