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
}
