package dev.lora4j.backend.testing;

import org.junit.jupiter.api.Test;

import static dev.lora4j.backend.testing.GradientCheck.assertGradientsAgree;
import static dev.lora4j.backend.testing.GradientCheck.numericGradient;
import static dev.lora4j.backend.testing.GradientCheck.weightedSum;
import static dev.lora4j.backend.testing.ReferenceTrainingOps.toDoubles;
import static org.assertj.core.api.Assertions.assertThat;

/**
 * The analytic gradients of {@link ReferenceTrainingOps} agree with central differences of its forward functions,
 * on the scalar loss L = Σ forward(x)·R for a random R (whose gradient with respect to the output is R), in double
 * precision. The backends are then checked against these gradients.
 */
class ReferenceTrainingOpsTest {
    private static final double H = 1e-5;
    private static final double TOLERANCE = 1e-6;

    private final RandomTensors random = new RandomTensors(7);

    private double[] values(int count, double lo, double hi) {
        return toDoubles(random.uniform(count, lo, hi));
    }

    @Test
    void matmulBackwardFormsAreTheGradientsOfMatmul() {
        int n = 3, k = 5, m = 4;
        double[] x = values(n * k, -1, 1), w = values(m * k, -1, 1), r = values(n * m, -1, 1);
        assertGradientsAgree("dX", ReferenceTrainingOps.matmulBackwardInput(r, w, n, k, m),
                numericGradient(xp -> weightedSum(ReferenceTrainingOps.matmul(xp, w, n, k, m), r), x, H), TOLERANCE);
        assertGradientsAgree("dW", ReferenceTrainingOps.matmulBackwardWeight(r, x, n, k, m),
                numericGradient(wp -> weightedSum(ReferenceTrainingOps.matmul(x, wp, n, k, m), r), w, H), TOLERANCE);
    }

    @Test
    void sumRowsIsTheGradientOfAddingABias() {
        int rows = 4, d = 3;
        double[] x = values(rows * d, -1, 1), bias = values(d, -1, 1), r = values(rows * d, -1, 1);
        assertGradientsAgree("dBias", ReferenceTrainingOps.sumRows(r, rows, d), numericGradient(b -> {
            double[] y = x.clone();
            for (int i = 0; i < y.length; i++) y[i] += b[i % d];
            return weightedSum(y, r);
        }, bias, H), TOLERANCE);
    }

    @Test
    void rmsNormBackwardIsTheGradientOfRmsNorm() {
        int rows = 3, d = 7;
        double eps = 1e-5;
        double[] x = values(rows * d, -2, 2), w = values(d, 0.5, 1.5), r = values(rows * d, -1, 1);
        ReferenceTrainingOps.Pair grads = ReferenceTrainingOps.rmsNormBackward(x, d, w, eps, r);
        assertGradientsAgree("dX", grads.first(),
                numericGradient(xp -> weightedSum(ReferenceTrainingOps.rmsNorm(xp, d, w, eps), r), x, H), TOLERANCE);
        assertGradientsAgree("dWeight", grads.second(),
                numericGradient(wp -> weightedSum(ReferenceTrainingOps.rmsNorm(x, d, wp, eps), r), w, H), TOLERANCE);
    }

    @Test
    void ropeBackwardIsTheGradientOfRope() {
        int rows = 3, headDim = 6, width = 12;
        int[] positions = {0, 5, 1000};
        float[] inv = ReferenceOps.ropeInverseFrequencies(headDim, 10000.0);
        double[] x = values(rows * width, -1, 1), r = values(rows * width, -1, 1);
        assertGradientsAgree("dx", ReferenceTrainingOps.ropeBackward(r, width, headDim, positions, inv),
                numericGradient(xp -> weightedSum(ReferenceTrainingOps.rope(xp, width, headDim, positions, inv, false), r), x, H),
                TOLERANCE);
    }

    @Test
    void swigluBackwardIsTheGradientOfSwiglu() {
        double[] gate = values(20, -6, 6), up = values(20, -2, 2), r = values(20, -1, 1);
        ReferenceTrainingOps.Pair grads = ReferenceTrainingOps.swigluBackward(gate, up, r);
        assertGradientsAgree("dGate", grads.first(),
                numericGradient(g -> weightedSum(ReferenceTrainingOps.swiglu(g, up), r), gate, H), TOLERANCE);
        assertGradientsAgree("dUp", grads.second(),
                numericGradient(u -> weightedSum(ReferenceTrainingOps.swiglu(gate, u), r), up, H), TOLERANCE);
    }

    @Test
    void embeddingBackwardIsTheGradientOfTheLookup() {
        int vocab = 6, d = 3;
        int[] ids = {2, 5, 2, 0};
        double[] table = values(vocab * d, -1, 1), r = values(ids.length * d, -1, 1);
        assertGradientsAgree("dTable", ReferenceTrainingOps.embeddingBackward(ids, r, vocab, d), numericGradient(t -> {
            double[] out = new double[ids.length * d];
            for (int i = 0; i < ids.length; i++) System.arraycopy(t, ids[i] * d, out, i * d, d);
            return weightedSum(out, r);
        }, table, H), TOLERANCE);
    }

    @Test
    void attentionBackwardIsTheGradientOfCausalGroupedAttentionWithASlidingWindow() {
        for (int window : new int[] {0, 1, 3}) {
            int n = 6, heads = 4, kvHeads = 2, headDim = 3;
            double[] q = values(n * heads * headDim, -1.5, 1.5), k = values(n * kvHeads * headDim, -1.5, 1.5);
            double[] v = values(n * kvHeads * headDim, -1, 1), r = values(n * heads * headDim, -1, 1);
            ReferenceTrainingOps.Qkv grads = ReferenceTrainingOps.attentionBackward(q, k, v, r, n, heads, kvHeads, headDim, window);
            String what = "window " + window;
            assertGradientsAgree(what + " dq", grads.dq(), numericGradient(
                    qp -> weightedSum(ReferenceTrainingOps.attention(qp, k, v, n, heads, kvHeads, headDim, window), r), q, H), TOLERANCE);
            assertGradientsAgree(what + " dk", grads.dk(), numericGradient(
                    kp -> weightedSum(ReferenceTrainingOps.attention(q, kp, v, n, heads, kvHeads, headDim, window), r), k, H), TOLERANCE);
            assertGradientsAgree(what + " dv", grads.dv(), numericGradient(
                    vp -> weightedSum(ReferenceTrainingOps.attention(q, k, vp, n, heads, kvHeads, headDim, window), r), v, H), TOLERANCE);
        }
    }

    @Test
    void attentionLseIsTheLogOfTheSoftmaxDenominator() {
        int n = 5, heads = 2, kvHeads = 1, headDim = 4;
        double[] q = values(n * heads * headDim, -1, 1), k = values(n * kvHeads * headDim, -1, 1);
        double[] lse = ReferenceTrainingOps.attentionLse(q, k, n, heads, kvHeads, headDim, 0);
        // Row 0 sees only key 0: lse is its scaled score.
        double s00 = 0;
        for (int j = 0; j < headDim; j++) s00 += q[j] * k[j];
        assertThat(lse[0]).isCloseTo(s00 / 2, org.assertj.core.data.Offset.offset(1e-15));
        // exp(S - lse) are the probabilities.
        double[] p = ReferenceTrainingOps.attentionProbabilities(q, k, n, heads, kvHeads, headDim, 0);
        int i = 4, h = 1;
        double s = 0;
        for (int j = 0; j < headDim; j++) s += q[(i * heads + h) * headDim + j] * k[2 * headDim + j];
        assertThat(Math.exp(s / 2 - lse[i * heads + h])).isCloseTo(p[(i * heads + h) * n + 2], org.assertj.core.data.Offset.offset(1e-15));
    }

    @Test
    void crossEntropyGradientIsTheGradientOfTheScaledLossAndZeroForIgnoredRows() {
        int n = 4, vocab = 5;
        int[] targets = {1, -100, 4, 0};
        double gradScale = 0.3;
        double[] logits = values(n * vocab, -3, 3);
        assertGradientsAgree("dLogits", ReferenceTrainingOps.crossEntropyGradient(logits, vocab, targets, gradScale),
                numericGradient(l -> {
                    double sum = 0;
                    for (double loss : ReferenceTrainingOps.crossEntropyLosses(l, vocab, targets)) sum += loss;
                    return sum * gradScale;
                }, logits, H), TOLERANCE);
        double[] losses = ReferenceTrainingOps.crossEntropyLosses(logits, vocab, targets);
        assertThat(losses[1]).isZero();
        // Uniform logits: the loss is log(vocab).
        assertThat(ReferenceTrainingOps.crossEntropyLosses(new double[vocab], vocab, new int[] {2})[0])
                .isCloseTo(Math.log(vocab), org.assertj.core.data.Offset.offset(1e-15));
    }

    @Test
    void adamwReferenceFollowsTheHandComputedFirstTwoSteps() {
        // Step 1: m = 0.1·g, v = 0.001·g², bias-corrected to g and g²: p ← p(1 - lr·wd) - lr·g/(|g| + eps).
        ReferenceTrainingOps.AdamW adam = new ReferenceTrainingOps.AdamW(new float[] {1f});
        double lr = 0.1, wd = 0.01, eps = 1e-8;
        adam.step(new float[] {0.5f}, lr, 0.9, 0.999, eps, wd);
        double p1 = 1 * (1 - lr * wd) - lr * 0.5 / (0.5 + eps);
        assertThat(adam.param[0]).isCloseTo(p1, org.assertj.core.data.Offset.offset(1e-15));
        // Step 2 with g = -0.25: m = 0.9·0.05 + 0.1·(-0.25) = 0.02; v = 0.999·0.00025 + 0.001·0.0625.
        adam.step(new float[] {-0.25f}, lr, 0.9, 0.999, eps, wd);
        double m = 0.02, v = 0.999 * 0.00025 + 0.001 * 0.0625;
        double p2 = p1 * (1 - lr * wd) - lr / (1 - 0.81) * m / (Math.sqrt(v) / Math.sqrt(1 - 0.999 * 0.999) + eps);
        assertThat(adam.m[0]).isCloseTo(m, org.assertj.core.data.Offset.offset(1e-15));
        assertThat(adam.v[0]).isCloseTo(v, org.assertj.core.data.Offset.offset(1e-15));
        assertThat(adam.param[0]).isCloseTo(p2, org.assertj.core.data.Offset.offset(1e-14));
    }
}
