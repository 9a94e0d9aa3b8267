package dev.lora4j.backend.cpu;

import dev.lora4j.backend.Backend;
import dev.lora4j.backend.testing.RandomTensors;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import org.junit.jupiter.api.Test;

import java.util.function.Function;

import static dev.lora4j.backend.testing.TensorAssert.assertSameFloats;
import static org.assertj.core.api.Assertions.assertThat;

/**
 * What the CPU backend promises for the training ops beyond the contract: every result is the same bit for bit
 * whatever the number of threads, so that a training run is reproducible on any machine size.
 */
class CpuTrainingOpsTest {
    private final RandomTensors random = new RandomTensors(5);

    /**
     * Runs {@code op} on backends of 1, 3, 5 and 16 threads and checks that they all return the same floats. More
     * threads than this machine has cores still split the work as a machine with that many would.
     */
    private static void sameOnAnyNumberOfThreads(String what, Function<Backend, float[]> op) {
        float[] expected;
        try (CpuBackend one = new CpuBackend(1)) {
            expected = op.apply(one);
        }
        for (int threads : new int[] {3, 5, 16}) {
            try (CpuBackend many = new CpuBackend(threads)) {
                assertSameFloats(what + " on 1 vs " + threads + " threads", op.apply(many), expected);
            }
        }
    }

    @Test
    void matmulBackwardFormsDoNotDependOnTheNumberOfThreads() {
        for (int[] s : new int[][] {{300, 700, 50}, {17, 33, 600}, {1, 500, 3}, {129, 16, 1000}}) {
            int n = s[0], k = s[1], m = s[2];
            float[] dy = random.uniform(n * m, -1, 1), w = random.uniform(m * k, -1, 1), x = random.uniform(n * k, -1, 1);
            sameOnAnyNumberOfThreads("matmulBackwardInput " + n + "x" + k + "x" + m, b -> {
                try (Tensor dyt = b.fromFloats(dy, DType.F32, n, m); Tensor wt = b.fromFloats(w, DType.BF16, m, k);
                     Tensor dx = b.allocate(DType.F32, n, k)) {
                    b.matmulBackwardInput(dyt, wt, dx, false);
                    return b.toFloats(dx);
                }
            });
            sameOnAnyNumberOfThreads("matmulBackwardWeight " + n + "x" + k + "x" + m, b -> {
                try (Tensor dyt = b.fromFloats(dy, DType.F32, n, m); Tensor xt = b.fromFloats(x, DType.F32, n, k);
                     Tensor dw = b.allocate(DType.F32, m, k)) {
                    b.matmulBackwardWeight(dyt, xt, dw, false);
                    return b.toFloats(dw);
                }
            });
        }
    }

    @Test
    void attentionForwardAndBackwardDoNotDependOnTheNumberOfThreads() {
        int n = 70, heads = 4, kvHeads = 2, headDim = 64;
        float[] q = random.uniform(n * heads * headDim, -1, 1), k = random.uniform(n * kvHeads * headDim, -1, 1);
        float[] v = random.uniform(n * kvHeads * headDim, -1, 1), dOut = random.uniform(n * heads * headDim, -1, 1);
        for (int window : new int[] {0, 20}) {
            sameOnAnyNumberOfThreads("attention, window " + window, b -> {
                try (Tensor qt = b.fromFloats(q, DType.F32, n, heads * headDim); Tensor kt = b.fromFloats(k, DType.F32, n, kvHeads * headDim);
                     Tensor vt = b.fromFloats(v, DType.F32, n, kvHeads * headDim); Tensor dot = b.fromFloats(dOut, DType.F32, n, heads * headDim);
                     Tensor out = b.allocate(DType.F32, n, heads * headDim); Tensor lse = b.allocate(DType.F32, n, heads);
                     Tensor dq = b.allocate(DType.F32, n, heads * headDim); Tensor dk = b.allocate(DType.F32, n, kvHeads * headDim);
                     Tensor dv = b.allocate(DType.F32, n, kvHeads * headDim)) {
                    b.attentionForward(qt, kt, vt, heads, kvHeads, headDim, window, out, lse);
                    b.attentionBackward(qt, kt, vt, out, lse, dot, heads, kvHeads, headDim, window, dq, dk, dv);
                    return concat(b.toFloats(out), b.toFloats(lse), b.toFloats(dq), b.toFloats(dk), b.toFloats(dv));
                }
            });
        }
    }

    @Test
    void inferenceAttentionDoesNotDependOnTheNumberOfThreads() {
        int n = 37, past = 30, heads = 4, kvHeads = 2, headDim = 64;
        float[] q = random.uniform(n * heads * headDim, -1, 1);
        float[] k = random.uniform((past + n) * kvHeads * headDim, -1, 1), v = random.uniform((past + n) * kvHeads * headDim, -1, 1);
        for (int window : new int[] {0, 21}) {
            sameOnAnyNumberOfThreads("inference attention, window " + window, b -> {
                try (Tensor qt = b.fromFloats(q, DType.F32, n, heads * headDim);
                     Tensor kt = b.fromFloats(k, DType.F32, past + n, kvHeads * headDim);
                     Tensor vt = b.fromFloats(v, DType.F32, past + n, kvHeads * headDim);
                     Tensor out = b.allocate(DType.F32, n, heads * headDim)) {
                    b.attention(qt, kt, vt, past, heads, kvHeads, headDim, window, out);
                    return b.toFloats(out);
                }
            });
        }
    }

    @Test
    void swigluItsBackwardAndCrossEntropyDoNotDependOnTheNumberOfThreads() {
        int rows = 13, d = 1001, vocab = 997;
        float[] gate = random.uniform(rows * d, -12, 12), up = random.uniform(rows * d, -1, 1), dy = random.uniform(rows * d, -1, 1);
        float[] logits = random.uniform(rows * vocab, -20, 20);
        int[] targets = random.ints(rows, 0, vocab);
        targets[4] = -100;
        sameOnAnyNumberOfThreads("swiglu, swigluBackward, crossEntropy", b -> {
            try (Tensor g = b.fromFloats(gate, DType.F32, rows, d); Tensor u = b.fromFloats(up, DType.F32, rows, d);
                 Tensor dyt = b.fromFloats(dy, DType.F32, rows, d); Tensor out = b.allocate(DType.F32, rows, d);
                 Tensor dg = b.allocate(DType.F32, rows, d); Tensor du = b.allocate(DType.F32, rows, d);
                 Tensor lt = b.fromFloats(logits, DType.F32, rows, vocab); Tensor losses = b.allocate(DType.F32, rows)) {
                b.swiglu(g, u, out);
                b.swigluBackward(g, u, dyt, dg, du);
                b.crossEntropy(lt, targets, 1f / rows, losses);
                return concat(b.toFloats(out), b.toFloats(dg), b.toFloats(du), b.toFloats(lt), b.toFloats(losses));
            }
        });
    }

    @Test
    void reductionsOverRowsDoNotDependOnTheNumberOfThreads() {
        int rows = 200, d = 777;
        float[] x = random.uniform(rows * d, -2, 2), dy = random.uniform(rows * d, -1, 1), w = random.uniform(d, 0.5, 1.5);
        int[] ids = random.ints(rows, 0, 9);
        sameOnAnyNumberOfThreads("rmsNormBackward, sumRows, embeddingBackward, sumOfSquares", b -> {
            try (Tensor xt = b.fromFloats(x, DType.F32, rows, d); Tensor dyt = b.fromFloats(dy, DType.F32, rows, d);
                 Tensor wt = b.fromFloats(w, DType.F32, d); Tensor dx = b.allocate(DType.F32, rows, d);
                 Tensor dw = b.allocate(DType.F32, d); Tensor bias = b.allocate(DType.F32, d);
                 Tensor table = b.allocate(DType.F32, 10, d)) {
                b.rmsNormBackward(xt, wt, 1e-5f, dyt, dx, dw);
                b.sumRows(dyt, bias);
                b.embeddingBackward(ids, dyt, table);
                float sum = (float) b.sumOfSquares(xt);
                return concat(b.toFloats(dx), b.toFloats(dw), b.toFloats(bias), b.toFloats(table), new float[] {sum});
            }
        });
    }

    @Test
    void sumOfSquaresAddsItsPartialSumsInAFixedOrder() {
        float[] x = random.uniform(1_000_003, -1, 1);
        try (CpuBackend one = new CpuBackend(1); CpuBackend three = new CpuBackend(3);
             Tensor a = one.fromFloats(x, DType.F32, x.length); Tensor b = three.fromFloats(x, DType.F32, x.length)) {
            assertThat(three.sumOfSquares(b)).isEqualTo(one.sumOfSquares(a));
        }
    }

    @Test
    void rmsNormBackwardMayWriteDxOverDOutOrX() {
        int rows = 9, d = 300;
        float[] x = random.uniform(rows * d, -2, 2), dy = random.uniform(rows * d, -1, 1), w = random.uniform(d, 0.5, 1.5);
        try (CpuBackend b = new CpuBackend(2); Tensor xt = b.fromFloats(x, DType.F32, rows, d); Tensor dyt = b.fromFloats(dy, DType.F32, rows, d);
             Tensor wt = b.fromFloats(w, DType.F32, d); Tensor dx = b.allocate(DType.F32, rows, d); Tensor dw = b.allocate(DType.F32, d);
             Tensor dwOverDy = b.allocate(DType.F32, d); Tensor dwOverX = b.allocate(DType.F32, d)) {
            b.rmsNormBackward(xt, wt, 1e-5f, dyt, dx, dw);
            b.rmsNormBackward(xt, wt, 1e-5f, dyt, dyt, dwOverDy);
            assertSameFloats("dX written over dOut", b.toFloats(dyt), b.toFloats(dx));
            assertSameFloats("dWeight with dX written over dOut", b.toFloats(dwOverDy), b.toFloats(dw));
            try (Tensor dy2 = b.fromFloats(dy, DType.F32, rows, d)) {
                b.rmsNormBackward(xt, wt, 1e-5f, dy2, xt, dwOverX);
                assertSameFloats("dX written over x", b.toFloats(xt), b.toFloats(dx));
                assertSameFloats("dWeight with dX written over x", b.toFloats(dwOverX), b.toFloats(dw));
            }
        }
    }

    private static float[] concat(float[]... parts) {
        int length = 0;
        for (float[] p : parts) length += p.length;
        float[] all = new float[length];
        int at = 0;
        for (float[] p : parts) {
            System.arraycopy(p, 0, all, at, p.length);
            at += p.length;
        }
        return all;
    }
}
