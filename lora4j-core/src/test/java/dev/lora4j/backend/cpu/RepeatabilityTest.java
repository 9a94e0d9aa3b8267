package dev.lora4j.backend.cpu;

import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import jdk.incubator.vector.FloatVector;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;

import java.util.Arrays;
import java.util.SplittableRandom;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The CPU backend gives the same bits every time it is asked the same thing, also while the JIT moves a kernel
 * from the interpreter to C1 and C2: resumed training runs rely on it.
 */
class RepeatabilityTest {
    private static final CpuBackend cpu = new CpuBackend(2);

    @AfterAll
    static void close() { cpu.close(); }

    @Test
    void laneSumsAddInOneFixedTree() {
        var species = FloatVector.SPECIES_PREFERRED;
        SplittableRandom random = new SplittableRandom(3);
        for (int trial = 0; trial < 20_000; trial++) {
            float[] lanes = new float[species.length()];
            for (int i = 0; i < lanes.length; i++) lanes[i] = (float) (random.nextGaussian() * Math.pow(10, random.nextInt(-3, 4)));
            float[] tree = lanes.clone();
            for (int step = tree.length / 2; step >= 1; step /= 2) {
                float[] next = new float[tree.length];
                for (int j = 0; j < tree.length; j++) next[j] = tree[j] + tree[(j + step) % tree.length];
                tree = next;
            }
            assertThat(Lanes.sum(FloatVector.fromArray(species, lanes, 0))).isEqualTo(tree[0]);
        }
    }

    @org.junit.jupiter.params.ParameterizedTest
    @org.junit.jupiter.params.provider.CsvSource({"13, BF16", "13, F32", "1, F32", "1, BF16", "200, F32"})
    void matmulAndItsBackwardFormsRepeatBitForBitWhileTheJitCompilesThem(int n, DType weights) {
        SplittableRandom random = new SplittableRandom(5);
        float[] xs = new float[n * 32], ws = new float[40 * 32], dys = new float[n * 40];
        for (float[] a : new float[][] {xs, ws, dys}) for (int i = 0; i < a.length; i++) a[i] = (float) random.nextGaussian();
        try (Tensor x = cpu.fromFloats(xs, DType.F32, n, 32); Tensor w = cpu.fromFloats(ws, weights, 40, 32);
             Tensor dy = cpu.fromFloats(dys, DType.F32, n, 40); Tensor out = cpu.allocate(DType.F32, n, 40);
             Tensor dx = cpu.allocate(DType.F32, n, 32); Tensor dw = cpu.allocate(DType.F32, 40, 32)) {
            float[][] first = null;
            for (int repeat = 0; repeat < 400; repeat++) {
                cpu.matmul(x, w, out);
                cpu.matmulBackwardInput(dy, w, dx, false);
                cpu.matmulBackwardWeight(dy, x, dw, false);
                float[][] now = {cpu.toFloats(out), cpu.toFloats(dx), cpu.toFloats(dw)};
                if (first == null) first = now;
                for (int i = 0; i < 3; i++) {
                    assertThat(Arrays.equals(now[i], first[i])).as("result %d of repeat %d equals the first", i, repeat).isTrue();
                }
            }
        }
    }

    /**
     * The exponentials (softmax in attention and cross-entropy, sigmoid in swiglu) are computed alike in vectors
     * and in scalar tails, before and after the JIT compiles them, so that neither the repeat nor the number of
     * threads (which moves elements between vectors and tails) changes a bit. Odd sizes leave tails everywhere.
     */
    @Test
    void exponentialOpsRepeatBitForBitOnAnyNumberOfThreadsWhileTheJitCompilesThem() {
        int n = 23, heads = 4, kvHeads = 2, headDim = 64, window = 9, rows = 3, d = 1001, vocab = 997;
        SplittableRandom random = new SplittableRandom(7);
        float[] q = gaussian(random, n * heads * headDim, 2), k = gaussian(random, n * kvHeads * headDim, 2);
        float[] v = gaussian(random, n * kvHeads * headDim, 1), dOut = gaussian(random, n * heads * headDim, 1);
        float[] gate = gaussian(random, rows * d, 4), up = gaussian(random, rows * d, 1), dy = gaussian(random, rows * d, 1);
        float[] logits = gaussian(random, rows * vocab, 6);
        int[] targets = {5, 996, 500};
        CpuBackend[] backends = {new CpuBackend(1), new CpuBackend(3), new CpuBackend(5)};
        try {
            float[] first = null;
            for (int repeat = 0; repeat < 320; repeat++) {
                for (CpuBackend b : backends) {
                    float[] now;
                    try (Tensor qt = b.fromFloats(q, DType.F32, n, heads * headDim); Tensor kt = b.fromFloats(k, DType.F32, n, kvHeads * headDim);
                         Tensor vt = b.fromFloats(v, DType.F32, n, kvHeads * headDim); Tensor dot = b.fromFloats(dOut, DType.F32, n, heads * headDim);
                         Tensor out = b.allocate(DType.F32, n, heads * headDim); Tensor lse = b.allocate(DType.F32, n, heads);
                         Tensor dq = b.allocate(DType.F32, n, heads * headDim); Tensor dk = b.allocate(DType.F32, n, kvHeads * headDim);
                         Tensor dv = b.allocate(DType.F32, n, kvHeads * headDim); Tensor inference = b.allocate(DType.F32, n, heads * headDim);
                         Tensor g = b.fromFloats(gate, DType.F32, rows, d); Tensor u = b.fromFloats(up, DType.F32, rows, d);
                         Tensor dyt = b.fromFloats(dy, DType.F32, rows, d); Tensor act = b.allocate(DType.F32, rows, d);
                         Tensor dg = b.allocate(DType.F32, rows, d); Tensor du = b.allocate(DType.F32, rows, d);
                         Tensor lt = b.fromFloats(logits, DType.F32, rows, vocab); Tensor losses = b.allocate(DType.F32, rows)) {
                        b.attentionForward(qt, kt, vt, heads, kvHeads, headDim, window, out, lse);
                        b.attentionBackward(qt, kt, vt, out, lse, dot, heads, kvHeads, headDim, window, dq, dk, dv);
                        b.attention(qt, kt, vt, 0, heads, kvHeads, headDim, window, inference);
                        b.swiglu(g, u, act);
                        b.swigluBackward(g, u, dyt, dg, du);
                        b.crossEntropy(lt, targets, 1f / rows, losses);
                        now = concat(b.toFloats(out), b.toFloats(lse), b.toFloats(dq), b.toFloats(dk), b.toFloats(dv),
                                b.toFloats(inference), b.toFloats(act), b.toFloats(dg), b.toFloats(du), b.toFloats(lt),
                                b.toFloats(losses));
                    }
                    if (first == null) first = now;
                    int differs = Arrays.mismatch(now, first);
                    assertThat(differs).as("repeat %d on %d threads: element %d is %s, the first run gave %s",
                            repeat, b.threads(), differs, differs < 0 ? 0 : now[differs], differs < 0 ? 0 : first[differs])
                            .isEqualTo(-1);
                }
            }
        } finally {
            for (CpuBackend b : backends) b.close();
        }
    }

    private static float[] gaussian(SplittableRandom random, int count, double sigma) {
        float[] a = new float[count];
        for (int i = 0; i < count; i++) a[i] = (float) (random.nextGaussian() * sigma);
        return a;
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
