package dev.lora4j.cuda;

import dev.lora4j.backend.Backend;
import dev.lora4j.backend.Backends;
import dev.lora4j.backend.cpu.CpuBackend;
import dev.lora4j.quant.QuantSpec;
import dev.lora4j.quant.QuantType;
import dev.lora4j.quant.QuantizedTensor;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Half;
import dev.lora4j.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.EnumSource;

import java.util.Locale;
import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * Every op of a CUDA backend opened with BF16 activations against the CPU backend's F32 op on the same inputs rounded
 * to BF16. The GPU widens BF16 to FP32, computes in FP32 and rounds each BF16 result once, to nearest even, so:
 * <ul>
 *   <li>where both backends perform the same FP32 operations (copies, additions, dropout, scaling) the GPU's BF16
 *       result is the CPU's F32 result rounded to BF16, bit for bit;</li>
 *   <li>elsewhere a BF16 result c' of an exact value c satisfies |c' - c| <= u |c| with u = 2^-8 (BF16 has 8
 *       significant bits), plus what FP32 arithmetic in another order adds on either side, bounded per op below;</li>
 *   <li>F32 results (weight gradients, bias gradients, the loss's logits) carry only the FP32 part.</li>
 * </ul>
 * Skips, with the probe's reason, where CUDA cannot run.
 */
class CudaBf16ActivationParityTest {
    /** BF16's unit roundoff: one rounding to nearest moves a value by at most this much, relatively. */
    private static final double U = 0x1p-8;
    /** FP32's unit roundoff. */
    private static final double U32 = 0x1p-24;

    private static CudaBackend gpu;
    private static CpuBackend cpu;

    @RegisterExtension
    static final GpuAndCpu backends = GpuAndCpu.assigning(DType.BF16, (g, c) -> { gpu = g; cpu = c; });

    @Test
    void theBackendSaysItsActivationsAreBf16() {
        assertThat(gpu.activationType()).isEqualTo(DType.BF16);
        assertThat(gpu.description()).endsWith(", BF16 activations");
    }

    @Test
    void backendsOpensTheCudaBackendWithTheActivationsAsked() {
        try (Backend b = Backends.open("cuda", DType.BF16, notice -> { throw new AssertionError(notice); })) {
            assertThat(b.name()).isEqualTo("cuda");
            assertThat(b.activationType()).isEqualTo(DType.BF16);
        }
        try (Backend b = Backends.open("cuda", DType.F32, notice -> { throw new AssertionError(notice); })) {
            assertThat(b.activationType()).isEqualTo(DType.F32);
        }
    }

    @Test
    void opsRefuseActivationsOfTwoDtypesOrOfAnotherType() {
        try (Tensor x = gpu.allocate(DType.BF16, 2, 8); Tensor f = gpu.allocate(DType.F32, 2, 8);
             Tensor h = gpu.allocate(DType.F16, 2, 8); Tensor w = gpu.allocate(DType.F32, 8)) {
            assertThatThrownBy(() -> gpu.rmsNorm(x, w, 1e-5f, f)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("rmsNorm x and out").hasMessageContaining("one dtype");
            assertThatThrownBy(() -> gpu.swiglu(x, f, x)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("swiglu gate and up");
            assertThatThrownBy(() -> gpu.add(f, x)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("(the same dtype, or F32 into BF16)");
            assertThatThrownBy(() -> gpu.dropout(h, 0.1f, 1, h)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("must be F32 or BF16 (an activation)");
        }
    }

    // ---- element-wise ops: the CPU's result rounded once ---------------------------------------------------

    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"F32", "BF16", "F16"})
    void embeddingWritesTheTableRowsRoundedToBf16(DType tableType) {
        int vocab = 300, d = 40;
        int[] ids = {0, 299, 5, 5, 123, 1};
        float[] table = random(vocab * d, 1, 3f);
        try (Tensor gt = gpu.fromFloats(table, tableType, vocab, d); Tensor ct = cpu.fromFloats(table, tableType, vocab, d);
             Tensor go = gpu.allocate(DType.BF16, ids.length, d); Tensor co = cpu.allocate(DType.F32, ids.length, d)) {
            gpu.embedding(gt, ids, go);
            cpu.embedding(ct, ids, co);
            assertRoundedOnce(gpu.toFloats(go), cpu.toFloats(co), "embedding of a " + tableType + " table");
        }
    }

    @Test
    void addAddsBf16AndF32IntoBf16WithOneRounding() {
        int n = 1000;
        float[] x = bf16(random(n, 2, 1f)), y = bf16(random(n, 3, 1f)), z = random(n, 4, 1e-2f);
        try (Tensor gx = gpu.fromFloats(x, DType.BF16, n); Tensor gy = gpu.fromFloats(y, DType.BF16, n);
             Tensor gz = gpu.fromFloats(z, DType.F32, n);
             Tensor cx = cpu.fromFloats(x, DType.F32, n); Tensor cy = cpu.fromFloats(y, DType.F32, n);
             Tensor cz = cpu.fromFloats(z, DType.F32, n)) {
            gpu.add(gx, gy);
            cpu.add(cx, cy);
            assertRoundedOnce(gpu.toFloats(gx), cpu.toFloats(cx), "BF16 + BF16");
            try (Tensor cRounded = cpu.fromFloats(gpu.toFloats(gx), DType.F32, n)) {
                gpu.add(gx, gz); // a product formed in F32 joining the BF16 stream
                cpu.add(cRounded, cz);
                assertRoundedOnce(gpu.toFloats(gx), cpu.toFloats(cRounded), "BF16 + F32");
            }
        }
    }

    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"F32", "BF16", "F16"})
    void addBiasRoundsTheSumOnce(DType biasType) {
        int rows = 7, d = 33;
        float[] x = bf16(random(rows * d, 5, 1f)), bias = random(d, 6, 1f);
        try (Tensor gx = gpu.fromFloats(x, DType.BF16, rows, d); Tensor cx = cpu.fromFloats(x, DType.F32, rows, d);
             Tensor gb = gpu.fromFloats(bias, biasType, d); Tensor cb = cpu.fromFloats(bias, biasType, d)) {
            gpu.addBias(gx, gb);
            cpu.addBias(cx, cb);
            assertRoundedOnce(gpu.toFloats(gx), cpu.toFloats(cx), "addBias, " + biasType + " bias");
        }
    }

    @ParameterizedTest
    @CsvSource({"0.1, false", "0.5, true", "0, false", "1, true"})
    void dropoutDropsTheCpusElementsAndRoundsTheKeptOnesOnce(float p, boolean inPlace) {
        int n = 4099;
        float[] x = bf16(random(n, 7, 1f));
        try (Tensor gx = gpu.fromFloats(x, DType.BF16, n); Tensor cx = cpu.fromFloats(x, DType.F32, n);
             Tensor go = gpu.allocate(DType.BF16, n); Tensor co = cpu.allocate(DType.F32, n)) {
            gpu.dropout(gx, p, 99, inPlace ? gx : go);
            cpu.dropout(cx, p, 99, co);
            assertRoundedOnce(gpu.toFloats(inPlace ? gx : go), cpu.toFloats(co), "dropout p=" + p);
        }
    }

    @Test
    void scaleAndZeroWorkOnBf16Activations() {
        int n = 513;
        float[] x = bf16(random(n, 8, 1f));
        try (Tensor gx = gpu.fromFloats(x, DType.BF16, n); Tensor cx = cpu.fromFloats(x, DType.F32, n)) {
            gpu.scale(gx, 2.5f);
            cpu.scale(cx, 2.5f);
            assertRoundedOnce(gpu.toFloats(gx), cpu.toFloats(cx), "scale");
            gpu.zero(gx.view(0, 100));
            float[] after = gpu.toFloats(gx);
            for (int i = 0; i < 100; i++) assertThat(after[i]).isZero();
            assertThat(after[100]).isEqualTo(Half.bf16ToFloat(Half.floatToBf16(cpu.toFloats(cx)[100])));
        }
    }

    // ---- ops with their own arithmetic: one rounding plus FP32's share ----------------------------------------

    @ParameterizedTest
    @CsvSource({"1, 8, F32", "9, 4096, BF16", "33, 1100, F16", "64, 896, F32"})
    void rmsNormAndItsBackwardMatchTheCpuWithinOneRounding(int rows, int d, DType weightType) {
        float[] x = bf16(random(rows * d, 9, 2f)), w = random(d, 10, 1f), dy = bf16(random(rows * d, 11, 1f));
        try (Tensor gx = gpu.fromFloats(x, DType.BF16, rows, d); Tensor cx = cpu.fromFloats(x, DType.F32, rows, d);
             Tensor gw = gpu.fromFloats(w, weightType, d); Tensor cw = cpu.fromFloats(w, weightType, d);
             Tensor gdy = gpu.fromFloats(dy, DType.BF16, rows, d); Tensor cdy = cpu.fromFloats(dy, DType.F32, rows, d);
             Tensor go = gpu.allocate(DType.BF16, rows, d); Tensor co = cpu.allocate(DType.F32, rows, d);
             Tensor gdx = gpu.allocate(DType.BF16, rows, d); Tensor cdx = cpu.allocate(DType.F32, rows, d);
             Tensor gdw = gpu.allocate(DType.F32, d); Tensor cdw = cpu.allocate(DType.F32, d)) {
            String what = String.format(Locale.ROOT, "rmsNorm %dx%d, %s weight", rows, d, weightType);
            gpu.rmsNorm(gx, gw, 1e-5f, go);
            cpu.rmsNorm(cx, cw, 1e-5f, co);
            // Each output is w x r with r from a sum of d squares: FP32 adds about d ulps of r in either order.
            assertWithinOneRounding(gpu.toFloats(go), cpu.toFloats(co), 4 * d * U32, what);
            gpu.rmsNormBackward(gx, gw, 1e-5f, gdy, gdx, gdw);
            cpu.rmsNormBackward(cx, cw, 1e-5f, cdy, cdx, cdw);
            // dx = r w dy - x r^3/d sum(w dy x): the two terms cancel in part, so FP32's share is taken relative
            // to the largest output, and the rounding to BF16 per element.
            assertWithinOneRounding(gpu.toFloats(gdx), cpu.toFloats(cdx), 4 * d * U32, what + " dX");
            assertCloseF32(gpu.toFloats(gdw), cpu.toFloats(cdw), 4 * rows * U32, what + " dWeight (F32)");
            gpu.rmsNorm(gx, gw, 1e-5f, gx); // out may be x
            assertWithinOneRounding(gpu.toFloats(gx), cpu.toFloats(co), 4 * d * U32, what + " in place");
        }
    }

    @ParameterizedTest
    @CsvSource({"9, 4096", "3, 20000", "33, 1100"})
    void rmsNormBackwardAddsIntoTheResidualGradientWithOneRounding(int rows, int d) {
        // Rows of 4096 (every group held in registers, old values too), of 20000 (past the 16384 elements a block
        // holds: the rest read again) and of 1100 (not whole 16-byte groups: element by element).
        float[] x = bf16(random(rows * d, 13, 2f)), w = random(d, 14, 1f), dy = bf16(random(rows * d, 15, 1f));
        float[] old = bf16(random(rows * d, 16, 3f));
        try (Tensor gx = gpu.fromFloats(x, DType.BF16, rows, d); Tensor cx = cpu.fromFloats(x, DType.F32, rows, d);
             Tensor gw = gpu.fromFloats(w, DType.BF16, d); Tensor cw = cpu.fromFloats(w, DType.BF16, d);
             Tensor gdy = gpu.fromFloats(dy, DType.BF16, rows, d); Tensor cdy = cpu.fromFloats(dy, DType.F32, rows, d);
             Tensor gdx = gpu.fromFloats(old, DType.BF16, rows, d);
             Tensor cdx = cpu.fromFloats(old, DType.F32, rows, d)) {
            gpu.rmsNormBackward(gx, gw, 1e-5f, gdy, gdx, null, true);
            cpu.rmsNormBackward(cx, cw, 1e-5f, cdy, cdx, null, true);
            // old + dx, rounded once to BF16 on the GPU; FP32's share as in the overwriting form.
            assertWithinOneRounding(gpu.toFloats(gdx), cpu.toFloats(cdx), 4 * d * U32,
                    String.format(Locale.ROOT, "rmsNormBackward += %dx%d", rows, d));
        }
    }

    @ParameterizedTest
    @CsvSource({"5, 2, 64", "17, 4, 128", "3, 1, 6"})
    void ropeAndItsInverseRotateWithOneRoundingPerStore(int n, int heads, int headDim) {
        int width = heads * headDim;
        float[] x = bf16(random(n * width, 12, 1f));
        int[] positions = new int[n];
        for (int i = 0; i < n; i++) positions[i] = 1000 * i + 7; // angles of thousands of radians
        float[] invFreq = new float[headDim / 2];
        for (int j = 0; j < invFreq.length; j++) invFreq[j] = (float) Math.pow(10000, -2.0 * j / headDim);
        try (Tensor gx = gpu.fromFloats(x, DType.BF16, n, width); Tensor cx = cpu.fromFloats(x, DType.F32, n, width);
             Tensor gf = gpu.fromFloats(invFreq, DType.F32, invFreq.length); Tensor cf = cpu.fromFloats(invFreq, DType.F32, invFreq.length)) {
            gpu.rope(gx, headDim, positions, gf);
            cpu.rope(cx, headDim, positions, cf);
            // The GPU takes the cosine and sine in double as the CPU does, and may differ in their last bit: a few FP32
            // ulps of the pair's size at most.
            assertWithinOneRounding(gpu.toFloats(gx), cpu.toFloats(cx), 8 * U32, "rope");
            try (Tensor cBack = cpu.fromFloats(gpu.toFloats(gx), DType.F32, n, width)) {
                gpu.ropeBackward(gx, headDim, positions, gf);
                cpu.ropeBackward(cBack, headDim, positions, cf);
                assertWithinOneRounding(gpu.toFloats(gx), cpu.toFloats(cBack), 8 * U32, "ropeBackward");
            }
        }
    }

    @Test
    void swigluAndItsBackwardMatchTheCpuWithinOneRounding() {
        int n = 3000;
        float[] g = bf16(random(n, 13, 3f)), u = bf16(random(n, 14, 1f)), dy = bf16(random(n, 15, 1f));
        g[0] = -100f; // exp(-g) overflows: silu is 0 and the gradients finite
        try (Tensor gg = gpu.fromFloats(g, DType.BF16, n); Tensor cg = cpu.fromFloats(g, DType.F32, n);
             Tensor gu = gpu.fromFloats(u, DType.BF16, n); Tensor cu = cpu.fromFloats(u, DType.F32, n);
             Tensor gdy = gpu.fromFloats(dy, DType.BF16, n); Tensor cdy = cpu.fromFloats(dy, DType.F32, n);
             Tensor go = gpu.allocate(DType.BF16, n); Tensor co = cpu.allocate(DType.F32, n);
             Tensor gdg = gpu.allocate(DType.BF16, n); Tensor cdg = cpu.allocate(DType.F32, n);
             Tensor gdu = gpu.allocate(DType.BF16, n); Tensor cdu = cpu.allocate(DType.F32, n)) {
            gpu.swiglu(gg, gu, go);
            cpu.swiglu(cg, cu, co);
            // A handful of FP32 operations with expf (2 ulp on the GPU) per element, relative to the element.
            assertElementwise(gpu.toFloats(go), cpu.toFloats(co), 16 * U32, "swiglu");
            gpu.swigluBackward(gg, gu, gdy, gdg, gdu);
            cpu.swigluBackward(cg, cu, cdy, cdg, cdu);
            assertElementwise(gpu.toFloats(gdg), cpu.toFloats(cdg), 16 * U32, "swiglu dGate");
            assertElementwise(gpu.toFloats(gdu), cpu.toFloats(cdu), 16 * U32, "swiglu dUp");
        }
    }

    @Test
    void sumRowsAndEmbeddingBackwardAccumulateBf16GradientsIntoF32() {
        int rows = 300, cols = 70, vocab = 50;
        float[] dy = bf16(random(rows * cols, 16, 1f)), start = random(cols, 17, 1f);
        int[] ids = new int[rows];
        for (int i = 0; i < rows; i++) ids[i] = (i * 7) % vocab;
        try (Tensor gdy = gpu.fromFloats(dy, DType.BF16, rows, cols); Tensor cdy = cpu.fromFloats(dy, DType.F32, rows, cols);
             Tensor gb = gpu.fromFloats(start, DType.F32, cols); Tensor cb = cpu.fromFloats(start, DType.F32, cols);
             Tensor gt = gpu.allocate(DType.F32, vocab, cols); Tensor ct = cpu.allocate(DType.F32, vocab, cols)) {
            gpu.sumRows(gdy, gb);
            cpu.sumRows(cdy, cb);
            assertCloseF32(gpu.toFloats(gb), cpu.toFloats(cb), 2 * rows * U32, "sumRows");
            gpu.embeddingBackward(ids, gdy, gt);
            cpu.embeddingBackward(ids, cdy, ct);
            assertCloseF32(gpu.toFloats(gt), cpu.toFloats(ct), 2 * rows * U32, "embeddingBackward");
        }
    }

    // ---- products ---------------------------------------------------------------------------------------------

    @ParameterizedTest
    @CsvSource({
            // n, k, m, weight type, output type, accumulate
            "1, 64, 96, BF16, BF16, false", "17, 257, 129, BF16, BF16, true", "64, 512, 384, BF16, F32, false",
            "5, 100, 37, F32, BF16, true", "33, 16, 300, F32, BF16, false", "9, 130, 70, F16, BF16, true",
            "40, 96, 1000, BF16, F32, true"})
    void matmulMultipliesBf16OperandsAndRoundsTheOutputOnce(int n, int k, int m, DType wt, DType out, boolean accumulate) {
        float[] x = bf16(random(n * k, 18, 1f)), w = random(m * k, 19, 0.5f);
        float[] start = accumulate ? bf16(random(n * m, 20, 1f)) : new float[n * m];
        // The GPU multiplies a weight of another type rounded to BF16: the CPU gets the rounded weight.
        float[] wUsed = bf16(roundTo(w, wt));
        String what = String.format(Locale.ROOT, "matmul n=%d k=%d m=%d %s -> %s%s", n, k, m, wt, out, accumulate ? " accumulate" : "");
        try (Tensor gx = gpu.fromFloats(x, DType.BF16, n, k); Tensor cx = cpu.fromFloats(x, DType.F32, n, k);
             Tensor gw = gpu.fromFloats(w, wt, m, k); Tensor cw = cpu.fromFloats(wUsed, DType.F32, m, k);
             Tensor go = gpu.fromFloats(start, out, n, m); Tensor co = cpu.fromFloats(start, DType.F32, n, m)) {
            gpu.matmul(gx, gw, go, accumulate);
            cpu.matmul(cx, cw, co, accumulate);
            float[] bound = productSlack(x, wUsed, accumulate ? start : null, n, k, m, false);
            assertProduct(gpu.toFloats(go), cpu.toFloats(co), bound, out == DType.BF16, what);
        }
    }

    @Test
    void matmulMultipliesBf16ActivationsByADequantizedFourBitWeight() {
        int n = 9, k = 128, m = 64;
        float[] x = bf16(random(n * k, 21, 1f)), w = random(m * k, 22, 0.2f);
        QuantSpec spec = new QuantSpec(QuantType.NF4, 64, true, DType.BF16);
        try (Tensor gw = gpu.fromFloats(w, DType.BF16, m, k); QuantizedTensor gq = gpu.quantize4bit(gw, spec);
             Tensor cw = cpu.fromFloats(w, DType.BF16, m, k); QuantizedTensor cq = cpu.quantize4bit(cw, spec);
             Tensor gx = gpu.fromFloats(x, DType.BF16, n, k); Tensor cx = cpu.fromFloats(x, DType.F32, n, k);
             Tensor go = gpu.allocate(DType.BF16, n, m); Tensor co = cpu.allocate(DType.F32, n, m);
             Tensor dense = cpu.allocate(DType.BF16, m, k)) {
            gpu.matmul(gx, gq, go);
            cpu.matmul(cx, cq, co);
            cpu.dequantize4bit(cq, dense);
            float[] bound = productSlack(x, cpu.toFloats(dense), null, n, k, m, false);
            assertProduct(gpu.toFloats(go), cpu.toFloats(co), bound, true, "matmul, NF4 weight");
            try (Tensor gdy = gpu.fromFloats(bf16(random(n * m, 23, 1f)), DType.BF16, n, m);
                 Tensor cdy = cpu.fromFloats(gpu.toFloats(gdy), DType.F32, n, m);
                 Tensor gdx = gpu.allocate(DType.BF16, n, k); Tensor cdx = cpu.allocate(DType.F32, n, k)) {
                gpu.matmulBackwardInput(gdy, gq, gdx, false);
                cpu.matmulBackwardInput(cdy, cq, cdx, false);
                float[] b2 = productSlack(cpu.toFloats(cdy), cpu.toFloats(dense), null, n, m, k, true);
                assertProduct(gpu.toFloats(gdx), cpu.toFloats(cdx), b2, true, "matmulBackwardInput, NF4 weight");
            }
        }
    }

    @ParameterizedTest
    @CsvSource({
            // n, k, m, dY type, weight type, accumulate
            "1, 64, 96, BF16, BF16, false", "17, 257, 129, BF16, F32, true", "5, 100, 37, BF16, F16, false",
            "40, 77, 300, F32, BF16, false", "8, 33, 19, F32, F32, true"})
    void matmulBackwardInputMeetsTheWeightInBf16(int n, int k, int m, DType dyType, DType wt, boolean accumulate) {
        float[] dy = random(n * m, 24, 1f), w = random(m * k, 25, 0.5f);
        float[] start = accumulate ? bf16(random(n * k, 26, 1f)) : new float[n * k];
        // dY and the weight meet in BF16 unless both are F32 (the loss's F32 gradient through an F32 lm_head).
        boolean fp32 = dyType == DType.F32 && wt == DType.F32;
        float[] dyUsed = fp32 ? dy : bf16(dy), wUsed = fp32 ? w : bf16(roundTo(w, wt));
        String what = String.format(Locale.ROOT, "matmulBackwardInput n=%d k=%d m=%d dY %s, w %s%s", n, k, m, dyType, wt,
                accumulate ? " accumulate" : "");
        try (Tensor gdy = gpu.fromFloats(dy, dyType, n, m); Tensor cdy = cpu.fromFloats(dyUsed, DType.F32, n, m);
             Tensor gw = gpu.fromFloats(w, wt, m, k); Tensor cw = cpu.fromFloats(wUsed, DType.F32, m, k);
             Tensor gdx = gpu.fromFloats(start, DType.BF16, n, k); Tensor cdx = cpu.fromFloats(start, DType.F32, n, k)) {
            gpu.matmulBackwardInput(gdy, gw, gdx, accumulate);
            cpu.matmulBackwardInput(cdy, cw, cdx, accumulate);
            float[] bound = productSlack(dyUsed, wUsed, accumulate ? start : null, n, m, k, true);
            assertProduct(gpu.toFloats(gdx), cpu.toFloats(cdx), bound, true, what);
        }
    }

    @ParameterizedTest
    @CsvSource({
            // n, k, m, dY type, accumulate
            "1, 64, 96, BF16, false", "300, 130, 16, BF16, true", "65, 100, 13, BF16, false", "40, 96, 500, F32, true"})
    void matmulBackwardWeightMultipliesBf16OperandsIntoAnF32Gradient(int n, int k, int m, DType dyType, boolean accumulate) {
        float[] dy = random(n * m, 27, 1f), x = bf16(random(n * k, 28, 1f));
        float[] start = accumulate ? random(m * k, 29, 1f) : new float[m * k];
        float[] dyUsed = bf16(dy); // an F32 dY (the logits' gradient) is rounded to meet the BF16 x on the tensor cores
        String what = String.format(Locale.ROOT, "matmulBackwardWeight n=%d k=%d m=%d dY %s%s", n, k, m, dyType,
                accumulate ? " accumulate" : "");
        try (Tensor gdy = gpu.fromFloats(dy, dyType, n, m); Tensor cdy = cpu.fromFloats(dyUsed, DType.F32, n, m);
             Tensor gx = gpu.fromFloats(x, DType.BF16, n, k); Tensor cx = cpu.fromFloats(x, DType.F32, n, k);
             Tensor gdw = gpu.fromFloats(start, DType.F32, m, k); Tensor cdw = cpu.fromFloats(start, DType.F32, m, k)) {
            gpu.matmulBackwardWeight(gdy, gx, gdw, accumulate);
            cpu.matmulBackwardWeight(cdy, cx, cdw, accumulate);
            // dW[j][i] = sum_r dY[r][j] x[r][i]: the sum over n rows, with dY^T as the "x" of productSlack.
            float[] dyT = transpose(dyUsed, n, m), xT = transpose(x, n, k);
            float[] bound = productSlack(dyT, xT, accumulate ? start : null, m, n, k, false);
            assertProduct(gpu.toFloats(gdw), cpu.toFloats(cdw), bound, false, what);
        }
    }

    // ---- attention ----------------------------------------------------------------------------------------

    @ParameterizedTest
    @CsvSource({
            // n, nHeads, nKvHeads, headDim, window: the FP32 kernels' head sizes, and the tensor cores' (64, 128)
            "33, 4, 2, 48, 0", "70, 2, 1, 80, 16", "20, 2, 2, 256, 0", "65, 4, 2, 64, 0", "40, 2, 1, 128, 9"})
    void trainingAttentionTakesBf16ActivationsAndRoundsItsOutputsOnce(int n, int nHeads, int nKvHeads, int headDim,
                                                                     int window) {
        int qw = nHeads * headDim, kw = nKvHeads * headDim;
        float[] q = bf16(random(n * qw, 30, 1f)), k = bf16(random(n * kw, 31, 1f)), v = bf16(random(n * kw, 32, 1f));
        float[] dOut = bf16(random(n * qw, 33, 1f));
        String what = String.format(Locale.ROOT, "attention n=%d heads=%d/%d headDim=%d window=%d", n, nHeads, nKvHeads,
                headDim, window);
        boolean tensorCores = gpu.attentionOnTensorCores(headDim);
        try (Tensor gq = gpu.fromFloats(q, DType.BF16, n, qw); Tensor gk = gpu.fromFloats(k, DType.BF16, n, kw);
             Tensor gv = gpu.fromFloats(v, DType.BF16, n, kw); Tensor gdo = gpu.fromFloats(dOut, DType.BF16, n, qw);
             Tensor cq = cpu.fromFloats(q, DType.F32, n, qw); Tensor ck = cpu.fromFloats(k, DType.F32, n, kw);
             Tensor cv = cpu.fromFloats(v, DType.F32, n, kw); Tensor cdo = cpu.fromFloats(dOut, DType.F32, n, qw);
             Tensor go = gpu.allocate(DType.BF16, n, qw); Tensor glse = gpu.allocate(DType.F32, n, nHeads);
             Tensor co = cpu.allocate(DType.F32, n, qw); Tensor clse = cpu.allocate(DType.F32, n, nHeads);
             Tensor gdq = gpu.allocate(DType.BF16, n, qw); Tensor gdk = gpu.allocate(DType.BF16, n, kw);
             Tensor gdv = gpu.allocate(DType.BF16, n, kw); Tensor cdq = cpu.allocate(DType.F32, n, qw);
             Tensor cdk = cpu.allocate(DType.F32, n, kw); Tensor cdv = cpu.allocate(DType.F32, n, kw)) {
            gpu.attentionForward(gq, gk, gv, nHeads, nKvHeads, headDim, window, go, glse);
            cpu.attentionForward(cq, ck, cv, nHeads, nKvHeads, headDim, window, co, clse);
            // The tensor cores also round the probabilities to BF16 before multiplying v: one more rounding of each
            // term, so of the output's size (CudaFlashAttentionParityTest bounds it per element).
            double inner = tensorCores ? U : 1e-5;
            assertNormWithin(gpu.toFloats(go), cpu.toFloats(co), U + inner, what + " out");
            assertCloseF32(gpu.toFloats(glse), cpu.toFloats(clse), 1e-5, what + " lse (F32)");
            // Both differentiate the same forward outputs: the GPU's, BF16 out and F32 lse.
            try (Tensor cout = cpu.fromFloats(gpu.toFloats(go), DType.F32, n, qw);
                 Tensor cl = cpu.fromFloats(gpu.toFloats(glse), DType.F32, n, nHeads)) {
                gpu.attentionBackward(gq, gk, gv, go, glse, gdo, nHeads, nKvHeads, headDim, window, gdq, gdk, gdv);
                cpu.attentionBackward(cq, ck, cv, cout, cl, cdo, nHeads, nKvHeads, headDim, window, cdq, cdk, cdv);
                // The FP32 kernels' bound of CudaTrainingParityTest (1e-4 of the largest element), the tensor cores'
                // roundings of P and dS between the products, and the rounding of each gradient to BF16.
                double fp32 = tensorCores ? 4 * U : 1e-4;
                assertNormWithin(gpu.toFloats(gdq), cpu.toFloats(cdq), U + fp32, what + " dq");
                assertNormWithin(gpu.toFloats(gdk), cpu.toFloats(cdk), U + fp32, what + " dk");
                assertNormWithin(gpu.toFloats(gdv), cpu.toFloats(cdv), U + fp32, what + " dv");
            }
        }
    }

    @Test
    void inferenceAttentionReadsABf16CacheForBf16Queries() {
        int n = 5, start = 11, nHeads = 4, nKvHeads = 2, headDim = 32, total = start + n;
        int qw = nHeads * headDim, kw = nKvHeads * headDim;
        float[] q = bf16(random(n * qw, 34, 1f)), k = bf16(random(total * kw, 35, 1f)), v = bf16(random(total * kw, 36, 1f));
        try (Tensor gq = gpu.fromFloats(q, DType.BF16, n, qw); Tensor cq = cpu.fromFloats(q, DType.F32, n, qw);
             Tensor gk = gpu.fromFloats(k, DType.BF16, total, kw); Tensor ck = cpu.fromFloats(k, DType.F32, total, kw);
             Tensor gv = gpu.fromFloats(v, DType.BF16, total, kw); Tensor cv = cpu.fromFloats(v, DType.F32, total, kw);
             Tensor go = gpu.allocate(DType.BF16, n, qw); Tensor co = cpu.allocate(DType.F32, n, qw)) {
            gpu.attention(gq, gk, gv, start, nHeads, nKvHeads, headDim, 0, go);
            cpu.attention(cq, ck, cv, start, nHeads, nKvHeads, headDim, 0, co);
            assertNormWithin(gpu.toFloats(go), cpu.toFloats(co), U + 1e-5, "attention over a BF16 cache");
        }
    }

    // ---- the loss chunk: BF16 hidden states, F32 logits -------------------------------------------------------

    @Test
    void theLossChunkFormsF32LogitsFromBf16HiddenStatesAndSendsItsGradientBackInBf16() {
        int n = 6, d = 64, vocab = 300;
        float[] h = bf16(random(n * d, 37, 1f)), head = bf16(random(vocab * d, 38, 0.3f));
        int[] targets = {3, -100, 299, 0, 150, 7};
        try (Tensor gh = gpu.fromFloats(h, DType.BF16, n, d); Tensor ch = cpu.fromFloats(h, DType.F32, n, d);
             Tensor gw = gpu.fromFloats(head, DType.BF16, vocab, d); Tensor cw = cpu.fromFloats(head, DType.F32, vocab, d);
             Tensor glg = gpu.allocate(DType.F32, n, vocab); Tensor clg = cpu.allocate(DType.F32, n, vocab);
             Tensor gl = gpu.allocate(DType.F32, n); Tensor cl = cpu.allocate(DType.F32, n);
             Tensor gdh = gpu.allocate(DType.BF16, n, d); Tensor cdh = cpu.allocate(DType.F32, n, d)) {
            gpu.matmul(gh, gw, glg);
            cpu.matmul(ch, cw, clg);
            assertProduct(gpu.toFloats(glg), cpu.toFloats(clg), productSlack(h, head, null, n, d, vocab, false), false,
                    "logits (F32 from BF16)");
            try (Tensor same = cpu.fromFloats(gpu.toFloats(glg), DType.F32, n, vocab)) {
                gpu.crossEntropy(glg, targets, 0.5f, gl);
                cpu.crossEntropy(same, targets, 0.5f, cl);
                assertCloseF32(gpu.toFloats(gl), cpu.toFloats(cl), 1e-6, "losses");
                float[] gpuGrad = gpu.toFloats(glg);
                assertCloseF32(gpuGrad, cpu.toFloats(same), 1e-6, "logit gradients");
                // The F32 logit gradient is rounded to BF16 to meet the BF16 lm_head. Both sides start from the GPU's
                // gradient: the two backends' exp differ in the last bits, and an element that sits at a BF16 rounding
                // boundary would then round one way on each side, a difference the product's bound does not cover.
                float[] grad = bf16(gpuGrad);
                try (Tensor rounded = cpu.fromFloats(grad, DType.F32, n, vocab)) {
                    gpu.matmulBackwardInput(glg, gw, gdh, false);
                    cpu.matmulBackwardInput(rounded, cw, cdh, false);
                    assertProduct(gpu.toFloats(gdh), cpu.toFloats(cdh), productSlack(grad, head, null, n, vocab, d, true),
                            true, "dHidden");
                }
            }
        }
    }

    // ---- assertions -----------------------------------------------------------------------------------------

    /** got is want rounded to BF16 (nearest even), bit for bit: the same FP32 operations, rounded once. */
    private static void assertRoundedOnce(float[] got, float[] want, String what) {
        assertThat(got.length).as(what + ": element count").isEqualTo(want.length);
        for (int i = 0; i < want.length; i++) {
            float expected = Half.bf16ToFloat(Half.floatToBf16(want[i]));
            if (Float.floatToRawIntBits(got[i]) != Float.floatToRawIntBits(expected)) {
                throw new AssertionError(String.format(Locale.ROOT, "%s: element %d of %d is %s, expected %s (%s rounded to BF16)",
                        what, i, want.length, got[i], expected, want[i]));
            }
        }
    }

    /**
     * Per element {@code |got - want| <= U |want| + fp32 * max|want|}: one rounding of the element, and FP32 differences
     * relative to the tensor's largest element.
     */
    private static void assertWithinOneRounding(float[] got, float[] want, double fp32, String what) {
        double scale = 0;
        for (float w : want) scale = Math.max(scale, Math.abs(w));
        for (int i = 0; i < want.length; i++) {
            double bound = U * Math.abs(want[i]) + fp32 * scale;
            check(got, want, i, bound, what);
        }
    }

    /** Per element {@code |got - want| <= (U + fp32) |want|}, for values computed element by element. */
    private static void assertElementwise(float[] got, float[] want, double fp32, String what) {
        for (int i = 0; i < want.length; i++) check(got, want, i, (U + fp32) * Math.abs(want[i]) + 1e-30, what);
    }

    /** F32 outputs: per element within {@code tolerance} of the largest element. */
    private static void assertCloseF32(float[] got, float[] want, double tolerance, String what) {
        double scale = 1e-30;
        for (float w : want) scale = Math.max(scale, Math.abs(w));
        for (int i = 0; i < want.length; i++) check(got, want, i, tolerance * scale, what);
    }

    /** ||got - want|| <= tolerance ||want||: one rounding per element gives at most U. */
    private static void assertNormWithin(float[] got, float[] want, double tolerance, String what) {
        double num = 0, den = 0;
        for (int i = 0; i < want.length; i++) {
            double d = (double) got[i] - want[i];
            num += d * d;
            den += (double) want[i] * want[i];
        }
        assertThat(Double.isFinite(num)).as(what + ": finite").isTrue();
        assertThat(Math.sqrt(num / Math.max(den, 1e-30))).as(what + ": relative error (norm)").isLessThanOrEqualTo(tolerance);
    }

    /** Per element {@code |got - want| <= (rounded ? U |want| : 0) + bound[i]}. */
    private static void assertProduct(float[] got, float[] want, float[] bound, boolean rounded, String what) {
        for (int i = 0; i < want.length; i++) check(got, want, i, (rounded ? U * Math.abs(want[i]) : 0) + bound[i], what);
    }

    private static void check(float[] got, float[] want, int i, double bound, String what) {
        double diff = Math.abs((double) got[i] - want[i]);
        if (!(diff <= bound)) {
            throw new AssertionError(String.format(Locale.ROOT, "%s: element %d of %d is %s on the GPU, %s on the CPU;"
                    + " |difference| %.3g > bound %.3g", what, i, want.length, got[i], want[i], diff, bound));
        }
    }

    /**
     * What FP32 accumulation in two different orders may add to each element of the product [n, m] of {@code a}
     * ([n, k] row-major) and {@code w} ([m, k] row-major, or [k, m] with {@code wIsKByM}): the standard bound of k + 1
     * roundings of FP32 over the sum of the terms' magnitudes (and the start value's, when the product accumulates into
     * it), on either side. The terms are products of BF16 values, exact in FP32.
     */
    private static float[] productSlack(float[] a, float[] w, float[] start, int n, int k, int m, boolean wIsKByM) {
        float[] bound = new float[n * m];
        for (int r = 0; r < n; r++) {
            for (int c = 0; c < m; c++) {
                double s = start == null ? 0 : Math.abs(start[r * m + c]);
                for (int i = 0; i < k; i++) s += Math.abs((double) a[r * k + i] * (wIsKByM ? w[i * m + c] : w[c * k + i]));
                bound[r * m + c] = (float) (2 * (k + 1) * U32 * s + 1e-30);
            }
        }
        return bound;
    }

    private static float[] transpose(float[] a, int rows, int cols) {
        float[] t = new float[a.length];
        for (int r = 0; r < rows; r++) for (int c = 0; c < cols; c++) t[c * rows + r] = a[r * cols + c];
        return t;
    }

    private static float[] random(int count, long seed, float scale) {
        Random r = new Random(seed * 104729 + count);
        float[] v = new float[count];
        for (int i = 0; i < count; i++) v[i] = (float) (r.nextGaussian() * scale);
        return v;
    }

    /** The values rounded to BF16 (nearest even), as floats. */
    private static float[] bf16(float[] values) {
        return roundTo(values, DType.BF16);
    }

    private static float[] roundTo(float[] values, DType t) {
        float[] out = new float[values.length];
        for (int i = 0; i < values.length; i++) {
            out[i] = switch (t) {
                case BF16 -> Half.bf16ToFloat(Half.floatToBf16(values[i]));
                case F16 -> Float.float16ToFloat(Float.floatToFloat16(values[i]));
                default -> values[i];
            };
        }
        return out;
    }
}
