package dev.lora4j.cuda;

import dev.lora4j.backend.Backend;
import dev.lora4j.backend.HostConversions;
import dev.lora4j.backend.cpu.CpuBackend;
import dev.lora4j.quant.DynamicMap;
import dev.lora4j.quant.FourBitCodec;
import dev.lora4j.quant.HostQuantizer;
import dev.lora4j.quant.QuantSpec;
import dev.lora4j.quant.QuantType;
import dev.lora4j.quant.QuantizedArrays;
import dev.lora4j.quant.QuantizedTensor;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.EnumSource;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeFalse;

/**
 * The CUDA backend's 4-bit weights against the host reference ({@link HostQuantizer}) and the CPU backend:
 * quantization gives the same bytes (codes, absmax, 8-bit absmax codes, nested absmax, nested map, offset) for NF4 and
 * FP4, with and without double quantization, from F32, BF16 and F16 weights, at sizes with short last blocks and odd
 * lengths; dequantization gives the same bits to F32, BF16 and F16, aligned or not; products with a quantized weight
 * match the CPU backend's. Skips, with the probe's reason, where the CUDA backend cannot run.
 */
class CudaQuantizationParityTest {
    private static CudaBackend gpu;
    private static CpuBackend cpu;

    @RegisterExtension
    static final GpuAndCpu backends = GpuAndCpu.assigning((g, c) -> { gpu = g; cpu = c; });

    // ---- quantization ---------------------------------------------------------------------------------------

    @ParameterizedTest
    @CsvSource({
            // type, double quant, weight dtype, rows, cols, block size
            "NF4, false, F32, 1, 1, 64", "NF4, true, F32, 1, 1, 64", "FP4, false, BF16, 3, 21, 64",
            "NF4, true, BF16, 7, 333, 64", "FP4, true, F16, 5, 129, 128", "NF4, false, F16, 64, 64, 64",
            "NF4, true, BF16, 130, 257, 64", "FP4, true, F32, 67, 517, 64", "NF4, true, F32, 9, 1000, 4096",
            "FP4, false, F32, 3, 4095, 4096", "NF4, true, F16, 200, 100, 256", "FP4, true, BF16, 11, 1111, 512"})
    void quantizationGivesTheBytesOfTheHostReferenceAndTheCpuBackend(QuantType type, boolean doubleQuant, DType dtype,
                                                                     int rows, int cols, int blockSize) {
        QuantSpec spec = new QuantSpec(type, blockSize, doubleQuant, DType.BF16);
        float[] values = roundTo(random(rows * cols, rows * 31L + cols, 0.05f), dtype);
        String what = String.format(Locale.ROOT, "%s%s from %s [%d, %d] block %d", type, doubleQuant ? "+dq" : "", dtype,
                rows, cols, blockSize);
        try (Tensor w = gpu.fromFloats(values, dtype, rows, cols); QuantizedTensor q = gpu.quantize4bit(w, spec);
             Tensor cw = cpu.fromFloats(values, dtype, rows, cols); QuantizedTensor c = cpu.quantize4bit(cw, spec)) {
            assertThat(q.shape()).containsExactly(rows, cols);
            assertThat(q.originalType()).isEqualTo(dtype);
            assertThat(q.spec()).isEqualTo(spec);
            assertMatchesHost(q, HostQuantizer.quantize(values, spec), what);
            assertMatchesHost(q, c.toArrays(), what + " (CPU backend)");
        }
    }

    @ParameterizedTest
    @EnumSource(QuantType.class)
    void valuesOnTheDecisionThresholdsAndOtherEdgesGetTheHostReferenceCodes(QuantType type) {
        // Block 0 has absmax 1 (scale exactly 1): every threshold, the floats beside it, every code value, signed
        // zeros and subnormals. Block 1 is zeros (scale +inf, NaN codes). Block 2 has a subnormal absmax (an infinite
        // scale too). Block 3 has values whose products with the scale round near the thresholds.
        List<Float> edge = new ArrayList<>(List.of(1f, -1f, 0f, -0f, Float.MIN_VALUE, -Float.MIN_VALUE));
        for (float t : FourBitCodec.thresholds(type)) {
            for (float s : new float[] {1, -1}) {
                edge.add(s * t);
                edge.add(Math.nextUp(s * t));
                edge.add(Math.nextDown(s * t));
            }
        }
        for (int i = 0; i < 16; i++) edge.add(type.code(i));
        int block = 64;
        float[] values = new float[4 * block * 2];
        int blocks0 = Math.ceilDiv(edge.size(), block);
        for (int i = 0; i < edge.size(); i++) values[i] = edge.get(i);
        int zeros = blocks0 * block;                  // a block of zeros
        int subnormal = zeros + block;                // a block with a subnormal absmax
        values[subnormal] = 3 * Float.MIN_VALUE;
        values[subnormal + 1] = -Float.MIN_VALUE;
        int scaled = subnormal + block;               // absmax 3: scale 1/3 rounded
        values[scaled] = 3f;
        for (int i = 1; i < block && i - 1 < FourBitCodec.thresholds(type).length; i++) {
            values[scaled + i] = FourBitCodec.thresholds(type)[i - 1] * 3f;
        }
        float[] used = Arrays.copyOf(values, scaled + block - 1); // odd length: the last byte's low nibble is padding
        for (boolean dq : new boolean[] {false, true}) {
            QuantSpec spec = new QuantSpec(type, block, dq, DType.BF16);
            try (Tensor w = gpu.fromFloats(used, DType.F32, used.length); QuantizedTensor q = gpu.quantize4bit(w, spec)) {
                assertMatchesHost(q, HostQuantizer.quantize(used, spec), type + " edges" + (dq ? " +dq" : ""));
            }
        }
    }

    @Test
    void doubleQuantizationOfEqualAbsmaxValuesGivesTheHostReferenceBytes() {
        // Every block's absmax equals the offset: the nested absmax is 0 and the 8-bit codes come from NaN.
        float[] values = new float[64 * 300];
        for (int i = 0; i < values.length; i += 64) values[i] = 0.5f;
        QuantSpec spec = new QuantSpec(QuantType.NF4, 64, true, DType.BF16);
        try (Tensor w = gpu.fromFloats(values, DType.F32, values.length); QuantizedTensor q = gpu.quantize4bit(w, spec)) {
            assertMatchesHost(q, HostQuantizer.quantize(values, spec), "equal absmax values");
        }
    }

    @ParameterizedTest
    @CsvSource({"NF4, false, BF16, 33, 77", "FP4, true, F32, 40, 640", "NF4, true, F16, 3, 1001"})
    void quantizationGivesTheBytesOfTheCpuBackend(QuantType type, boolean doubleQuant, DType dtype, int rows, int cols) {
        QuantSpec spec = new QuantSpec(type, 64, doubleQuant, DType.BF16);
        float[] values = random(rows * cols, 5, 2f);
        try (Tensor gw = gpu.fromFloats(values, dtype, rows, cols); Tensor cw = cpu.fromFloats(values, dtype, rows, cols);
             QuantizedTensor g = gpu.quantize4bit(gw, spec); QuantizedTensor c = cpu.quantize4bit(cw, spec)) {
            String what = type + (doubleQuant ? "+dq" : "") + " from " + dtype;
            assertThat(bytesOf(gpu, g.packed())).as(what + ": packed codes").isEqualTo(bytesOf(cpu, c.packed()));
            assertThat(bytesOf(gpu, g.absmax())).as(what + ": absmax").isEqualTo(bytesOf(cpu, c.absmax()));
            if (doubleQuant) {
                assertThat(bytesOf(gpu, g.nestedAbsmax())).as(what + ": nested absmax").isEqualTo(bytesOf(cpu, c.nestedAbsmax()));
                assertThat(bytesOf(gpu, g.nestedCode())).as(what + ": nested code").isEqualTo(bytesOf(cpu, c.nestedCode()));
            }
            assertThat(Float.floatToRawIntBits(g.nestedOffset())).as(what + ": offset")
                    .isEqualTo(Float.floatToRawIntBits(c.nestedOffset()));
            assertThat(g.originalType()).isEqualTo(c.originalType());
            assertThat(g.shape()).isEqualTo(c.shape());
            assertThat(g.byteSize()).isEqualTo(c.byteSize()).isEqualTo(spec.bytesFor((long) rows * cols));
        }
    }

    @Test
    void weightsWithANaNOrInfinityAreRejectedAsTheCpuBackendRejectsThem() {
        float[] values = random(300, 7, 1f);
        values[201] = Float.NaN;
        try (Tensor w = gpu.fromFloats(values, DType.BF16, 3, 100); Tensor c = cpu.fromFloats(values, DType.BF16, 3, 100)) {
            long before = gpu.memoryInUse();
            assertThatThrownBy(() -> gpu.quantize4bit(w, QuantSpec.QLORA)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("element 201 is NaN").hasMessage(messageOf(() -> cpu.quantize4bit(c, QuantSpec.QLORA)));
            assertThat(gpu.memoryInUse()).as("nothing kept after the failure").isEqualTo(before);
        }
        values[201] = 1f;
        values[7] = Float.NEGATIVE_INFINITY;
        try (Tensor w = gpu.fromFloats(values, DType.F32, 300); Tensor c = cpu.fromFloats(values, DType.F32, 300)) {
            assertThatThrownBy(() -> gpu.quantize4bit(w, QuantSpec.QLORA)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("element 7 is -Infinity").hasMessage(messageOf(() -> cpu.quantize4bit(c, QuantSpec.QLORA)));
        }
    }

    @Test
    void badInputIsRejectedWithAClearMessage() {
        try (Tensor ids = gpu.allocate(DType.I32, 64); Tensor empty = gpu.allocate(DType.F32, 0)) {
            assertThatThrownBy(() -> gpu.quantize4bit(ids, QuantSpec.QLORA)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("must be F32, BF16 or F16");
            assertThatThrownBy(() -> gpu.quantize4bit(empty, QuantSpec.QLORA)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("no elements");
        }
        try (Tensor w = gpu.fromFloats(random(128, 1, 1f), DType.F32, 2, 64); QuantizedTensor q = gpu.quantize4bit(w, QuantSpec.QLORA);
             Tensor small = gpu.allocate(DType.BF16, 2, 63); Tensor ints = gpu.allocate(DType.I32, 2, 64);
             Tensor onCpu = cpu.allocate(DType.BF16, 2, 64)) {
            assertThatThrownBy(() -> gpu.dequantize4bit(q, small)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("must have the 128 elements");
            assertThatThrownBy(() -> gpu.dequantize4bit(q, ints)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("must be F32, BF16 or F16");
            assertThatThrownBy(() -> gpu.dequantize4bit(q, onCpu)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("not a tensor of this CUDA backend");
        }
    }

    // ---- dequantization -------------------------------------------------------------------------------------

    @ParameterizedTest
    @CsvSource({
            // type, double quant, block size, elements
            "NF4, false, 64, 1", "NF4, true, 64, 7", "FP4, false, 64, 4097", "NF4, true, 64, 70001",
            "FP4, true, 128, 33333", "NF4, false, 4096, 12289", "FP4, true, 64, 16384", "NF4, true, 256, 98307"})
    void dequantizationGivesTheBitsOfTheHostReferenceAndTheCpuBackend(QuantType type, boolean doubleQuant, int blockSize,
                                                                      int n) {
        // Arbitrary stored states (every code, every 8-bit absmax code), as a checkpoint may hold them.
        QuantizedArrays arrays = randomState(new QuantSpec(type, blockSize, doubleQuant, DType.BF16), n, n);
        try (QuantizedTensor q = QuantizedTensor.upload(gpu, arrays, DType.BF16, n);
             QuantizedTensor c = QuantizedTensor.upload(cpu, arrays, DType.BF16, n)) {
            for (DType out : new DType[] {DType.F32, DType.BF16, DType.F16}) {
                String what = type + (doubleQuant ? "+dq" : "") + " to " + out;
                try (Tensor o = gpu.allocate(out, n); Tensor co = cpu.allocate(out, n)) {
                    gpu.dequantize4bit(q, o);
                    cpu.dequantize4bit(c, co);
                    assertSameBits(gpu.toFloats(o), HostQuantizer.dequantize(arrays, out), what);
                    assertThat(bytesOf(gpu, o)).as(what + ": bytes of the CPU backend").isEqualTo(bytesOf(cpu, co));
                }
            }
        }
    }

    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"F32", "BF16", "F16"})
    void dequantizationIntoViewsAndFromUnalignedCodesGivesTheSameBits(DType out) {
        int n = 64 * 37 + 5;
        QuantizedArrays arrays = randomState(new QuantSpec(QuantType.NF4, 64, true, DType.BF16), n, 11);
        float[] want = HostQuantizer.dequantize(arrays, out);
        try (QuantizedTensor q = QuantizedTensor.upload(gpu, arrays, DType.BF16, n); Tensor big = gpu.allocate(out, n + 3)) {
            for (int offset = 0; offset < 3; offset++) { // output 2-byte, 4-byte ... aligned: the scalar kernel
                Tensor view = big.view(offset, n);
                gpu.dequantize4bit(q, view);
                assertSameBits(gpu.toFloats(view), want, "into a view at element " + offset + " as " + out);
            }
        }
        // The packed codes at an odd address.
        byte[] shifted = new byte[arrays.packed().length + 1];
        System.arraycopy(arrays.packed(), 0, shifted, 1, arrays.packed().length);
        try (Tensor raw = uploadBytes(gpu, shifted); Tensor codes = uploadBytes(gpu, arrays.absmaxCodes());
             Tensor nested = gpu.fromFloats(arrays.nestedAbsmax(), DType.F32, arrays.nestedAbsmax().length);
             Tensor map = gpu.fromFloats(arrays.nestedCode(), DType.F32, 256); Tensor o = gpu.allocate(out, n)) {
            QuantizedTensor q = new QuantizedTensor(arrays.spec(), DType.BF16, new long[] {n}, raw.view(1, arrays.packed().length),
                    codes, nested, map, arrays.nestedOffset());
            gpu.dequantize4bit(q, o);
            assertSameBits(gpu.toFloats(o), want, "from codes at an odd address as " + out);
        }
    }

    @ParameterizedTest
    @CsvSource({"NF4, true, F32, BF16", "FP4, false, BF16, F16", "NF4, true, F16, F32", "FP4, true, BF16, BF16"})
    void quantizeThenDequantizeGivesTheCpuBackendsBytes(QuantType type, boolean doubleQuant, DType weightType, DType out) {
        int rows = 48, cols = 333;
        QuantSpec spec = new QuantSpec(type, 64, doubleQuant, DType.BF16);
        float[] values = random(rows * cols, 9, 0.3f);
        try (Tensor gw = gpu.fromFloats(values, weightType, rows, cols); Tensor cw = cpu.fromFloats(values, weightType, rows, cols);
             QuantizedTensor g = gpu.quantize4bit(gw, spec); QuantizedTensor c = cpu.quantize4bit(cw, spec);
             Tensor go = gpu.allocate(out, rows, cols); Tensor co = cpu.allocate(out, rows, cols)) {
            gpu.dequantize4bit(g, go);
            cpu.dequantize4bit(c, co);
            assertThat(bytesOf(gpu, go)).as("%s%s %s -> %s", type, doubleQuant ? "+dq" : "", weightType, out)
                    .isEqualTo(bytesOf(cpu, co));
        }
    }

    // ---- products with a quantized weight -------------------------------------------------------------------

    @ParameterizedTest
    @CsvSource({
            // n, k, m, type, double quant, original dtype, compute dtype
            "1, 64, 96, NF4, true, BF16, BF16", "5, 100, 37, FP4, false, BF16, BF16", "17, 257, 129, NF4, true, F32, BF16",
            "9, 300, 33, NF4, true, BF16, F16", "33, 512, 260, FP4, true, F16, F16", "5, 100, 37, NF4, false, F16, BF16",
            "40, 777, 201, NF4, true, BF16, F32", "3, 128, 64, FP4, false, F32, F32"})
    void matmulWithAQuantizedWeightMatchesTheCpuBackend(int n, int k, int m, QuantType type, boolean doubleQuant,
                                                        DType original, DType compute) {
        QuantSpec spec = new QuantSpec(type, 64, doubleQuant, compute);
        float[] w = random(m * k, 21, 0.5f), x = random(n * k, 22, 1f), start = random(n * m, 23, 1f);
        // The GPU rounds x to a 16-bit compute dtype for the tensor cores; give the CPU the same rounded x.
        float[] xRounded = compute == DType.F32 ? x : roundTo(x, compute);
        double tolerance = compute == DType.F32 ? 1e-5 : 1e-4;
        String what = String.format(Locale.ROOT, "matmul %s%s [%d, %d] %s -> %s", type, doubleQuant ? "+dq" : "", m, k,
                original, compute);
        try (Tensor gw = gpu.fromFloats(w, original, m, k); Tensor cw = cpu.fromFloats(w, original, m, k);
             QuantizedTensor gq = gpu.quantize4bit(gw, spec); QuantizedTensor cq = cpu.quantize4bit(cw, spec);
             Tensor gx = gpu.fromFloats(x, DType.F32, n, k); Tensor cx = cpu.fromFloats(xRounded, DType.F32, n, k);
             Tensor cDense = cpu.fromFloats(productWeight(roundTo(w, original), spec, original), compute, m, k)) {
            for (boolean accumulate : new boolean[] {false, true}) {
                try (Pair out = pair(start, n, m); Tensor ref = cpu.fromFloats(start, DType.F32, n, m)) {
                    gpu.matmul(gx, gq, out.g, accumulate);
                    cpu.matmul(cx, cq, out.c, accumulate);
                    cpu.matmul(cx, cDense, ref, accumulate);
                    String as = what + (accumulate ? " accumulate" : "");
                    assertCloseNorm(gpu.toFloats(out.g), cpu.toFloats(out.c), tolerance, as + " vs the CPU backend");
                    assertCloseNorm(gpu.toFloats(out.g), cpu.toFloats(ref), tolerance, as + " vs the host reference's dense weight");
                }
            }
        }
    }

    @ParameterizedTest
    @CsvSource({
            // n, k, m, type, double quant, original dtype, compute dtype
            "1, 64, 96, NF4, true, BF16, BF16", "17, 257, 129, FP4, true, F32, BF16", "9, 300, 33, NF4, false, BF16, F16",
            "33, 512, 260, NF4, true, F16, F16", "40, 777, 201, FP4, true, BF16, F32"})
    void matmulBackwardInputWithAQuantizedWeightMatchesTheCpuBackend(int n, int k, int m, QuantType type,
                                                                     boolean doubleQuant, DType original, DType compute) {
        QuantSpec spec = new QuantSpec(type, 64, doubleQuant, compute);
        float[] w = random(m * k, 31, 0.5f), dy = random(n * m, 32, 1f), start = random(n * k, 33, 1f);
        // BF16 weights multiply dY rounded to BF16 on the GPU (F16 and F32 ones in FP32): give the CPU the same dY.
        float[] dyRounded = compute == DType.BF16 ? roundTo(dy, DType.BF16) : dy;
        String what = String.format(Locale.ROOT, "matmulBackwardInput %s%s [%d, %d] %s -> %s", type,
                doubleQuant ? "+dq" : "", m, k, original, compute);
        try (Tensor gw = gpu.fromFloats(w, original, m, k); Tensor cw = cpu.fromFloats(w, original, m, k);
             QuantizedTensor gq = gpu.quantize4bit(gw, spec); QuantizedTensor cq = cpu.quantize4bit(cw, spec);
             Tensor gdy = gpu.fromFloats(dy, DType.F32, n, m); Tensor cdy = cpu.fromFloats(dyRounded, DType.F32, n, m);
             Tensor cDense = cpu.fromFloats(productWeight(roundTo(w, original), spec, original), compute, m, k)) {
            for (boolean accumulate : new boolean[] {false, true}) {
                try (Pair dx = pair(start, n, k); Tensor ref = cpu.fromFloats(start, DType.F32, n, k)) {
                    gpu.matmulBackwardInput(gdy, gq, dx.g, accumulate);
                    cpu.matmulBackwardInput(cdy, cq, dx.c, accumulate);
                    cpu.matmulBackwardInput(cdy, cDense, ref, accumulate);
                    String as = what + (accumulate ? " accumulate" : "");
                    assertCloseNorm(gpu.toFloats(dx.g), cpu.toFloats(dx.c), 1e-5, as + " vs the CPU backend");
                    assertCloseNorm(gpu.toFloats(dx.g), cpu.toFloats(ref), 1e-5, as + " vs the host reference's dense weight");
                }
            }
        }
    }

    @Test
    void productsKeepNoDequantizedCopyOfTheWeight() {
        int n = 8, k = 512, m = 384;
        try (Tensor w = gpu.fromFloats(random(m * k, 41, 1f), DType.BF16, m, k); QuantizedTensor q = gpu.quantize4bit(w, QuantSpec.QLORA);
             Tensor x = gpu.fromFloats(random(n * k, 42, 1f), DType.F32, n, k); Tensor out = gpu.allocate(DType.F32, n, m);
             Tensor dx = gpu.allocate(DType.F32, n, k)) {
            gpu.synchronize();
            long before = gpu.memoryInUse();
            gpu.matmul(x, q, out);
            gpu.matmulBackwardInput(out, q, dx, false);
            gpu.synchronize();
            assertThat(gpu.memoryInUse()).as("memory in use after two products").isEqualTo(before);
        }
    }

    // ---- speed ----------------------------------------------------------------------------------------------

    @Test
    void dequantizationOfA7bProjectionStreamsNearTheMemoryBandwidth() {
        assumeFalse(emulated(), "timing means nothing on the device emulator");
        int m = 14336, k = 4096;
        long n = (long) m * k;
        Random r = new Random(50);
        float[] values = new float[m * k];
        for (int i = 0; i < values.length; i++) values[i] = r.nextFloat() - 0.5f;
        try (Tensor w = gpu.fromFloats(values, DType.BF16, m, k)) {
            try (QuantizedTensor q = gpu.quantize4bit(w, QuantSpec.QLORA); Tensor out = gpu.allocate(DType.BF16, m, k)) {
                for (int i = 0; i < 3; i++) gpu.dequantize4bit(q, out);
                gpu.synchronize();
                int reps = 50;
                long t0 = System.nanoTime();
                for (int i = 0; i < reps; i++) gpu.dequantize4bit(q, out);
                gpu.synchronize();
                double seconds = (System.nanoTime() - t0) / 1e9 / reps;
                double bytes = q.byteSize() + out.byteSize();
                double tbPerS = bytes / seconds / 1e12;
                System.out.printf(Locale.ROOT, "dequantize4bit NF4+dq -> BF16 [%d, %d]: %.1f us, %.2f TB/s of %d elements%n",
                        m, k, seconds * 1e6, tbPerS, n);
                assertThat(tbPerS).as("TB/s read and written by the dequantization").isGreaterThan(2.0);
            }
        }
    }

    @Test
    void aProductWithA4bitWeightCostsLittleMoreThanWithItsBf16Weight() {
        assumeFalse(emulated(), "timing means nothing on the device emulator");
        // A Mistral-7B MLP projection over one micro-batch of 4 x 1024 tokens.
        int n = 4096, k = 4096, m = 14336;
        Random r = new Random(60);
        float[] w = new float[m * k], x = new float[n * k];
        for (int i = 0; i < w.length; i++) w[i] = (r.nextFloat() - 0.5f) * 0.05f;
        for (int i = 0; i < x.length; i++) x[i] = r.nextFloat() - 0.5f;
        try (Tensor dense = gpu.fromFloats(w, DType.BF16, m, k); QuantizedTensor q = gpu.quantize4bit(dense, QuantSpec.QLORA);
             Tensor xs = gpu.fromFloats(x, DType.F32, n, k); Tensor out = gpu.allocate(DType.F32, n, m);
             Tensor dx = gpu.allocate(DType.F32, n, k)) {
            double denseSeconds = productSeconds(xs, dense, out, dx);
            double quantizedSeconds = productSeconds(xs, q, out, dx);
            System.out.printf(Locale.ROOT, "forward + input-gradient products [%d, %d] x [%d, %d]: BF16 %.3f ms, NF4+dq %.3f ms (%.3fx)%n",
                    n, k, m, k, denseSeconds * 1e3, quantizedSeconds * 1e3, quantizedSeconds / denseSeconds);
            assertThat(quantizedSeconds / denseSeconds).as("time of the 4-bit products over the BF16 ones").isLessThan(1.15);
        }
    }

    /** Seconds per forward plus input-gradient product, after warm-up. */
    private static double productSeconds(Tensor x, Tensor w, Tensor out, Tensor dx) {
        for (int i = 0; i < 3; i++) {
            gpu.matmul(x, w, out);
            gpu.matmulBackwardInput(out, w, dx, false);
        }
        gpu.synchronize();
        int reps = 10;
        long t0 = System.nanoTime();
        for (int i = 0; i < reps; i++) {
            gpu.matmul(x, w, out);
            gpu.matmulBackwardInput(out, w, dx, false);
        }
        gpu.synchronize();
        return (System.nanoTime() - t0) / 1e9 / reps;
    }

    // ---- helpers ----------------------------------------------------------------------------------------------

    private record Pair(Tensor g, Tensor c) implements AutoCloseable {
        @Override public void close() {
            g.close();
            c.close();
        }
    }

    private static Pair pair(float[] values, long... shape) {
        return new Pair(gpu.fromFloats(values, DType.F32, shape), cpu.fromFloats(values, DType.F32, shape));
    }

    /** The weight as the products multiply it, per the host reference: dequantized, then through both roundings. */
    private static float[] productWeight(float[] values, QuantSpec spec, DType original) {
        float[] deq = HostQuantizer.dequantize(HostQuantizer.quantize(values, spec), DType.F32);
        for (int i = 0; i < deq.length; i++) deq[i] = HostQuantizer.matmulValue(deq[i], original, spec.computeType());
        return deq;
    }

    /** The GPU's quantized weight has exactly the parts of {@code want}: codes, absmax or 8-bit absmax, nested state. */
    private static void assertMatchesHost(QuantizedTensor q, QuantizedArrays want, String what) {
        QuantizedArrays got = q.toArrays();
        assertThat(got.spec()).isEqualTo(want.spec());
        assertThat(got.packed()).as(what + ": packed codes").isEqualTo(want.packed());
        if (want.spec().doubleQuant()) {
            assertThat(got.absmaxCodes()).as(what + ": 8-bit absmax codes").isEqualTo(want.absmaxCodes());
            assertSameBits(got.nestedAbsmax(), want.nestedAbsmax(), what + ": nested absmax");
            assertSameBits(got.nestedCode(), want.nestedCode(), what + ": nested code");
        } else {
            assertSameBits(got.absmax(), want.absmax(), what + ": absmax");
            assertThat(q.nestedAbsmax()).isNull();
        }
        assertThat(Float.floatToRawIntBits(got.nestedOffset())).as(what + ": offset (" + got.nestedOffset() + " vs "
                + want.nestedOffset() + ")").isEqualTo(Float.floatToRawIntBits(want.nestedOffset()));
    }

    private static void assertSameBits(float[] got, float[] want, String what) {
        assertThat(got).as(what + ": length").hasSize(want.length);
        for (int i = 0; i < want.length; i++) {
            if (Float.floatToRawIntBits(got[i]) != Float.floatToRawIntBits(want[i])) {
                throw new AssertionError(String.format(Locale.ROOT, "%s: element %d of %d is %s (0x%08x), the reference has %s (0x%08x)",
                        what, i, want.length, got[i], Float.floatToRawIntBits(got[i]), want[i], Float.floatToRawIntBits(want[i])));
            }
        }
    }

    private static void assertCloseNorm(float[] got, float[] want, double tolerance, String what) {
        double num = 0, den = 0;
        for (int i = 0; i < want.length; i++) {
            double d = (double) got[i] - want[i];
            num += d * d;
            den += (double) want[i] * want[i];
        }
        assertThat(Math.sqrt(num / den)).as(what + ": relative error (norm)").isLessThanOrEqualTo(tolerance);
    }

    /** A stored state of random bytes and scales: every nibble, every 8-bit code, absmax values from 0 up. */
    private static QuantizedArrays randomState(QuantSpec spec, int n, long seed) {
        Random r = new Random(seed);
        byte[] packed = new byte[(n + 1) / 2];
        r.nextBytes(packed);
        int blocks = (int) spec.blocks(n);
        if (!spec.doubleQuant()) {
            float[] absmax = new float[blocks];
            for (int b = 0; b < blocks; b++) absmax[b] = b == 0 ? 0f : (float) Math.exp(r.nextGaussian() * 3);
            return new QuantizedArrays(spec, n, packed, absmax, null, null, null, 0f);
        }
        byte[] codes = new byte[blocks];
        r.nextBytes(codes);
        float[] nested = new float[(int) spec.nestedBlocks(n)];
        for (int b = 0; b < nested.length; b++) nested[b] = (float) Math.abs(r.nextGaussian() * 0.1);
        return new QuantizedArrays(spec, n, packed, null, codes, nested, DynamicMap.signed(), 0.0371f + (float) r.nextDouble() * 0.01f);
    }

    private static Tensor uploadBytes(Backend b, byte[] bytes) {
        try (Arena arena = Arena.ofConfined()) {
            return b.upload(arena.allocateFrom(ValueLayout.JAVA_BYTE, bytes), DType.U8, DType.U8, bytes.length);
        }
    }

    private static float[] random(int count, long seed, float scale) {
        Random r = new Random(seed * 7919 + count);
        float[] v = new float[count];
        for (int i = 0; i < count; i++) v[i] = (float) (r.nextGaussian() * scale);
        return v;
    }

    private static float[] roundTo(float[] values, DType t) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment s = arena.allocate(t.bytesFor(values.length), 8);
            for (int i = 0; i < values.length; i++) HostConversions.setFloat(s, t, i, values[i]);
            return HostConversions.toFloats(s, t, values.length);
        }
    }

    private static byte[] bytesOf(Backend b, Tensor t) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment host = arena.allocate(Math.max(1, t.byteSize()), 16);
            b.copyToHost(t, host);
            return host.asSlice(0, t.byteSize()).toArray(ValueLayout.JAVA_BYTE);
        }
    }

    private static String messageOf(Runnable r) {
        try {
            r.run();
        } catch (RuntimeException e) {
            return e.getMessage();
        }
        throw new AssertionError("the CPU backend did not fail");
    }

    private static boolean emulated() {
        return gpu.description().contains("device emulator");
    }
}
