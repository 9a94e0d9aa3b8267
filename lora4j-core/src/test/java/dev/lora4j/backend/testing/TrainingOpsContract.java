package dev.lora4j.backend.testing;

import dev.lora4j.backend.AdamwTensors;
import dev.lora4j.backend.Backend;
import dev.lora4j.backend.DropoutHash;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import org.assertj.core.data.Offset;
import org.assertj.core.data.Percentage;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import static dev.lora4j.backend.testing.RandomTensors.representable;
import static dev.lora4j.backend.testing.ReferenceTrainingOps.toDoubles;
import static dev.lora4j.backend.testing.TensorAssert.F32_ROUNDOFF;
import static dev.lora4j.backend.testing.TensorAssert.assertClose;
import static dev.lora4j.backend.testing.TensorAssert.assertSameFloats;
import static dev.lora4j.backend.testing.TensorAssert.assertWithin;
import static dev.lora4j.backend.testing.TensorAssert.maxAbs;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * What every {@link Backend} must compute for training, op by op: the backward forms against the analytic
 * double-precision gradients of {@link ReferenceTrainingOps} (themselves checked against finite differences in
 * {@code ReferenceTrainingOpsTest}), the loss, the optimizer step and dropout. Shapes are randomized and odd:
 * rows and widths shorter and longer than a vector, grouped-query heads, sliding windows, 16-bit weights. A
 * backend's test class extends this one and opens the backend; tolerances are FP32 error bounds that a backend
 * with other arithmetic may widen through the {@code *Roundoff} and {@link #attentionTolerance} methods.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
public abstract class TrainingOpsContract {
    private Backend backend;

    /** Opens the backend under test (may skip the class through JUnit assumptions). */
    protected abstract Backend openBackend();

    /** The unit roundoff of the backend's matmul accumulation; FP32 by default. */
    protected double matmulRoundoff() { return F32_ROUNDOFF; }

    /** The unit roundoff of element-wise arithmetic and of exp; FP32 by default. */
    protected double elementwiseRoundoff() { return F32_ROUNDOFF; }

    /**
     * The error allowed in attention's gradients, relative to each element plus the largest element of the three
     * gradients: the backward pass recomputes probabilities from lse and sums several products of them.
     */
    protected double attentionTolerance() { return 1e-4; }

    /**
     * The operands of attention's products as the backend multiplies them at head size {@code headDim}: the FP32
     * values themselves by default. A backend whose matrix units take narrower operands returns them so rounded (the
     * CUDA backend's tensor-core kernels round q, k, v and dOut to BF16): the attention checks then compare with the
     * reference on the rounded values, allowing for the rounding of the probabilities and score gradients between
     * the two products of each pass ({@link #attentionIntermediateRoundoff}).
     */
    protected float[] attentionOperands(float[] values, int headDim) { return values; }

    /** The unit roundoff to which the probabilities and score gradients are rounded between attention's products. */
    protected double attentionIntermediateRoundoff(int headDim) { return 0; }

    protected final Backend backend() { return backend; }

    @BeforeAll
    final void open() { backend = openBackend(); }

    @AfterAll
    final void closeBackend() { if (backend != null) backend.close(); }

    // ---- matmul backward ------------------------------------------------------------------------------------

    @Test
    void matmulBackwardInputMatchesTheReferenceForRandomShapesAndWeightTypes() {
        RandomTensors random = new RandomTensors(101);
        for (int c = 0; c < 40; c++) {
            int n = random.pickInt(1, 2, 3, 5, 7, 16, 17, 65);
            int k = random.pickInt(1, 3, 15, 16, 17, 33, 100, 257);
            int m = random.pickInt(1, 2, 4, 5, 13, 32, 67);
            checkBackwardInput(random, n, k, m, random.pick(DType.F32, DType.BF16, DType.F16), random.between(0, 3) == 0);
        }
    }

    @Test
    void matmulBackwardInputMatchesTheReferenceAtModelWidths() {
        RandomTensors random = new RandomTensors(102);
        checkBackwardInput(random, 70, 300, 1100, DType.BF16, false); // the sum runs over more than one block
        checkBackwardInput(random, 9, 1030, 16, DType.BF16, true); // through a LoRA B: k wide, m = rank
        checkBackwardInput(random, 33, 16, 520, DType.F32, false); // through a LoRA A
        checkBackwardInput(random, 4, 130, 600, DType.F16, true);
    }

    @Test
    void matmulBackwardWeightMatchesTheReferenceForRandomShapes() {
        RandomTensors random = new RandomTensors(103);
        for (int c = 0; c < 40; c++) {
            int n = random.pickInt(1, 2, 3, 5, 7, 16, 17, 65);
            int k = random.pickInt(1, 3, 15, 16, 17, 33, 100, 257);
            int m = random.pickInt(1, 2, 4, 5, 13, 32, 67);
            checkBackwardWeight(random, n, k, m, random.pick(DType.F32, DType.F32, DType.BF16), random.between(0, 3) == 0);
        }
    }

    @Test
    void matmulBackwardWeightMatchesTheReferenceAtModelWidths() {
        RandomTensors random = new RandomTensors(104);
        checkBackwardWeight(random, 600, 40, 70, DType.F32, true); // the sum over tokens runs over several blocks
        checkBackwardWeight(random, 300, 1030, 16, DType.F32, false); // LoRA A: [rank, k]
        checkBackwardWeight(random, 300, 16, 520, DType.F32, true); // LoRA B: [m, rank]
    }

    @Test
    void matmulBackwardOpsReadAndWriteRowViews() {
        RandomTensors random = new RandomTensors(105);
        int n = 5, k = 12, m = 7;
        float[] dy = random.uniform(10 * m, -1, 1), w = random.uniform(m * k, -1, 1), x = random.uniform(10 * k, -1, 1);
        try (Tensor dyt = backend.fromFloats(dy, DType.F32, 10, m); Tensor wt = backend.fromFloats(w, DType.F32, m, k);
             Tensor xt = backend.fromFloats(x, DType.F32, 10, k); Tensor dx = backend.allocate(DType.F32, 10, k);
             Tensor dw = backend.allocate(DType.F32, m + 2, k)) {
            backend.matmulBackwardInput(dyt.rows(2, n), wt, dx.rows(4, n), false);
            backend.matmulBackwardWeight(dyt.rows(2, n), xt.rows(3, n), dw.rows(1, m), false);
            double[] dyPart = toDoubles(Arrays.copyOfRange(dy, 2 * m, (2 + n) * m));
            double[] expectedDx = ReferenceTrainingOps.matmulBackwardInput(dyPart, toDoubles(w), n, k, m);
            double[] expectedDw = ReferenceTrainingOps.matmulBackwardWeight(dyPart, toDoubles(Arrays.copyOfRange(x, 3 * k, (3 + n) * k)), n, k, m);
            float[] gotDx = backend.toFloats(dx), gotDw = backend.toFloats(dw);
            assertClose("dX in its view", Arrays.copyOfRange(gotDx, 4 * k, (4 + n) * k), expectedDx, 1e-5, 1e-5);
            assertClose("dW in its view", Arrays.copyOfRange(gotDw, k, (1 + m) * k), expectedDw, 1e-5, 1e-5);
            assertThat(Arrays.copyOfRange(gotDx, 0, 4 * k)).containsOnly(0f);
            assertThat(Arrays.copyOfRange(gotDx, (4 + n) * k, 10 * k)).containsOnly(0f);
            assertThat(Arrays.copyOfRange(gotDw, 0, k)).containsOnly(0f);
            assertThat(Arrays.copyOfRange(gotDw, (1 + m) * k, (2 + m) * k)).containsOnly(0f);
        }
    }

    @Test
    void matmulBackwardOpsRejectMismatchedShapes() {
        try (Tensor dy = backend.allocate(DType.F32, 4, 3); Tensor w = backend.allocate(DType.BF16, 5, 8);
             Tensor dx = backend.allocate(DType.F32, 4, 8); Tensor x = backend.allocate(DType.F32, 4, 8);
             Tensor dw = backend.allocate(DType.F32, 3, 9)) {
            assertThatThrownBy(() -> backend.matmulBackwardInput(dy, w, dx, false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("matmulBackwardInput");
            assertThatThrownBy(() -> backend.matmulBackwardWeight(dy, x, dw, false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("matmulBackwardWeight");
        }
    }

    private void checkBackwardInput(RandomTensors random, int n, int k, int m, DType wt, boolean accumulate) {
        float[] dy = random.uniform(n * m, -1, 1), w = random.uniform(m * k, -1, 1, wt);
        float[] before = accumulate ? random.uniform(n * k, -2, 2) : null;
        String what = "matmulBackwardInput n=" + n + " k=" + k + " m=" + m + " " + wt + (accumulate ? " accumulate" : "");
        try (Tensor dyt = backend.fromFloats(dy, DType.F32, n, m); Tensor wt2 = backend.fromFloats(w, wt, m, k);
             Tensor dx = accumulate ? backend.fromFloats(before, DType.F32, n, k) : backend.allocate(DType.F32, n, k)) {
            backend.matmulBackwardInput(dyt, wt2, dx, accumulate);
            double[] expected = ReferenceTrainingOps.matmulBackwardInput(toDoubles(dy), toDoubles(w), n, k, m);
            double[] initial = accumulate ? toDoubles(before) : null;
            if (initial != null) for (int i = 0; i < expected.length; i++) expected[i] += initial[i];
            double[] magnitude = ReferenceTrainingOps.backwardMagnitudes(toDoubles(dy), toDoubles(w), n, k, m, false, initial);
            assertWithin(what, backend.toFloats(dx), expected, sumBound(magnitude, m));
        }
    }

    private void checkBackwardWeight(RandomTensors random, int n, int k, int m, DType xt, boolean accumulate) {
        float[] dy = random.uniform(n * m, -1, 1), x = random.uniform(n * k, -1, 1, xt);
        float[] before = accumulate ? random.uniform(m * k, -2, 2) : null;
        String what = "matmulBackwardWeight n=" + n + " k=" + k + " m=" + m + " x " + xt + (accumulate ? " accumulate" : "");
        try (Tensor dyt = backend.fromFloats(dy, DType.F32, n, m); Tensor xt2 = backend.fromFloats(x, xt, n, k);
             Tensor dw = accumulate ? backend.fromFloats(before, DType.F32, m, k) : backend.allocate(DType.F32, m, k)) {
            backend.matmulBackwardWeight(dyt, xt2, dw, accumulate);
            double[] expected = ReferenceTrainingOps.matmulBackwardWeight(toDoubles(dy), toDoubles(x), n, k, m);
            double[] initial = accumulate ? toDoubles(before) : null;
            if (initial != null) for (int i = 0; i < expected.length; i++) expected[i] += initial[i];
            double[] magnitude = ReferenceTrainingOps.backwardMagnitudes(toDoubles(dy), toDoubles(x), n, k, m, true, initial);
            assertWithin(what, backend.toFloats(dw), expected, sumBound(magnitude, n));
        }
    }

    /** Any order of FP32 accumulation of {@code terms} products (and an added output) stays within (terms+2)·u·Σ|terms|. */
    private double[] sumBound(double[] magnitude, int terms) {
        double[] bound = new double[magnitude.length];
        for (int i = 0; i < bound.length; i++) bound[i] = (terms + 2) * matmulRoundoff() * magnitude[i] * 1.01 + 1e-30;
        return bound;
    }

    @Test
    void sumRowsAddsEachColumnsSumToTheBiasGradient() {
        RandomTensors random = new RandomTensors(106);
        for (int[] shape : new int[][] {{1, 1}, {3, 17}, {64, 5}, {33, 300}, {7, 1100}}) {
            int rows = shape[0], d = shape[1];
            float[] y = random.uniform(rows * d, -1, 1), before = random.uniform(d, -1, 1);
            try (Tensor yt = backend.fromFloats(y, DType.F32, rows, d); Tensor b = backend.fromFloats(before, DType.F32, d)) {
                backend.sumRows(yt, b);
                double[] expected = ReferenceTrainingOps.sumRows(toDoubles(y), rows, d);
                double[] magnitude = ReferenceTrainingOps.sumRows(ReferenceTrainingOps.abs(toDoubles(y)), rows, d);
                for (int j = 0; j < d; j++) {
                    expected[j] += before[j];
                    magnitude[j] += Math.abs(before[j]);
                }
                assertWithin("sumRows " + rows + "x" + d, backend.toFloats(b), expected, sumBound(magnitude, rows));
            }
        }
    }

    // ---- attention ------------------------------------------------------------------------------------------

    @Test
    void attentionForwardMatchesTheReferenceAndKeepsTheLogSumExp() {
        RandomTensors random = new RandomTensors(111);
        for (int c = 0; c < 30; c++) {
            int kvHeads = random.pickInt(1, 2, 3), group = random.pickInt(1, 2, 4), heads = kvHeads * group;
            int headDim = random.pickInt(2, 5, 16, 24, 64, 128), n = random.pickInt(1, 2, 7, 17, 40);
            int window = random.pickInt(0, 0, 1, 3, 16);
            float[] q = random.uniform(n * heads * headDim, -2, 2), k = random.uniform(n * kvHeads * headDim, -2, 2);
            float[] v = random.uniform(n * kvHeads * headDim, -1, 1);
            String what = "attentionForward n=" + n + " heads=" + heads + "/" + kvHeads + " headDim=" + headDim + " window=" + window;
            try (Tensor qt = backend.fromFloats(q, DType.F32, n, (long) heads * headDim);
                 Tensor kt = backend.fromFloats(k, DType.F32, n, (long) kvHeads * headDim);
                 Tensor vt = backend.fromFloats(v, DType.F32, n, (long) kvHeads * headDim);
                 Tensor out = backend.allocate(DType.F32, n, (long) heads * headDim); Tensor lse = backend.allocate(DType.F32, n, heads)) {
                backend.attentionForward(qt, kt, vt, heads, kvHeads, headDim, window, out, lse);
                double[] qd = toDoubles(attentionOperands(q, headDim)), kd = toDoubles(attentionOperands(k, headDim));
                double[] vd = toDoubles(attentionOperands(v, headDim));
                double[] expectedOut = ReferenceTrainingOps.attention(qd, kd, vd, n, heads, kvHeads, headDim, window);
                double[] expectedLse = ReferenceTrainingOps.attentionLse(qd, kd, n, heads, kvHeads, headDim, window);
                // A score's error is at most (headDim+2)·u·Σ|q·k|·scale, here below 4·headDim·u·sqrt(headDim).
                double scoreError = (headDim + 2) * elementwiseRoundoff() * 4 * Math.sqrt(headDim);
                // Probabilities rounded to r before they weight v: out is off by at most r·Σ p·|v| <= r·max|v|.
                double rounding = attentionIntermediateRoundoff(headDim) * maxAbs(v);
                assertClose(what + " out", backend.toFloats(out), expectedOut, (4 * scoreError + (n + 8) * elementwiseRoundoff()) * 1.1 + rounding, 0);
                assertClose(what + " lse", backend.toFloats(lse), expectedLse, scoreError + 16 * elementwiseRoundoff(), 4 * elementwiseRoundoff());
            }
        }
    }

    @Test
    void attentionForwardAgreesWithTheInferenceAttentionOverTheWholeSequence() {
        RandomTensors random = new RandomTensors(112);
        int n = 19, heads = 6, kvHeads = 2, headDim = 32, window = 7;
        float[] q = random.uniform(n * heads * headDim, -1, 1), k = random.uniform(n * kvHeads * headDim, -1, 1);
        float[] v = random.uniform(n * kvHeads * headDim, -1, 1);
        try (Tensor qt = backend.fromFloats(q, DType.F32, n, heads * headDim); Tensor kt = backend.fromFloats(k, DType.F32, n, kvHeads * headDim);
             Tensor vt = backend.fromFloats(v, DType.F32, n, kvHeads * headDim);
             Tensor training = backend.allocate(DType.F32, n, heads * headDim); Tensor inference = backend.allocate(DType.F32, n, heads * headDim);
             Tensor lse = backend.allocate(DType.F32, n, heads)) {
            backend.attentionForward(qt, kt, vt, heads, kvHeads, headDim, window, training, lse);
            backend.attention(qt, kt, vt, 0, heads, kvHeads, headDim, window, inference);
            assertClose("attentionForward vs attention", backend.toFloats(training), toDoubles(backend.toFloats(inference)), 2e-6, 0);
        }
    }

    @Test
    void attentionBackwardMatchesTheAnalyticGradientsWithGroupedHeadsAndWindows() {
        RandomTensors random = new RandomTensors(113);
        int[][] cases = { // n, heads, kvHeads, headDim, window
                {1, 1, 1, 4, 0}, {7, 4, 2, 5, 0}, {17, 4, 1, 16, 5}, {33, 6, 3, 24, 0}, {40, 8, 2, 64, 13},
                {12, 2, 2, 128, 1}, {25, 3, 1, 7, 30}, {64, 4, 4, 32, 16}};
        for (int[] c : cases) checkAttentionBackward(random, c[0], c[1], c[2], c[3], c[4]);
        for (int c = 0; c < 10; c++) {
            int kvHeads = random.pickInt(1, 2), group = random.pickInt(1, 2, 3);
            checkAttentionBackward(random, random.between(1, 30), kvHeads * group, kvHeads, random.pickInt(3, 8, 17, 40),
                    random.pickInt(0, 1, 2, 9));
        }
    }

    @Test
    void attentionBackwardRejectsMismatchedShapes() {
        try (Tensor q = backend.allocate(DType.F32, 4, 16); Tensor kv = backend.allocate(DType.F32, 4, 8);
             Tensor shortKv = backend.allocate(DType.F32, 3, 8); Tensor lse = backend.allocate(DType.F32, 4, 2);
             Tensor dq = backend.allocate(DType.F32, 4, 16)) {
            assertThatThrownBy(() -> backend.attentionBackward(q, kv, kv, q, lse, q, 2, 1, 8, 0, dq, shortKv, kv))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("attentionBackward").hasMessageContaining("dk");
            assertThatThrownBy(() -> backend.attentionForward(q, shortKv, shortKv, 2, 1, 8, 0, dq, lse))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("attentionForward");
        }
    }

    private void checkAttentionBackward(RandomTensors random, int n, int heads, int kvHeads, int headDim, int window) {
        float[] q = random.uniform(n * heads * headDim, -1.5, 1.5), k = random.uniform(n * kvHeads * headDim, -1.5, 1.5);
        float[] v = random.uniform(n * kvHeads * headDim, -1, 1), dOut = random.uniform(n * heads * headDim, -1, 1);
        String what = "attentionBackward n=" + n + " heads=" + heads + "/" + kvHeads + " headDim=" + headDim + " window=" + window;
        long qw = (long) heads * headDim, kw = (long) kvHeads * headDim;
        try (Tensor qt = backend.fromFloats(q, DType.F32, n, qw); Tensor kt = backend.fromFloats(k, DType.F32, n, kw);
             Tensor vt = backend.fromFloats(v, DType.F32, n, kw); Tensor dot = backend.fromFloats(dOut, DType.F32, n, qw);
             Tensor out = backend.allocate(DType.F32, n, qw); Tensor lse = backend.allocate(DType.F32, n, heads);
             Tensor dq = backend.allocate(DType.F32, n, qw); Tensor dk = backend.allocate(DType.F32, n, kw);
             Tensor dv = backend.allocate(DType.F32, n, kw)) {
            backend.attentionForward(qt, kt, vt, heads, kvHeads, headDim, window, out, lse);
            backend.attentionBackward(qt, kt, vt, out, lse, dot, heads, kvHeads, headDim, window, dq, dk, dv);
            ReferenceTrainingOps.Qkv expected = ReferenceTrainingOps.attentionBackward(
                    toDoubles(attentionOperands(q, headDim)), toDoubles(attentionOperands(k, headDim)),
                    toDoubles(attentionOperands(v, headDim)), toDoubles(attentionOperands(dOut, headDim)), n, heads,
                    kvHeads, headDim, window);
            // Relative to each element plus the largest element of all three gradients: where the exact gradient
            // cancels to zero (dq of a query that sees one key), FP32 leaves a residue of the size of the terms.
            // Probabilities and score gradients rounded to r between the products put each term of a gradient off by
            // r relatively (and dS by P times Dsum's error, which out's rounding of r brings): 2r of the largest.
            double tol = attentionTolerance() + 2 * attentionIntermediateRoundoff(headDim);
            double scale = Math.max(largest(expected.dq()), Math.max(largest(expected.dk()), largest(expected.dv())));
            assertClose(what + " dq", backend.toFloats(dq), expected.dq(), tol * scale, tol);
            assertClose(what + " dk", backend.toFloats(dk), expected.dk(), tol * scale, tol);
            assertClose(what + " dv", backend.toFloats(dv), expected.dv(), tol * scale, tol);
        }
    }

    private static double largest(double[] values) {
        double m = 0;
        for (double v : values) m = Math.max(m, Math.abs(v));
        return m;
    }

    // ---- rmsNorm, rope, swiglu, embedding -------------------------------------------------------------------

    @Test
    void rmsNormBackwardMatchesTheAnalyticGradients() {
        RandomTensors random = new RandomTensors(121);
        for (int c = 0; c < 20; c++) {
            int rows = random.pickInt(1, 2, 5, 33), d = random.pickInt(1, 5, 16, 17, 100, 257, 1100);
            DType weightType = random.pick(DType.F32, DType.BF16);
            boolean withWeightGradient = random.between(0, 3) > 0;
            checkRmsNormBackward(random, rows, d, weightType, withWeightGradient, random.pick(1e-5f, 1e-6f));
        }
    }

    @Test
    void rmsNormBackwardCanAddTheInputGradientToTheResidualsGradient() {
        RandomTensors random = new RandomTensors(123);
        for (int d : new int[] {1, 17, 256, 1100}) {
            int rows = 5;
            float[] x = random.uniform(rows * d, -3, 3), w = random.uniform(d, 0.5, 1.5), dy = random.uniform(rows * d, -1, 1);
            float[] old = random.uniform(rows * d, -2, 2);
            try (Tensor xt = backend.fromFloats(x, DType.F32, rows, d); Tensor wt = backend.fromFloats(w, DType.F32, d);
                 Tensor dyt = backend.fromFloats(dy, DType.F32, rows, d); Tensor alone = backend.allocate(DType.F32, rows, d);
                 Tensor added = backend.fromFloats(old, DType.F32, rows, d);
                 Tensor addedWithDw = backend.fromFloats(old, DType.F32, rows, d);
                 Tensor dwAlone = backend.fromFloats(new float[d], DType.F32, d);
                 Tensor dwAdded = backend.fromFloats(new float[d], DType.F32, d)) {
                backend.rmsNormBackward(xt, wt, 1e-5f, dyt, alone, dwAlone, false);
                backend.rmsNormBackward(xt, wt, 1e-5f, dyt, added, null, true);
                // Full fine-tuning's form: the weight's gradient too, the same as where dX is overwritten.
                backend.rmsNormBackward(xt, wt, 1e-5f, dyt, addedWithDw, dwAdded, true);
                float[] gradient = backend.toFloats(alone), sum = backend.toFloats(added);
                float[] expected = new float[sum.length];
                for (int i = 0; i < expected.length; i++) expected[i] = old[i] + gradient[i];
                assertThat(sum).as("dX += the gradient, d=" + d).containsExactly(expected);
                assertThat(backend.toFloats(addedWithDw)).as("dX += the gradient with dWeight, d=" + d)
                        .containsExactly(expected);
                assertThat(backend.toFloats(dwAdded)).as("dWeight beside dX +=, d=" + d)
                        .containsExactly(backend.toFloats(dwAlone));
            }
        }
    }

    private void checkRmsNormBackward(RandomTensors random, int rows, int d, DType weightType, boolean withWeightGradient, float eps) {
        float[] x = random.uniform(rows * d, -3, 3), w = random.uniform(d, 0.5, 1.5, weightType);
        float[] dy = random.uniform(rows * d, -1, 1), before = random.uniform(d, -1, 1);
        String what = "rmsNormBackward rows=" + rows + " d=" + d + " " + weightType;
        try (Tensor xt = backend.fromFloats(x, DType.F32, rows, d); Tensor wt = backend.fromFloats(w, weightType, d);
             Tensor dyt = backend.fromFloats(dy, DType.F32, rows, d); Tensor dx = backend.allocate(DType.F32, rows, d);
             Tensor dw = withWeightGradient ? backend.fromFloats(before, DType.F32, d) : null) {
            backend.rmsNormBackward(xt, wt, eps, dyt, dx, dw);
            ReferenceTrainingOps.Pair expected = ReferenceTrainingOps.rmsNormBackward(toDoubles(x), d, toDoubles(w), eps, toDoubles(dy));
            // dx = r·g - x·(r³/d)·Σ g·x: each term's magnitude bounds its error; the dot product adds d roundings.
            double u = elementwiseRoundoff();
            double[] dxBound = new double[x.length], dwBound = new double[d], dwExpected = expected.second().clone();
            for (int r = 0; r < rows; r++) {
                double ss = 0, dotAbs = 0;
                for (int j = 0; j < d; j++) ss += (double) x[r * d + j] * x[r * d + j];
                double inv = 1 / Math.sqrt(ss / d + eps);
                for (int j = 0; j < d; j++) dotAbs += Math.abs((double) w[j] * dy[r * d + j] * x[r * d + j]);
                for (int j = 0; j < d; j++) {
                    int i = r * d + j;
                    double magnitude = Math.abs(inv * w[j] * dy[i]) + Math.abs(x[i]) * inv * inv * inv * dotAbs / d;
                    dxBound[i] = (d + 16) * u * magnitude + 1e-30;
                    dwBound[j] += (rows + 8) * u * Math.abs(dy[i] * x[i] * inv);
                }
            }
            assertWithin(what + " dX", backend.toFloats(dx), expected.first(), dxBound);
            if (dw != null) {
                for (int j = 0; j < d; j++) {
                    dwExpected[j] += before[j];
                    dwBound[j] += 2 * u * Math.abs(before[j]) + 1e-30;
                }
                assertWithin(what + " dWeight (accumulated)", backend.toFloats(dw), dwExpected, dwBound);
            }
        }
    }

    @Test
    void ropeBackwardRotatesTheGradientBack() {
        RandomTensors random = new RandomTensors(131);
        for (int c = 0; c < 20; c++) {
            int headDim = random.pickInt(2, 8, 34, 64, 128), heads = random.between(1, 4), rows = random.between(1, 6);
            int width = heads * headDim;
            float[] dy = random.uniform(rows * width, -2, 2);
            int[] positions = random.ints(rows, 0, random.pickInt(8, 4096, 131072));
            float[] inv = ReferenceOps.ropeInverseFrequencies(headDim, random.pick(10000.0, 500000.0));
            try (Tensor t = backend.fromFloats(dy, DType.F32, rows, width); Tensor invt = backend.fromFloats(inv, DType.F32, headDim / 2)) {
                backend.ropeBackward(t, headDim, positions, invt);
                double[] expected = ReferenceTrainingOps.ropeBackward(toDoubles(dy), width, headDim, positions, inv);
                double[] bound = new double[dy.length];
                int half = headDim / 2;
                for (int i = 0; i < dy.length; i++) {
                    int j = i % headDim, partner = j < half ? i + half : i - half;
                    bound[i] = 6 * elementwiseRoundoff() * (Math.abs(dy[i]) + Math.abs(dy[partner])) + 1e-30;
                }
                assertWithin("ropeBackward headDim=" + headDim + " positions=" + Arrays.toString(positions), backend.toFloats(t), expected, bound);
            }
        }
    }

    @Test
    void ropeThenRopeBackwardGivesBackTheInput() {
        RandomTensors random = new RandomTensors(132);
        float[] x = random.uniform(3 * 256, -1, 1);
        float[] inv = ReferenceOps.ropeInverseFrequencies(64, 10000.0);
        try (Tensor t = backend.fromFloats(x, DType.F32, 3, 256); Tensor invt = backend.fromFloats(inv, DType.F32, 32)) {
            int[] positions = {0, 17, 9000};
            backend.rope(t, 64, positions, invt);
            backend.ropeBackward(t, 64, positions, invt);
            assertClose("rope then ropeBackward", backend.toFloats(t), toDoubles(x), 1e-6, 0);
        }
    }

    @Test
    void swigluBackwardMatchesTheAnalyticGradientsIncludingSaturatedGates() {
        RandomTensors random = new RandomTensors(141);
        for (int count : new int[] {1, 15, 16, 17, 1000, 70_001}) {
            float[] gate = random.uniform(count, -20, 20), up = random.uniform(count, -3, 3), dy = random.uniform(count, -1, 1);
            if (count > 4) {
                gate[0] = -100f; // e^100 overflows FP32: the gradients must still be finite
                gate[1] = 100f;
                gate[2] = 0f;
                gate[3] = -88.5f;
            }
            try (Tensor g = backend.fromFloats(gate, DType.F32, count); Tensor u = backend.fromFloats(up, DType.F32, count);
                 Tensor d = backend.fromFloats(dy, DType.F32, count); Tensor dg = backend.allocate(DType.F32, count);
                 Tensor du = backend.allocate(DType.F32, count)) {
                backend.swigluBackward(g, u, d, dg, du);
                ReferenceTrainingOps.Pair expected = ReferenceTrainingOps.swigluBackward(toDoubles(gate), toDoubles(up), toDoubles(dy));
                // dGate = dy·u·s·(1 + g(1-s)): the bracket cancels for negative g, where it is small against |g|·(1-s).
                double u32 = elementwiseRoundoff();
                double[] dgBound = new double[count], duBound = new double[count];
                for (int i = 0; i < count; i++) {
                    double s = 1 / (1 + Math.exp(-(double) gate[i]));
                    double bracket = 1 + Math.abs(gate[i]) * (1 - s);
                    dgBound[i] = 16 * u32 * Math.abs(dy[i] * up[i] * s) * bracket * (1 + Math.abs(gate[i]) * s) + 1e-37;
                    duBound[i] = 8 * u32 * Math.abs(expected.second()[i]) + 1e-37;
                }
                assertWithin("swigluBackward dGate count=" + count, backend.toFloats(dg), expected.first(), dgBound);
                assertWithin("swigluBackward dUp count=" + count, backend.toFloats(du), expected.second(), duBound);
            }
        }
    }

    @Test
    void swigluBackwardMayWriteItsGradientsOverGateAndUp() {
        RandomTensors random = new RandomTensors(143);
        for (int count : new int[] {1, 17, 1000, 70_001}) {
            float[] gate = random.uniform(count, -6, 6), up = random.uniform(count, -3, 3), dy = random.uniform(count, -1, 1);
            try (Tensor g = backend.fromFloats(gate, DType.F32, count); Tensor u = backend.fromFloats(up, DType.F32, count);
                 Tensor d = backend.fromFloats(dy, DType.F32, count); Tensor dg = backend.allocate(DType.F32, count);
                 Tensor du = backend.allocate(DType.F32, count)) {
                backend.swigluBackward(g, u, d, dg, du);
                backend.swigluBackward(g, u, d, g, u);
                assertThat(backend.toFloats(g)).as("dGate over gate, count=" + count).containsExactly(backend.toFloats(dg));
                assertThat(backend.toFloats(u)).as("dUp over up, count=" + count).containsExactly(backend.toFloats(du));
            }
        }
    }

    @Test
    void embeddingBackwardAddsEachRowsGradientToItsTokensRowRepeatsIncluded() {
        RandomTensors random = new RandomTensors(151);
        for (int d : new int[] {1, 7, 16, 300, 1100}) {
            int vocab = 40;
            int[] ids = {3, 39, 3, 0, 17, 3, 39};
            float[] dy = random.uniform(ids.length * d, -1, 1), before = random.uniform(vocab * d, -1, 1);
            try (Tensor dyt = backend.fromFloats(dy, DType.F32, ids.length, d); Tensor table = backend.fromFloats(before, DType.F32, vocab, d)) {
                backend.embeddingBackward(ids, dyt, table);
                double[] expected = ReferenceTrainingOps.embeddingBackward(ids, toDoubles(dy), vocab, d);
                double[] bound = new double[expected.length];
                for (int i = 0; i < expected.length; i++) {
                    bound[i] = 4 * elementwiseRoundoff() * (Math.abs(expected[i]) + 4 + Math.abs(before[i]));
                    expected[i] += before[i];
                }
                assertWithin("embeddingBackward d=" + d, backend.toFloats(table), expected, bound);
                assertThatThrownBy(() -> backend.embeddingBackward(new int[] {0, 40, 1, 2, 3, 4, 5}, dyt, table))
                        .hasMessageContaining("40").hasMessageContaining("vocabulary");
            }
        }
    }

    // ---- cross-entropy --------------------------------------------------------------------------------------

    @Test
    void crossEntropyGivesTheLossAndTheScaledGradientIgnoringNegativeTargets() {
        RandomTensors random = new RandomTensors(161);
        for (int vocab : new int[] {1, 2, 17, 1000, 5003}) {
            int n = 9;
            float[] logits = random.uniform(n * vocab, -8, 8);
            int[] targets = random.ints(n, 0, vocab - 1);
            targets[2] = -100;
            targets[5] = -1;
            checkCrossEntropy("vocab=" + vocab, logits, vocab, targets, 1f / 7);
        }
    }

    @Test
    void crossEntropyIsStableForLargeLogits() {
        RandomTensors random = new RandomTensors(162);
        int vocab = 300, n = 4;
        float[] logits = random.uniform(n * vocab, -30, 30);
        for (int j = 0; j < vocab; j++) logits[j] += 1e4f; // row 0: all large
        logits[vocab + 5] = 200f; // row 1: one dominant logit (e^200 overflows FP32)
        logits[2 * vocab + 7] = -1e4f; // row 2: a very unlikely target
        for (int j = 0; j < vocab; j++) logits[3 * vocab + j] = -90f; // row 3: all tiny, exp would underflow
        checkCrossEntropy("large logits", logits, vocab, new int[] {3, 5, 7, 0}, 0.25f);
    }

    @Test
    void crossEntropyRejectsATargetOutsideTheVocabulary() {
        try (Tensor logits = backend.allocate(DType.F32, 2, 10); Tensor losses = backend.allocate(DType.F32, 2)) {
            assertThatThrownBy(() -> backend.crossEntropy(logits, new int[] {1, 10}, 1f, losses))
                    .isInstanceOf(IndexOutOfBoundsException.class).hasMessageContaining("10").hasMessageContaining("row 1");
        }
    }

    private void checkCrossEntropy(String what, float[] logits, int vocab, int[] targets, float gradScale) {
        int n = targets.length;
        try (Tensor lt = backend.fromFloats(logits, DType.F32, n, vocab); Tensor losses = backend.fromFloats(new float[n], DType.F32, n)) {
            backend.crossEntropy(lt, targets, gradScale, losses);
            double[] ld = toDoubles(logits);
            double[] expectedLosses = ReferenceTrainingOps.crossEntropyLosses(ld, vocab, targets);
            double[] expectedGrad = ReferenceTrainingOps.crossEntropyGradient(ld, vocab, targets, gradScale);
            double u = elementwiseRoundoff();
            double[] lossBound = new double[n], gradBound = new double[logits.length];
            for (int i = 0; i < n; i++) {
                lossBound[i] = 128 * u * (1 + Math.abs(expectedLosses[i]));
                double max = Double.NEGATIVE_INFINITY;
                for (int j = 0; j < vocab; j++) max = Math.max(max, logits[i * vocab + j]);
                for (int j = 0; j < vocab; j++) {
                    // exp(x - max) carries the rounding of x - max, relative |x - max|·u; the rest is a few roundings.
                    int e = i * vocab + j;
                    double p = targets[i] < 0 ? 0 : Math.abs(expectedGrad[e]) + (j == targets[i] ? gradScale : 0);
                    gradBound[e] = (16 + Math.abs(logits[e] - max)) * u * p + 2 * u * gradScale + 1e-38;
                }
            }
            assertWithin(what + " losses", backend.toFloats(losses), expectedLosses, lossBound);
            float[] grad = backend.toFloats(lt);
            assertWithin(what + " gradient", grad, expectedGrad, gradBound);
            for (int i = 0; i < n; i++) {
                if (targets[i] < 0) {
                    assertThat(Arrays.copyOfRange(grad, i * vocab, (i + 1) * vocab)).as("%s row %d (ignored)", what, i).containsOnly(0f);
                }
            }
        }
    }

    // ---- optimizer, reductions, dropout ---------------------------------------------------------------------

    @Test
    void adamwFollowsTorchsUpdateOverSeveralStepsWithWeightDecay() {
        RandomTensors random = new RandomTensors(171);
        int count = 1037;
        float lr = 2e-3f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, wd = 0.1f;
        float[] initial = random.uniform(count, -1, 1);
        ReferenceTrainingOps.AdamW reference = new ReferenceTrainingOps.AdamW(initial);
        try (Tensor p = backend.fromFloats(initial, DType.F32, count); Tensor m = backend.allocate(DType.F32, count);
             Tensor v = backend.allocate(DType.F32, count)) {
            for (int step = 1; step <= 6; step++) {
                float[] grad = random.uniform(count, -0.1, 0.1);
                if (step == 3) grad[0] = 0f; // an exactly zero gradient still decays and moves by the momentum
                try (Tensor g = backend.fromFloats(grad, DType.F32, count)) {
                    backend.adamw(p, g, m, v, lr, beta1, beta2, eps, wd, step);
                }
                // torch's Python scalars are the floats passed here, widened.
                reference.step(grad, lr, beta1, beta2, eps, wd);
                double u = elementwiseRoundoff();
                double[] pBound = new double[count], mBound = new double[count], vBound = new double[count];
                for (int i = 0; i < count; i++) {
                    pBound[i] = 8 * step * u * (Math.abs(reference.param[i]) + lr);
                    mBound[i] = 4 * step * u * (Math.abs(reference.m[i]) + 0.1);
                    vBound[i] = 4 * step * u * (Math.abs(reference.v[i]) + 0.01);
                }
                assertWithin("adamw param after step " + step, backend.toFloats(p), reference.param, pBound);
                assertWithin("adamw m after step " + step, backend.toFloats(m), reference.m, mBound);
                assertWithin("adamw v after step " + step, backend.toFloats(v), reference.v, vBound);
            }
        }
    }

    @Test
    void adamwOnBf16ParametersIsTheFloatStepRoundedOnceIntoEachTensor() {
        // torch's fused AdamW on a bfloat16 parameter: the state is bfloat16 too, the arithmetic float. Every backend
        // widens, runs the F32 step's float operations, and rounds param, m and v to BF16 once: the same bits.
        RandomTensors random = new RandomTensors(172);
        int count = 1037;
        float lr = 2e-3f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, wd = 0.1f;
        for (DType gradType : new DType[] {DType.BF16, DType.F32}) {
            float[] param = random.uniform(count, -1, 1, DType.BF16), m = new float[count], v = new float[count];
            try (Tensor p = backend.fromFloats(param, DType.BF16, count); Tensor mt = backend.allocate(DType.BF16, count);
                 Tensor vt = backend.allocate(DType.BF16, count)) {
                for (int step = 1; step <= 4; step++) {
                    float[] grad = random.uniform(count, -0.1, 0.1, gradType);
                    grad[1] = 0x1p-100f; // a gradient whose square underflows float: v gets nothing from it
                    try (Tensor g = backend.fromFloats(grad, gradType, count)) {
                        backend.adamw(p, g, mt, vt, lr, beta1, beta2, eps, wd, step);
                    }
                    floatAdamwStepRoundedToBf16(param, grad, m, v, lr, beta1, beta2, eps, wd, step);
                    String what = "BF16 adamw, " + gradType + " gradient, step " + step;
                    assertSameFloats(what + ": param", backend.toFloats(p), param);
                    assertSameFloats(what + ": m", backend.toFloats(mt), m);
                    assertSameFloats(what + ": v", backend.toFloats(vt), v);
                }
            }
        }
    }

    @Test
    void adamwAllLeavesEachTensorAsItsOwnAdamwCallDoes() {
        // Every pair of dtypes, lengths on both sides of 16-byte groups and of 16384-element chunks, an empty tensor,
        // views at an odd offset (element by element) and each tensor's own weight decay: one adamwAll call must
        // give the bits of adamw on each tensor alone, step after step.
        RandomTensors random = new RandomTensors(181);
        DType[][] pairs = {{DType.F32, DType.F32}, {DType.BF16, DType.BF16}, {DType.BF16, DType.F32},
                {DType.F32, DType.BF16}};
        int[] lengths = {1, 7, 8, 1037, 0, 16384, 2 * 16384 + 5, 40_000, 9, 16385};
        int count = lengths.length;
        List<Tensor> owned = new ArrayList<>();
        try {
            List<AdamwTensors> together = new ArrayList<>();
            Tensor[][] alone = new Tensor[count][];
            Tensor[] grads = new Tensor[count];
            for (int i = 0; i < count; i++) {
                DType pt = pairs[i % pairs.length][0], gt = pairs[i % pairs.length][1];
                int n = lengths[i], skip = i % 3 == 2 ? 1 : 0; // every third a view one element in
                float[] param = random.uniform(n + skip, -1, 1, pt);
                Tensor[] mine = new Tensor[3], theirs = new Tensor[3];
                for (int k = 0; k < 3; k++) {
                    float[] init = k == 0 ? param : new float[n + skip];
                    Tensor a = backend.fromFloats(init, pt, n + skip), b = backend.fromFloats(init, pt, n + skip);
                    owned.add(a);
                    owned.add(b);
                    mine[k] = a.view(skip, n);
                    theirs[k] = b.view(skip, n);
                }
                Tensor g = backend.allocate(gt, n + skip);
                owned.add(g);
                grads[i] = g.view(skip, n);
                together.add(new AdamwTensors(mine[0], grads[i], mine[1], mine[2], (i % 3) * 0.05f));
                alone[i] = theirs;
            }
            for (int step = 1; step <= 3; step++) {
                for (int i = 0; i < count; i++) {
                    float[] grad = random.uniform(lengths[i], -0.1, 0.1, grads[i].dtype());
                    try (Tensor fresh = backend.fromFloats(grad, grads[i].dtype(), lengths[i])) {
                        backend.copy(fresh, grads[i]);
                    }
                }
                backend.adamwAll(together, 3e-3f, 0.9f, 0.95f, 1e-8f, step);
                for (int i = 0; i < count; i++) {
                    backend.adamw(alone[i][0], grads[i], alone[i][1], alone[i][2], 3e-3f, 0.9f, 0.95f, 1e-8f,
                            together.get(i).weightDecay(), step);
                }
                for (int i = 0; i < count; i++) {
                    String what = "step " + step + ", tensor " + i + " (" + lengths[i] + " "
                            + together.get(i).param().dtype() + " with a " + grads[i].dtype() + " gradient)";
                    String[] names = {"param", "m", "v"};
                    Tensor[] mine = {together.get(i).param(), together.get(i).m(), together.get(i).v()};
                    for (int k = 0; k < 3; k++) {
                        assertSameFloats(what + ": " + names[k], backend.toFloats(mine[k]),
                                backend.toFloats(alone[i][k]));
                    }
                }
            }
        } finally {
            owned.forEach(Tensor::close);
        }
    }

    @Test
    void zeroAllZeroesEachTensorAndNothingBesideIt() {
        // F32 and BF16 tensors, empty ones, lengths past one 64 KiB fill chunk and around 16-byte stores, and views
        // one element into a larger tensor whose first and last elements must keep their values.
        RandomTensors random = new RandomTensors(182);
        int[] lengths = {1, 0, 7, 8, 16_384, 16_385, 40_001, 3, 100_000, 5};
        List<Tensor> owned = new ArrayList<>(), targets = new ArrayList<>();
        List<float[]> initial = new ArrayList<>();
        try {
            for (int i = 0; i < lengths.length; i++) {
                DType t = i % 2 == 0 ? DType.F32 : DType.BF16;
                float[] values = random.uniform(lengths[i] + 2, 1, 2, t);
                Tensor whole = backend.fromFloats(values, t, values.length);
                owned.add(whole);
                initial.add(values);
                targets.add(i % 3 == 1 ? whole.view(1, lengths[i]) : whole.view(0, lengths[i]));
            }
            backend.zeroAll(targets);
            for (int i = 0; i < lengths.length; i++) {
                float[] got = backend.toFloats(owned.get(i)), want = initial.get(i).clone();
                int from = i % 3 == 1 ? 1 : 0;
                Arrays.fill(want, from, from + lengths[i], 0f);
                assertThat(got).as("tensor %d (%d %s elements from %d)", i, lengths[i], owned.get(i).dtype(), from)
                        .containsExactly(want);
            }
        } finally {
            owned.forEach(Tensor::close);
        }
    }

    @Test
    void adamwAllRefusesMomentsOfAnotherDtypeThanTheirParameter() {
        try (Tensor p = backend.fromFloats(new float[] {1, 2}, DType.F32, 2);
             Tensor g = backend.fromFloats(new float[] {1, 1}, DType.F32, 2);
             Tensor m = backend.allocate(DType.F32, 2); Tensor v = backend.allocate(DType.F32, 2);
             Tensor bp = backend.allocate(DType.BF16, 3); Tensor bg = backend.allocate(DType.BF16, 3);
             Tensor bm = backend.allocate(DType.F32, 3); Tensor bv = backend.allocate(DType.BF16, 3)) {
            List<AdamwTensors> list = List.of(new AdamwTensors(p, g, m, v, 0f),
                    new AdamwTensors(bp, bg, bm, bv, 0f));
            assertThatThrownBy(() -> backend.adamwAll(list, 0.1f, 0.9f, 0.999f, 1e-8f, 1))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("m").hasMessageContaining("F32");
        }
    }

    /** The backends' AdamW step in float, as CpuTrainingOps forms its scalars, each result rounded to BF16. */
    private static void floatAdamwStepRoundedToBf16(float[] param, float[] grad, float[] m, float[] v, float lr,
                                                    float beta1, float beta2, float eps, float wd, long step) {
        double bc1 = 1 - Math.pow(beta1, step), bc2 = 1 - Math.pow(beta2, step);
        float decay = (float) (1 - (double) lr * wd);
        float oneMinusBeta1 = (float) (1 - (double) beta1), oneMinusBeta2 = (float) (1 - (double) beta2);
        float negStepSize = (float) -(lr / bc1), bc2Sqrt = (float) Math.sqrt(bc2);
        for (int i = 0; i < param.length; i++) {
            float g = grad[i];
            float p = param[i] * decay;
            float mi = Math.fma(oneMinusBeta1, g - m[i], m[i]);
            float vi = v[i] * beta2 + oneMinusBeta2 * g * g;
            float denom = (float) Math.sqrt(vi) / bc2Sqrt + eps;
            p = p + negStepSize * mi / denom;
            param[i] = bf16(p);
            m[i] = bf16(mi);
            v[i] = bf16(vi);
        }
    }

    private static float bf16(float x) {
        return representable(new float[] {x}, DType.BF16)[0];
    }

    @Test
    void adamwKeepsTheMomentsInTheParametersDtype() {
        try (Tensor p = backend.allocate(DType.BF16, 8); Tensor g = backend.allocate(DType.BF16, 8);
             Tensor m32 = backend.allocate(DType.F32, 8); Tensor v16 = backend.allocate(DType.BF16, 8)) {
            assertThatThrownBy(() -> backend.adamw(p, g, m32, v16, 1e-3f, 0.9f, 0.999f, 1e-8f, 0f, 1))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("adamw").hasMessageContaining("m")
                    .hasMessageContaining("F32");
        }
    }

    @Test
    void matmulBackwardWeightIntoBf16IsTheF32SumRoundedAndAddedToTheOldValue() {
        RandomTensors random = new RandomTensors(106);
        for (int c = 0; c < 16; c++) {
            int n = random.pickInt(1, 3, 17, 65, 300);
            int k = random.pickInt(1, 15, 16, 33, 257);
            int m = random.pickInt(1, 5, 32, 67);
            boolean accumulate = c % 2 == 1;
            float[] dy = random.uniform(n * m, -1, 1), x = random.uniform(n * k, -1, 1, DType.BF16);
            float[] before = random.uniform(m * k, -2, 2, DType.BF16);
            String what = "matmulBackwardWeight into BF16 n=" + n + " k=" + k + " m=" + m + (accumulate ? " accumulate" : "");
            try (Tensor dyt = backend.fromFloats(dy, DType.F32, n, m); Tensor xt = backend.fromFloats(x, DType.BF16, n, k);
                 Tensor dw = backend.fromFloats(before, DType.BF16, m, k)) {
                backend.matmulBackwardWeight(dyt, xt, dw, accumulate);
                double[] expected = ReferenceTrainingOps.matmulBackwardWeight(toDoubles(dy), toDoubles(x), n, k, m);
                double[] initial = accumulate ? toDoubles(before) : null;
                if (initial != null) for (int i = 0; i < expected.length; i++) expected[i] += initial[i];
                double[] magnitude = ReferenceTrainingOps.backwardMagnitudes(toDoubles(dy), toDoubles(x), n, k, m, true, initial);
                double[] bound = sumBound(magnitude, n);
                double[] sum = ReferenceTrainingOps.matmulBackwardWeight(toDoubles(dy), toDoubles(x), n, k, m);
                // A rounding to BF16 (8 significant bits): half a unit in the last place, at most 2^-8 of the value;
                // when accumulating, the sum may be rounded before the old value is added (torch's bfloat16 gradient
                // accumulation rounds so, and so do the GPU's BF16-output products).
                for (int i = 0; i < bound.length; i++) {
                    bound[i] += Math.abs(expected[i]) * 0x1p-8 + bound[i] * 0x1p-8 + (accumulate ? Math.abs(sum[i]) * 0x1p-8 : 0);
                }
                float[] got = backend.toFloats(dw);
                assertWithin(what, got, expected, bound);
                assertThat(got).as(what + ": BF16 values").isEqualTo(representable(got, DType.BF16));
            }
        }
    }

    @Test
    void sumOfSquaresAndScaleTakeBf16Gradients() {
        RandomTensors random = new RandomTensors(182);
        float[] x = random.uniform(70_001, -3, 3, DType.BF16);
        double expected = 0;
        for (float f : x) expected += (double) f * f;
        try (Tensor t = backend.fromFloats(x, DType.BF16, x.length)) {
            assertThat(backend.sumOfSquares(t)).as("sumOfSquares of BF16").isCloseTo(expected, Percentage.withPercentage(1e-10));
            backend.scale(t, 0.37f);
            float[] scaled = new float[x.length];
            for (int i = 0; i < x.length; i++) scaled[i] = bf16(x[i] * 0.37f);
            assertSameFloats("scale of BF16, rounded once", backend.toFloats(t), scaled);
        }
    }

    @Test
    void adamwFirstStepMovesEachParameterByAboutTheLearningRateAgainstItsGradient() {
        // With m = v = 0, the bias-corrected m/sqrt(v) of step 1 is g/|g|: p ← p·(1 - lr·wd) - lr·g/(|g| + eps).
        float[] p0 = {1f, -2f, 0.5f, 0f}, g = {0.3f, -0.001f, 4f, 1e-3f};
        try (Tensor p = backend.fromFloats(p0, DType.F32, 4); Tensor gt = backend.fromFloats(g, DType.F32, 4);
             Tensor m = backend.allocate(DType.F32, 4); Tensor v = backend.allocate(DType.F32, 4)) {
            backend.adamw(p, gt, m, v, 0.01f, 0.9f, 0.95f, 1e-8f, 0.5f, 1);
            double[] expected = new double[4];
            for (int i = 0; i < 4; i++) {
                expected[i] = p0[i] * (1 - 0.01 * 0.5) - 0.01 * g[i] / (Math.abs(g[i]) + 1e-8);
            }
            assertClose("adamw step 1", backend.toFloats(p), expected, 1e-7, 1e-6);
        }
    }

    @Test
    void sumOfSquaresIsAccurateToDoublePrecision() {
        RandomTensors random = new RandomTensors(181);
        for (int count : new int[] {1, 17, 100_003}) {
            float[] x = random.uniform(count, -3, 3);
            x[0] = 3e19f; // its square overflows FP32
            double expected = 0;
            for (float f : x) expected += (double) f * f;
            try (Tensor t = backend.fromFloats(x, DType.F32, count)) {
                assertThat(backend.sumOfSquares(t)).as("sumOfSquares count=" + count).isCloseTo(expected, Percentage.withPercentage(1e-10));
            }
        }
        float[] small = random.uniform(5000, -1, 1);
        double expected = 0;
        for (float f : small) expected += (double) f * f;
        try (Tensor t = backend.fromFloats(small, DType.F32, 50, 100)) {
            assertThat(Math.abs(backend.sumOfSquares(t) - expected)).as("sumOfSquares of 5000 values").isLessThan(1e-12 * expected);
        }
    }

    @Test
    void scaleMultipliesEveryElementAndZeroClearsAnyDtype() {
        RandomTensors random = new RandomTensors(191);
        for (int count : new int[] {1, 17, 70_001}) {
            float[] x = random.uniform(count, -5, 5);
            try (Tensor t = backend.fromFloats(x, DType.F32, count); Tensor h = backend.fromFloats(x, DType.BF16, count)) {
                backend.scale(t, 0.37f);
                float[] expected = new float[count];
                for (int i = 0; i < count; i++) expected[i] = x[i] * 0.37f;
                assertSameFloats("scale count=" + count, backend.toFloats(t), expected);
                backend.zero(t);
                backend.zero(h);
                assertThat(backend.toFloats(t)).containsOnly(0f);
                assertThat(backend.toFloats(h)).containsOnly(0f);
            }
        }
    }

    @Test
    void dropoutDropsAboutAFractionPAndScalesTheRestByOneOverOneMinusP() {
        RandomTensors random = new RandomTensors(201);
        int count = 200_003;
        float[] x = random.uniform(count, 0.5, 2);
        for (float p : new float[] {0.05f, 0.1f, 0.5f}) {
            try (Tensor xt = backend.fromFloats(x, DType.F32, count); Tensor out = backend.allocate(DType.F32, count)) {
                backend.dropout(xt, p, 1234, out);
                float[] got = backend.toFloats(out);
                int dropped = 0;
                float keep = (float) (1.0 / (1.0 - p));
                float[] expected = new float[count];
                for (int i = 0; i < count; i++) {
                    if (got[i] == 0f) dropped++;
                    expected[i] = DropoutHash.uniform(1234, i) < p ? 0f : x[i] * keep;
                }
                // Binomial(count, p): five standard deviations either way.
                double sd = Math.sqrt(count * p * (1 - p));
                assertThat((double) dropped).as("elements dropped at p=" + p).isBetween(count * p - 5 * sd, count * p + 5 * sd);
                assertSameFloats("dropout p=" + p, got, expected);
                assertClose("dropout p=" + p + " vs reference", got, ReferenceTrainingOps.dropout(x, p, 1234), 0, 2 * elementwiseRoundoff());
            }
        }
    }

    @Test
    void dropoutIsDeterministicPerSeedWorksInPlaceAndCopiesAtPZero() {
        RandomTensors random = new RandomTensors(202);
        int count = 50_001;
        float[] x = random.uniform(count, -1, 1);
        try (Tensor xt = backend.fromFloats(x, DType.F32, count); Tensor a = backend.allocate(DType.F32, count);
             Tensor b = backend.allocate(DType.F32, count); Tensor c = backend.allocate(DType.F32, count)) {
            backend.dropout(xt, 0.3f, 7, a);
            backend.dropout(xt, 0.3f, 7, b);
            backend.dropout(xt, 0.3f, 8, c);
            assertSameFloats("same seed twice", backend.toFloats(b), backend.toFloats(a));
            assertThat(Arrays.equals(backend.toFloats(a), backend.toFloats(c))).as("another seed, another mask").isFalse();
            backend.dropout(xt, 0.3f, 7, xt); // in place
            assertSameFloats("in place", backend.toFloats(xt), backend.toFloats(a));
        }
        try (Tensor xt = backend.fromFloats(x, DType.F32, count); Tensor out = backend.allocate(DType.F32, count)) {
            backend.dropout(xt, 0f, 7, out);
            assertSameFloats("p = 0 copies", backend.toFloats(out), x);
            backend.dropout(xt, 1f, 7, out);
            assertThat(backend.toFloats(out)).containsOnly(0f);
            assertThatThrownBy(() -> backend.dropout(xt, 1.5f, 7, out)).hasMessageContaining("dropout").hasMessageContaining("1.5");
        }
    }

    @Test
    void adamwAndSumOfSquaresCoverTensorsLargerThanOneWorkChunk() {
        // Element-wise ops split long tensors among threads; every element must be updated exactly once.
        int count = 300_001;
        float[] ones = new float[count];
        Arrays.fill(ones, 1f);
        try (Tensor p = backend.fromFloats(ones, DType.F32, count); Tensor g = backend.fromFloats(ones, DType.F32, count);
             Tensor m = backend.allocate(DType.F32, count); Tensor v = backend.allocate(DType.F32, count)) {
            backend.adamw(p, g, m, v, 0.5f, 0.9f, 0.999f, 0f, 0f, 1);
            float[] got = backend.toFloats(p);
            assertThat(got).containsOnly(got[0]);
            assertThat(got[0]).isCloseTo(0.5f, Offset.offset(1e-6f));
            assertThat(backend.sumOfSquares(p)).isCloseTo(count * 0.25, Offset.offset(1e-3));
            assertThat(backend.sumOfSquares(m)).isCloseTo(count * 0.01, Offset.offset(count * 1e-8));
            assertThat(maxAbs(backend.toFloats(v))).isCloseTo(1 - (double) 0.999f, Offset.offset(1e-10)); // (1 - beta2)·1²
        }
    }
}
