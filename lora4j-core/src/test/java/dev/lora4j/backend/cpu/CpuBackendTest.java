package dev.lora4j.backend.cpu;

import dev.lora4j.backend.testing.RandomTensors;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import org.junit.jupiter.api.Test;

import java.util.Arrays;

import static dev.lora4j.backend.testing.TensorAssert.assertSameFloats;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** What the CPU backend promises beyond the Backend contract: determinism, its threads, its memory accounting. */
class CpuBackendTest {

    @Test
    void matmulResultsDoNotDependOnTheNumberOfThreads() {
        RandomTensors random = new RandomTensors(1);
        for (DType wt : new DType[] {DType.F32, DType.BF16, DType.F16}) {
            for (int n : new int[] {1, 3, 70}) {
                float[] x = random.uniform(n * 133, -1, 1), w = random.uniform(45 * 133, -1, 1);
                try (CpuBackend three = new CpuBackend(3); CpuBackend one = new CpuBackend(1)) {
                    assertSameFloats("matmul " + wt + " n=" + n + " on 1 vs 3 threads",
                            matmul(three, x, w, n, 133, 45, wt), matmul(one, x, w, n, 133, 45, wt));
                }
            }
        }
    }

    @Test
    void aRowsProductDoesNotDependOnHowManyRowsAreMultipliedWithIt() {
        // One token at a time (decode) and a whole prompt at once (prefill) take different kernels; the model
        // relies on them agreeing bit for bit, so that a cached decode reproduces the prefill exactly.
        RandomTensors random = new RandomTensors(2);
        int k = 1100, m = 21; // more than one slice of k, and a tail
        for (DType wt : new DType[] {DType.F32, DType.BF16, DType.F16}) {
            for (boolean accumulate : new boolean[] {false, true}) {
                float[] x = random.uniform(9 * k, -1, 1), w = random.uniform(m * k, -1, 1), before = random.uniform(9 * m, -1, 1);
                try (CpuBackend backend = new CpuBackend(2)) {
                    float[] all = matmul(backend, x, w, 9, k, m, wt, accumulate ? before : null);
                    for (int r = 0; r < 9; r++) {
                        float[] one = matmul(backend, Arrays.copyOfRange(x, r * k, (r + 1) * k), w, 1, k, m, wt,
                                accumulate ? Arrays.copyOfRange(before, r * m, (r + 1) * m) : null);
                        assertSameFloats("row " + r + " alone vs among 9, " + wt + (accumulate ? ", accumulating" : ""),
                                one, Arrays.copyOfRange(all, r * m, (r + 1) * m));
                    }
                }
            }
        }
    }

    @Test
    void attentionAcceptsAnF16Cache() {
        RandomTensors random = new RandomTensors(3);
        float[] q = random.uniform(2 * 64, -1, 1);
        float[] k = random.uniform(5 * 32, -1, 1, DType.F16), v = random.uniform(5 * 32, -1, 1, DType.F16);
        try (CpuBackend backend = new CpuBackend(2);
             Tensor qt = backend.fromFloats(q, DType.F32, 1, 64);
             Tensor k16 = backend.fromFloats(k, DType.F16, 5, 32); Tensor v16 = backend.fromFloats(v, DType.F16, 5, 32);
             Tensor k32 = backend.fromFloats(k, DType.F32, 5, 32); Tensor v32 = backend.fromFloats(v, DType.F32, 5, 32);
             Tensor fromF16 = backend.allocate(DType.F32, 1, 64); Tensor fromF32 = backend.allocate(DType.F32, 1, 64)) {
            backend.attention(qt, k16, v16, 4, 2, 1, 32, 0, fromF16);
            backend.attention(qt, k32, v32, 4, 2, 1, 32, 0, fromF32);
            assertSameFloats("attention over an F16 cache vs the same values in F32", backend.toFloats(fromF16), backend.toFloats(fromF32));
        }
    }

    @Test
    void threadsDefaultToTheAvailableProcessorsAndMustBePositive() {
        try (CpuBackend backend = new CpuBackend()) {
            assertThat(backend.threads()).isEqualTo(Runtime.getRuntime().availableProcessors());
            assertThat(backend.name()).isEqualTo("cpu");
            assertThat(backend.description()).contains(backend.threads() + " threads").contains("Vector API");
        }
        assertThatThrownBy(() -> new CpuBackend(0)).isInstanceOf(IllegalArgumentException.class).hasMessageContaining("threads");
    }

    @Test
    void memoryInUseCountsLiveTensorsAndPeakRemembersTheMost() {
        try (CpuBackend backend = new CpuBackend(1)) {
            Tensor a = backend.allocate(DType.F32, 100);
            Tensor b = backend.allocate(DType.BF16, 10, 10);
            assertThat(backend.memoryInUse()).isEqualTo(600);
            a.close();
            b.rows(0, 1).close(); // a view owns nothing
            assertThat(backend.memoryInUse()).isEqualTo(200);
            assertThat(backend.peakMemoryInUse()).isEqualTo(600);
            b.close();
            assertThat(backend.memoryInUse()).isZero();
            assertThatThrownBy(() -> backend.toFloats(b)).isInstanceOf(IllegalStateException.class).hasMessageContaining("after close");
        }
    }

    @Test
    void opsRejectTensorsOfTheWrongDtypeNamingTheArgument() {
        try (CpuBackend backend = new CpuBackend(1);
             Tensor x = backend.allocate(DType.BF16, 2, 4); Tensor w = backend.allocate(DType.F32, 3, 4);
             Tensor out = backend.allocate(DType.F32, 2, 3); Tensor ids = backend.allocate(DType.I32, 3, 4)) {
            assertThatThrownBy(() -> backend.matmul(x, w, out)).hasMessageContaining("matmul x must be F32");
            try (Tensor x32 = backend.allocate(DType.F32, 2, 4)) {
                assertThatThrownBy(() -> backend.matmul(x32, ids, out)).hasMessageContaining("matmul weights must be F32, BF16 or F16");
            }
        }
    }

    private static float[] matmul(CpuBackend backend, float[] x, float[] w, int n, int k, int m, DType wt) {
        return matmul(backend, x, w, n, k, m, wt, null);
    }

    /** x·wᵀ, added to {@code before} when it is not null. */
    private static float[] matmul(CpuBackend backend, float[] x, float[] w, int n, int k, int m, DType wt, float[] before) {
        try (Tensor xt = backend.fromFloats(x, DType.F32, n, k); Tensor wt2 = backend.fromFloats(w, wt, m, k);
             Tensor out = before == null ? backend.allocate(DType.F32, n, m) : backend.fromFloats(before, DType.F32, n, m)) {
            backend.matmul(xt, wt2, out, before != null);
            return backend.toFloats(out);
        }
    }
}
