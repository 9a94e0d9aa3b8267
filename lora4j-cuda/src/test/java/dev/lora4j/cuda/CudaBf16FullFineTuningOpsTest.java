package dev.lora4j.cuda;

import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.stream.Stream;

import static dev.lora4j.cuda.Bf16Values.bf;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * What full fine-tuning in pure BF16 (as torch trains a model loaded in bfloat16) asks of the CUDA backend: AdamW over
 * BF16 parameters and moments with BF16 or F32 gradients, weight gradients written as BF16, and the sum of squares of
 * BF16 gradients, each against a scalar Java reference. AdamW must give the reference's bits: the step in float, in the
 * order of exact.cuh, each result rounded once to its dtype. Skips, with the probe's reason, where CUDA cannot run.
 */
class CudaBf16FullFineTuningOpsTest {
    /** Sizes: under one 8-element group, whole groups, groups plus a tail, and many groups plus a tail. */
    private static final int[] SIZES = {5, 64, 8 * 37 + 3, 2 * 65536 + 13};

    private static CudaBackend f32;
    private static CudaBackend bf16;
    @RegisterExtension
    static final GpuBackends backends = GpuBackends.assigning((a, b) -> { f32 = a; bf16 = b; });

    // ---- AdamW --------------------------------------------------------------------------------------------

    static Stream<Arguments> adamwCases() {
        List<Arguments> c = new ArrayList<>();
        // Element offsets of the views of (param, m, v) and of grad: all 16-byte aligned, none, only grad off.
        int[][] offsets = {{0, 0}, {1, 1}, {0, 3}};
        for (DType[] types : new DType[][] {{DType.BF16, DType.BF16}, {DType.BF16, DType.F32}, {DType.F32, DType.BF16},
                {DType.F32, DType.F32}}) {
            for (int n : SIZES) for (int[] off : offsets) c.add(Arguments.of(types[0], types[1], n, off[0], off[1], 0.5f));
        }
        c.add(Arguments.of(DType.BF16, DType.BF16, 8 * 37 + 3, 0, 0, 0f));
        c.add(Arguments.of(DType.BF16, DType.F32, 8 * 37 + 3, 1, 1, 0f));
        return c.stream();
    }

    @ParameterizedTest(name = "param {0}, grad {1}, {2} elements at offsets {3} and {4}, weight decay {5}")
    @MethodSource("adamwCases")
    void adamwIsTheScalarFloatStepWithEachResultRoundedOnceToItsDtype(DType pt, DType gt, int n, int stateOffset,
                                                                       int gradOffset, float weightDecay) {
        // An lr large enough that the updates, and the decay (1 - lr * wd = 0.99), show in BF16's 8 bits.
        float lr = 0.02f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
        Random r = new Random(n * 31L + stateOffset);
        float[] p = rounded(gaussian(r, n, 1f), pt), m = rounded(gaussian(r, n, 0.01f), pt);
        float[] v = rounded(gaussian(r, n, 1e-4f), pt);
        for (int i = 0; i < n; i++) v[i] = Math.abs(v[i]);
        try (Placed ps = new Placed(p, pt, stateOffset); Placed ms = new Placed(m, pt, stateOffset);
             Placed vs = new Placed(v, pt, stateOffset)) {
            for (int step = 1; step <= 3; step++) {
                float[] g = rounded(gaussian(r, n, step == 2 ? 1e-6f : 0.05f), gt);
                g[0] = 0f;
                if (step == 2) g[n - 1] = Float.NaN; // its element's param and moments become NaN, and stay NaN
                try (Placed gs = new Placed(g, gt, gradOffset)) {
                    f32.adamw(ps.view, gs.view, ms.view, vs.view, lr, beta1, beta2, eps, weightDecay, step);
                }
                for (int i = 0; i < n; i++) adamwStep(p, g, m, v, i, pt, lr, beta1, beta2, eps, weightDecay, step);
                String what = "after step " + step;
                assertSameFloats(ps.values(), p, "param " + what);
                assertSameFloats(ms.values(), m, "m " + what);
                assertSameFloats(vs.values(), v, "v " + what);
            }
        }
    }

    /**
     * torch.optim.AdamW's step of element i, as the kernel computes it (exact.cuh, l4j_adamw_step): the scalars in
     * double from the float hyperparameters, rounded to float; then float operations in this order, each rounded to
     * nearest as the kernel's _rn intrinsics round (lerp as one fused multiply-add); param, m and v each rounded to
     * {@code pt} at the end.
     */
    private static void adamwStep(float[] p, float[] g, float[] m, float[] v, int i, DType pt, float lr, float beta1,
                                  float beta2, float eps, float weightDecay, long step) {
        float decay = (float) (1.0 - (double) lr * weightDecay);
        float oneMinusBeta1 = (float) (1.0 - beta1), oneMinusBeta2 = (float) (1.0 - beta2);
        float negStepSize = (float) -(lr / (1.0 - Math.pow(beta1, step)));
        float bias2Sqrt = (float) Math.sqrt(1.0 - Math.pow(beta2, step));

        float param = p[i] * decay;
        float mm = Math.fma(oneMinusBeta1, g[i] - m[i], m[i]);
        float vv = v[i] * beta2 + oneMinusBeta2 * g[i] * g[i];
        float denom = (float) Math.sqrt(vv) / bias2Sqrt + eps; // a double square root of a float rounds as sqrtf
        param = param + negStepSize * mm / denom;
        p[i] = round(param, pt);
        m[i] = round(mm, pt);
        v[i] = round(vv, pt);
    }

    @Test
    void adamwRefusesMomentsOfAnotherDtypeThanTheParameterAndGradientsOfNeitherType() {
        try (Tensor p = f32.allocate(DType.BF16, 8); Tensor g = f32.allocate(DType.BF16, 8);
             Tensor m16 = f32.allocate(DType.BF16, 8); Tensor m32 = f32.allocate(DType.F32, 8);
             Tensor g16 = f32.allocate(DType.F16, 8)) {
            assertThatThrownBy(() -> f32.adamw(p, g, m32, m16, 1e-3f, 0.9f, 0.999f, 1e-8f, 0f, 1))
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("adamw: m " + m32).hasMessageContaining("dtype of param " + p);
            assertThatThrownBy(() -> f32.adamw(p, g, m16, m32, 1e-3f, 0.9f, 0.999f, 1e-8f, 0f, 1))
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("adamw: v " + m32).hasMessageContaining("dtype of param " + p);
            assertThatThrownBy(() -> f32.adamw(p, g16, m16, m16, 1e-3f, 0.9f, 0.999f, 1e-8f, 0f, 1))
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("adamw grad must be F32 or BF16, got " + g16);
        }
    }

    // ---- weight gradients -----------------------------------------------------------------------------------

    @ParameterizedTest(name = "{0} activations, dY {1}, x {2}, n={3} k={4} m={5}, accumulate {6}, dW at row {7}")
    @CsvSource({
            // activations, dY, x, n, k, m, accumulate, first row of the dW view
            // BF16 dY and x: the tensor cores write the BF16 gradient themselves
            "BF16, BF16, BF16, 17, 33, 19, false, 0", "BF16, BF16, BF16, 64, 128, 96, true, 0",
            "BF16, BF16, BF16, 5, 33, 7, true, 1",
            // BF16 activations, the logits' F32 gradient: dY rounded to BF16 to meet x there
            "BF16, F32, BF16, 9, 24, 31, true, 0",
            // F32 operands: an FP32 product into an F32 block, added to (or rounded into) the gradient after
            "F32, F32, F32, 17, 33, 19, false, 0", "F32, F32, F32, 40, 100, 21, true, 1",
            "F32, F32, BF16, 12, 64, 16, true, 0"})
    void matmulBackwardWeightIntoBf16IsTheF32SumRoundedAndAddedToTheOldValue(DType act, DType dyType, DType xType, int n,
                                                                          int k, int m, boolean accumulate, int row) {
        CudaBackend b = act == DType.F32 ? f32 : bf16;
        Random r = new Random(n * 1000L + k * 10L + m);
        float[] dy = rounded(gaussian(r, n * m, 1f), dyType), x = rounded(gaussian(r, n * k, 1f), xType);
        float[] start = rounded(gaussian(r, (m + row) * k, 4f), DType.BF16);
        try (Tensor dys = b.fromFloats(dy, dyType, n, m); Tensor xs = b.fromFloats(x, xType, n, k);
             Tensor whole = b.fromFloats(start, DType.BF16, m + row, k)) {
            b.matmulBackwardWeight(dys, xs, whole.rows(row, m), accumulate);
            float[] got = b.toFloats(whole);
            assertThat(Arrays.copyOf(got, row * k)).as("rows before the dW view").isEqualTo(Arrays.copyOf(start, row * k));
            // The tensor cores meet an F32 dY rounded to BF16.
            float[] dyMet = act == DType.BF16 ? rounded(dy, DType.BF16) : dy;
            for (int i = 0; i < m; i++) {
                for (int j = 0; j < k; j++) {
                    double old = accumulate ? start[(row + i) * k + j] : 0, sum = 0, magnitude = Math.abs(old);
                    for (int t = 0; t < n; t++) {
                        double term = (double) dyMet[t * m + i] * x[t * k + j];
                        sum += term;
                        magnitude += Math.abs(term);
                    }
                    double want = old + sum;
                    // An F32 sum (n terms, 2^-24 each) rounded to BF16 (half an ulp: 2^-8 of the value), and when
                    // accumulating possibly rounded once more before the old value is added, as torch's bfloat16
                    // gradient accumulation rounds (cuBLASLt's BF16 output does on the H200).
                    double tolerance = 0x1p-8 * Math.abs(want) + (accumulate ? 0x1p-8 * Math.abs(sum) : 0) + 0x1p-16 * magnitude;
                    assertThat((double) got[(row + i) * k + j]).as("dW[%d][%d], the sum %s", i, j, want)
                            .isCloseTo(want, org.assertj.core.data.Offset.offset(tolerance));
                }
            }
        }
    }

    @Test
    void matmulBackwardWeightOverNoRowsZeroesABf16GradientUnlessAccumulating() {
        float[] start = rounded(gaussian(new Random(3), 6 * 10, 1f), DType.BF16);
        for (CudaBackend b : List.of(f32, bf16)) {
            try (Tensor dy = b.allocate(b.activationType(), 0, 6); Tensor x = b.allocate(b.activationType(), 0, 10);
                 Tensor dw = b.fromFloats(start, DType.BF16, 6, 10)) {
                b.matmulBackwardWeight(dy, x, dw, true);
                assertThat(b.toFloats(dw)).as("accumulating nothing").isEqualTo(start);
                b.matmulBackwardWeight(dy, x, dw, false);
                assertThat(b.toFloats(dw)).as("overwritten with an empty sum").containsOnly(0f);
            }
        }
    }

    // ---- gradient norm --------------------------------------------------------------------------------------

    @ParameterizedTest(name = "{0} values at offset {1}")
    @CsvSource({"1, 0", "255, 1", "256, 0", "257, 0", "299, 1", "299, 4", "300007, 0", "300007, 3"})
    void sumOfSquaresOfBf16ValuesIsTheDoubleSumOfTheirSquares(int n, int offset) {
        float[] x = rounded(gaussian(new Random(n), n, 3f), DType.BF16);
        assertSumOfSquares(x, offset, "Gaussian values");
        x[n - 1] = bf(3e19f); // its square overflows float, not double (and outweighs the rest)
        assertSumOfSquares(x, offset, "with 3e19 last");
    }

    private static void assertSumOfSquares(float[] x, int offset, String what) {
        double want = 0;
        for (float e : x) want += (double) e * e;
        try (Placed t = new Placed(x, DType.BF16, offset)) {
            assertThat(f32.sumOfSquares(t.view)).as("sum of squares, %s", what)
                    .isCloseTo(want, org.assertj.core.data.Offset.offset(1e-12 * want));
        }
    }

    // ---- helpers ----------------------------------------------------------------------------------------

    /**
     * Values at element offset {@code offset} of a larger GPU tensor whose other elements are NaN, and a view of them;
     * {@link #values} reads them back after checking that the elements around the view are untouched.
     */
    private static final class Placed implements AutoCloseable {
        final Tensor whole, view;
        final int offset, count;

        Placed(float[] values, DType dtype, int offset) {
            float[] padded = new float[values.length + offset + 3];
            Arrays.fill(padded, Float.NaN);
            System.arraycopy(values, 0, padded, offset, values.length);
            this.whole = f32.fromFloats(padded, dtype, padded.length);
            this.view = whole.view(offset, values.length);
            this.offset = offset;
            this.count = values.length;
        }

        float[] values() {
            float[] all = f32.toFloats(whole);
            for (int i = 0; i < all.length; i++) {
                if (i < offset || i >= offset + count) assertThat(all[i]).as("element %d outside the view", i).isNaN();
            }
            return Arrays.copyOfRange(all, offset, offset + count);
        }

        @Override
        public void close() { whole.close(); }
    }

    private static float round(float v, DType t) { return t == DType.BF16 ? bf(v) : v; }

    private static float[] rounded(float[] v, DType t) {
        float[] r = v.clone();
        for (int i = 0; i < r.length; i++) r[i] = round(r[i], t);
        return r;
    }

    private static float[] gaussian(Random r, int n, float scale) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) v[i] = (float) (r.nextGaussian() * scale);
        return v;
    }

    /** The same floats element by element (any NaN equal to any other: the GPU's NaN bits are its own). */
    private static void assertSameFloats(float[] got, float[] want, String what) {
        assertThat(got.length).as(what + ": element count").isEqualTo(want.length);
        for (int i = 0; i < want.length; i++) {
            if (Float.floatToIntBits(got[i]) != Float.floatToIntBits(want[i])) {
                throw new AssertionError(what + ": element " + i + " of " + want.length + " is " + got[i] + ", expected " + want[i]);
            }
        }
    }
}
