package dev.lora4j.cuda;

import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.util.SplittableRandom;
import java.util.function.BiConsumer;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * The timed algorithm choice ({@link GemmAlgorithmChoice#TIMED}) runs its trials into the product's own output or,
 * for products that add to theirs, into a scratch block: whichever it picks, every product leaves what the heuristic's
 * choice leaves, accumulated outputs included (on the device emulator the candidates are one algorithm, so the
 * results are equal bit for bit; on a GPU the picked algorithm may sum in another order).
 */
class CudaTimedGemmChoiceTest {
    private static CudaBackend heuristic;
    private static CudaBackend timed;

    @RegisterExtension
    static final GpuAndCpu backends = GpuAndCpu.assigning((g, c) -> heuristic = g);

    @BeforeAll
    static void openTimed() {
        if (CudaProbe.probe(CudaPlatform.shared(), CudaProbe.deviceOrdinal()).available()) {
            timed = CudaBackend.open(CudaProbe.deviceOrdinal(), DType.F32, GemmAlgorithmChoice.TIMED);
        }
    }

    @AfterAll
    static void closeTimed() {
        if (timed != null) timed.close();
    }

    @Test
    void everyProductFormLeavesWhatTheHeuristicsChoiceLeaves() {
        boolean exact = System.getProperty("lora4j.cuda.libcublaslt", "").contains("emulator");
        long held = timed.memoryInUse();
        int n = 33, k = 80, m = 48;
        float[] x = random(n * k, 1), w = random(m * k, 2), before = random(n * m, 3), dy = random(n * m, 4);
        float[] dwBefore = random(m * k, 5), dxBefore = random(n * k, 6);
        BiConsumer<String, float[][]> same = (what, pair) -> {
            if (exact) {
                assertThat(pair[0]).as(what).containsExactly(pair[1]);
            } else {
                for (int i = 0; i < pair[0].length; i++) {
                    assertThat((double) Math.abs(pair[0][i] - pair[1][i])).as(what + " element " + i)
                            .isLessThan(1e-2 * (1 + Math.abs(pair[1][i])));
                }
            }
        };
        // Twice: the first calls time the candidates, the second run the algorithm kept.
        for (int round = 0; round < 2; round++) {
            same.accept("matmul, round " + round, new float[][] {
                    product(timed, x, w, null, n, k, m), product(heuristic, x, w, null, n, k, m)});
            same.accept("matmul adding to out, round " + round, new float[][] {
                    product(timed, x, w, before, n, k, m), product(heuristic, x, w, before, n, k, m)});
            same.accept("matmulBackwardWeight adding to dW, round " + round, new float[][] {
                    weightGradient(timed, dy, x, dwBefore, n, m, k), weightGradient(heuristic, dy, x, dwBefore, n, m, k)});
            same.accept("matmulBackwardInput adding to dX, round " + round, new float[][] {
                    inputGradient(timed, dy, w, dxBefore, n, m, k), inputGradient(heuristic, dy, w, dxBefore, n, m, k)});
        }
        assertThat(timed.memoryInUse()).as("no scratch block is left behind").isEqualTo(held);
    }

    @Test
    void thePropertyNamesHeuristicOrTimed() {
        String old = System.getProperty(GemmAlgorithmChoice.PROPERTY);
        try {
            System.clearProperty(GemmAlgorithmChoice.PROPERTY);
            assertThat(GemmAlgorithmChoice.fromProperty(GemmAlgorithmChoice.HEURISTIC)).isEqualTo(GemmAlgorithmChoice.HEURISTIC);
            System.setProperty(GemmAlgorithmChoice.PROPERTY, " Timed ");
            assertThat(GemmAlgorithmChoice.fromProperty(GemmAlgorithmChoice.HEURISTIC)).isEqualTo(GemmAlgorithmChoice.TIMED);
            System.setProperty(GemmAlgorithmChoice.PROPERTY, "fastest");
            assertThatThrownBy(() -> GemmAlgorithmChoice.fromProperty(GemmAlgorithmChoice.HEURISTIC))
                    .hasMessageContaining("-D" + GemmAlgorithmChoice.PROPERTY + "=fastest")
                    .hasMessageContaining("heuristic or timed");
        } finally {
            if (old == null) System.clearProperty(GemmAlgorithmChoice.PROPERTY);
            else System.setProperty(GemmAlgorithmChoice.PROPERTY, old);
        }
    }

    private static float[] product(CudaBackend b, float[] x, float[] w, float[] before, int n, int k, int m) {
        try (Tensor xt = b.fromFloats(x, DType.F32, n, k); Tensor wt = b.fromFloats(w, DType.BF16, m, k);
             Tensor out = before == null ? b.allocate(DType.F32, n, m) : b.fromFloats(before, DType.F32, n, m)) {
            b.matmul(xt, wt, out, before != null);
            return b.toFloats(out);
        }
    }

    private static float[] weightGradient(CudaBackend b, float[] dy, float[] x, float[] before, int n, int m, int k) {
        try (Tensor dyt = b.fromFloats(dy, DType.BF16, n, m); Tensor xt = b.fromFloats(x, DType.BF16, n, k);
             Tensor dw = b.fromFloats(before, DType.F32, m, k)) {
            b.matmulBackwardWeight(dyt, xt, dw, true);
            return b.toFloats(dw);
        }
    }

    private static float[] inputGradient(CudaBackend b, float[] dy, float[] w, float[] before, int n, int m, int k) {
        try (Tensor dyt = b.fromFloats(dy, DType.F32, n, m); Tensor wt = b.fromFloats(w, DType.BF16, m, k);
             Tensor dx = b.fromFloats(before, DType.F32, n, k)) {
            b.matmulBackwardInput(dyt, wt, dx, true);
            return b.toFloats(dx);
        }
    }

    private static float[] random(int count, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        float[] v = new float[count];
        for (int i = 0; i < v.length; i++) v[i] = (float) r.nextDouble(-1, 1);
        return v;
    }
}
