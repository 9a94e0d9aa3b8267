package dev.lora4j.backend.cpu;

import dev.lora4j.backend.Backend;
import dev.lora4j.backend.BitsandbytesAdam;
import dev.lora4j.backend.testing.BitsandbytesAdamReference;
import dev.lora4j.backend.testing.RandomTensors;
import dev.lora4j.quant.DynamicMap;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;

import static dev.lora4j.backend.testing.TensorAssert.assertSameFloats;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.offset;

/**
 * Backend.adamw8bit and adamw32bit on the CPU: byte for byte against {@link BitsandbytesAdamReference} (bitsandbytes'
 * kernels restated lane by lane), the 8-bit step checked once more in double precision (exact moments, nearest
 * codes, the AdamW update), crafted cases for each of bitsandbytes' rules, and the same bytes on any number of
 * threads.
 */
class BitsandbytesAdamTest {
    private static final float[] SIGNED = DynamicMap.signed(), UNSIGNED = DynamicMap.unsigned();
    private final CpuBackend backend = new CpuBackend(3);
    private final RandomTensors random = new RandomTensors(11);

    @AfterEach
    void close() {
        backend.close();
    }

    /** An 8-bit optimizer state of one parameter on a backend, and its host copy for the reference. */
    private static final class State8 implements AutoCloseable {
        final Backend b;
        final Tensor p, m8, v8, am, av, qs, qu;
        final float[] hp, hAm, hAv;
        final byte[] hM, hV;

        State8(Backend b, float[] param) {
            this.b = b;
            int n = param.length, blocks = (int) BitsandbytesAdam.blocks(n);
            p = b.fromFloats(param, DType.F32, n);
            m8 = b.allocate(DType.U8, n);
            v8 = b.allocate(DType.U8, n);
            am = b.allocate(DType.F32, blocks);
            av = b.allocate(DType.F32, blocks);
            qs = b.fromFloats(SIGNED, DType.F32, 256);
            qu = b.fromFloats(UNSIGNED, DType.F32, 256);
            hp = param.clone();
            hM = new byte[n];
            hV = new byte[n];
            hAm = new float[blocks];
            hAv = new float[blocks];
        }

        /** The same step on the backend and on the reference. */
        void step(float[] grad, float lr, float wd, long step) {
            try (Tensor g = b.fromFloats(grad, DType.F32, grad.length)) {
                b.adamw8bit(p, g, m8, v8, am, av, qs, qu, lr, 0.9f, 0.999f, 1e-8f, wd, step);
            }
            BitsandbytesAdamReference.step8bit(hp, grad, hM, hV, hAm, hAv, SIGNED, UNSIGNED, lr, 0.9f, 0.999f, 1e-8f, wd, step);
        }

        void assertMatchesReference(String what) {
            assertSameFloats(what + ": parameters", b.toFloats(p), hp);
            assertThat(bytes(b, m8)).as(what + ": first-moment codes").containsExactly(hM);
            assertThat(bytes(b, v8)).as(what + ": second-moment codes").containsExactly(hV);
            assertSameFloats(what + ": absmax of m", b.toFloats(am), hAm);
            assertSameFloats(what + ": absmax of v", b.toFloats(av), hAv);
        }

        @Override
        public void close() {
            for (Tensor t : new Tensor[] {p, m8, v8, am, av, qs, qu}) t.close();
        }
    }

    static byte[] bytes(Backend b, Tensor t) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment s = arena.allocate(Math.max(1, t.byteSize()));
            b.copyToHost(t, s);
            return s.asSlice(0, t.byteSize()).toArray(ValueLayout.JAVA_BYTE);
        }
    }

    private float[] gradient(int n, float scale) {
        float[] g = random.gaussian(n, scale);
        for (int i = 0; i < n; i += 97) g[i] = 0f; // exact zeros, as frozen rows give
        return g;
    }

    // ---- against the reference ----------------------------------------------------------------------------

    @ParameterizedTest
    @ValueSource(ints = {1, 255, 256, 257, 1000, 4113, 70_001})
    void eightBitStepsMatchBitsandbytesKernelByteForByte(int n) {
        try (State8 s = new State8(backend, random.gaussian(n, 0.5))) {
            for (int step = 1; step <= 6; step++) {
                float scale = step == 4 ? 1e-6f : step == 5 ? 30f : 0.05f; // tiny and large gradients move absmax
                float[] g = gradient(n, scale);
                s.step(g, 1e-3f * step, step % 2 == 0 ? 0.01f : 0f, step);
                s.assertMatchesReference("n=" + n + " step " + step);
            }
        }
    }

    @Test
    void nonFiniteGradientsZeroTheirMomentsAndLeaveTheirParametersAsBitsandbytesDoes() {
        int n = 600;
        float[] param = random.gaussian(n, 1);
        try (State8 s = new State8(backend, param)) {
            s.step(gradient(n, 0.1f), 1e-2f, 0.1f, 1);
            float[] before = backend.toFloats(s.p);
            float[] g = gradient(n, 0.1f);
            g[3] = Float.NaN;
            g[300] = Float.POSITIVE_INFINITY;
            g[599] = Float.NEGATIVE_INFINITY;
            s.step(g, 1e-2f, 0.1f, 2);
            s.assertMatchesReference("non-finite gradients");
            float[] after = backend.toFloats(s.p);
            for (int i : new int[] {3, 300, 599}) {
                assertThat(after[i]).as("parameter %d with a non-finite gradient", i).isEqualTo(before[i]);
                assertThat(dequantize(SIGNED, bytes(backend, s.m8)[i], backend.toFloats(s.am)[i / 256])).isZero();
                assertThat(dequantize(UNSIGNED, bytes(backend, s.v8)[i], backend.toFloats(s.av)[i / 256])).isZero();
            }
            assertThat(after[4]).isNotEqualTo(before[4]);
        }
    }

    @Test
    void thirtyTwoBitStepsMatchBitsandbytesKernelByteForByte() {
        int n = 20_011;
        float[] p = random.gaussian(n, 0.5), m = new float[n], v = new float[n];
        try (Tensor tp = backend.fromFloats(p, DType.F32, n); Tensor tm = backend.allocate(DType.F32, n);
             Tensor tv = backend.allocate(DType.F32, n)) {
            for (int step = 1; step <= 5; step++) {
                float[] g = gradient(n, step == 3 ? 1e-7f : 0.05f);
                float wd = step % 2 == 0 ? 0.05f : 0f;
                try (Tensor tg = backend.fromFloats(g, DType.F32, n)) {
                    backend.adamw32bit(tp, tg, tm, tv, 2e-3f, 0.9f, 0.999f, 1e-8f, wd, step);
                }
                BitsandbytesAdamReference.step32bit(p, g, m, v, 2e-3f, 0.9f, 0.999f, 1e-8f, wd, step);
                assertSameFloats("32-bit parameters after step " + step, backend.toFloats(tp), p);
                assertSameFloats("32-bit m after step " + step, backend.toFloats(tm), m);
                assertSameFloats("32-bit v after step " + step, backend.toFloats(tv), v);
            }
        }
    }

    // ---- in double precision ------------------------------------------------------------------------------

    /**
     * From a given 8-bit state, one step computed in double: the moments from the dequantized state, their new absmax,
     * each element's code (the nearest code to moment / absmax, for m moved one code toward the moment's sign when the
     * nearest code has the other sign; either code of a tie within rounding), and the parameter
     * {@code (p - lr * c2 / c1 * m / (sqrt(v) + eps * c2)) * (1 - lr * wd)}.
     */
    @Test
    void eightBitStepIsAdamWOnTheDequantizedMomentsWithTheNearestCodes() {
        int n = 3000;
        float lr = 5e-3f, wd = 0.02f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
        try (State8 s = new State8(backend, random.gaussian(n, 1))) {
            for (int step = 1; step <= 3; step++) s.step(gradient(n, 0.2f), lr, wd, step);
            int step = 4;
            byte[] m0 = bytes(backend, s.m8), v0 = bytes(backend, s.v8);
            float[] am0 = backend.toFloats(s.am), av0 = backend.toFloats(s.av), p0 = backend.toFloats(s.p);
            float[] g = gradient(n, 0.2f);
            s.step(g, lr, wd, step);
            byte[] m1 = bytes(backend, s.m8), v1 = bytes(backend, s.v8);
            float[] am1 = backend.toFloats(s.am), av1 = backend.toFloats(s.av), p1 = backend.toFloats(s.p);
            double c1 = 1 - Math.pow(b1, step), c2 = Math.sqrt(1 - Math.pow(b2, step));
            double[] m = new double[n], v = new double[n], mTerms = new double[n];
            for (int i = 0; i < n; i++) {
                double decayed = b1 * dequantize(SIGNED, m0[i], am0[i / 256]), fresh = (1 - b1) * (double) g[i];
                m[i] = decayed + fresh;
                mTerms[i] = Math.abs(decayed) + Math.abs(fresh); // what float rounding of m is relative to
                v[i] = b2 * dequantize(UNSIGNED, v0[i], av0[i / 256]) + (1 - b2) * (double) g[i] * g[i];
                double denominator = Math.sqrt(v[i]) + eps * c2;
                double expected = (p0[i] - lr * c2 / c1 * m[i] / denominator) * (1 - (double) lr * wd);
                double bound = 1e-5 * Math.abs(expected - p0[i]) + 1e-6 * lr * c2 / c1 * mTerms[i] / denominator
                        + 2.4e-7 * Math.abs(expected);
                assertThat((double) p1[i]).as("parameter %d", i).isCloseTo(expected, offset(bound));
            }
            for (int b = 0; b * 256 < n; b++) {
                double maxM = 0, maxV = 0;
                for (int i = b * 256; i < Math.min(n, b * 256 + 256); i++) {
                    maxM = Math.max(maxM, Math.abs(m[i]));
                    maxV = Math.max(maxV, Math.abs(v[i]));
                }
                assertThat((double) am1[b]).as("absmax of m, block %d", b).isCloseTo(maxM, offset(1e-6 * maxM));
                assertThat((double) av1[b]).as("absmax of v, block %d", b).isCloseTo(maxV, offset(1e-6 * maxV));
            }
            int ties = 0;
            for (int i = 0; i < n; i++) {
                double am = am1[i / 256], av = av1[i / 256];
                ties += checkCode(UNSIGNED, v[i] / av, 4e-7 * v[i] / av, v1[i] & 0xff, false, 0, "v of element " + i);
                ties += checkCode(SIGNED, m[i] / am, 4e-7 * mTerms[i] / am, m1[i] & 0xff, true, m[i], "m of element " + i);
            }
            assertThat(ties).as("codes decided by a tie within rounding").isLessThan(n / 100);
        }
    }

    /**
     * Checks the code bitsandbytes' rules give x (within {@code error} of the exact value): the nearest code, or when
     * x is within rounding of the midpoint of two codes, either; for m then moved toward m's sign. 1 for a tie.
     */
    private static int checkCode(float[] map, double x, double error, int actual, boolean firstMoment, double m, String what) {
        int nearest = BitsandbytesAdamReference.nearestInDouble(map, x);
        if (signRule(map, nearest, firstMoment, m) == actual) return 0;
        for (int other : new int[] {nearest - 1, nearest + 1}) {
            if (other < 0 || other > 255) continue;
            double gap = Math.abs(Math.abs(map[other] - x) - Math.abs(map[nearest] - x));
            if (gap <= 2 * error + 1e-12 && signRule(map, other, firstMoment, m) == actual) return 1;
        }
        throw new AssertionError(what + ": code " + actual + " (" + map[actual] + ") for " + x + ", but the nearest is "
                + nearest + " (" + map[nearest] + ")");
    }

    private static int signRule(float[] map, int code, boolean firstMoment, double m) {
        if (!firstMoment) return code;
        boolean codeNegative = Float.floatToRawIntBits(map[code]) < 0;
        if (codeNegative == (m < 0)) return code;
        return (m > 0 ? code + 1 : code - 1) & 0xff;
    }

    static double dequantize(float[] map, byte code, float absmax) {
        return (double) map[code & 0xff] * absmax;
    }

    // ---- crafted cases ------------------------------------------------------------------------------------

    @Test
    void theFirstStepOfAZeroGradientLeavesZeroMomentsWithBitsandbytesCodes() {
        // absmax 0 makes every moment / absmax 0/0 = NaN: the search ends at code 0; m's sign rule moves +0 to 255.
        try (State8 s = new State8(backend, new float[] {1, -2, 3})) {
            s.step(new float[3], 1e-2f, 0f, 1);
            s.assertMatchesReference("zero gradient");
            assertThat(bytes(backend, s.m8)).containsExactly((byte) 255, (byte) 255, (byte) 255);
            assertThat(bytes(backend, s.v8)).containsExactly(0, 0, 0);
            assertThat(backend.toFloats(s.am)).containsExactly(0f);
            assertThat(backend.toFloats(s.p)).containsExactly(1, -2, 3);
            s.step(new float[] {0.5f, 0f, -0.5f}, 1e-2f, 0f, 2);
            s.assertMatchesReference("a gradient after a zero one");
        }
    }

    @Test
    void codesOfFirstMomentsKeepTheirSignWhileSecondMomentsRoundToTheNearestCode() {
        // One block: m = 1 (the absmax, code 255), tiny positive and negative moments, and one exactly on a code.
        assertThat(SIGNED[127]).isZero();
        float absmax = 1f;
        assertThat(BitsandbytesAdamKernels.codeOfM(SIGNED, 1e-9f, absmax)).as("tiny positive m").isEqualTo(127);
        assertThat(BitsandbytesAdamKernels.codeOfM(SIGNED, -1e-9f, absmax)).as("tiny negative m keeps its sign").isEqualTo(126);
        assertThat(BitsandbytesAdamKernels.codeOfM(SIGNED, 1f, absmax)).isEqualTo(255);
        assertThat(BitsandbytesAdamKernels.codeOfM(SIGNED, -1f, absmax)).as("below the lowest code").isZero();
        for (int c = 0; c < 256; c++) {
            if (SIGNED[c] != 0) assertThat(BitsandbytesAdamKernels.codeOfM(SIGNED, SIGNED[c], absmax)).as("m on code %d", c).isEqualTo(c);
            if (c > 0) assertThat(BitsandbytesAdamKernels.quantize(UNSIGNED, UNSIGNED[c], false)).as("v on code %d", c).isEqualTo(c);
        }
        // A tie between two codes goes to the search's last probe, whichever side that is on.
        for (int c = 1; c < 255; c++) {
            float mid = (SIGNED[c] + SIGNED[c + 1]) * 0.5f;
            int code = BitsandbytesAdamKernels.quantize(SIGNED, mid, true);
            assertThat(code).isIn(c, c + 1);
            assertThat(code).isEqualTo(BitsandbytesAdamReference.quantize2D(
                    new float[] {SIGNED[63], SIGNED[127], SIGNED[191]}, SIGNED, mid, true));
        }
        assertThat(BitsandbytesAdamKernels.quantize(SIGNED, Float.NaN, true)).as("NaN").isZero();
    }

    @Test
    void lanesPastTheEndOfAPartialLastBlockCountTowardItsAbsmaxAsInBitsandbytes() {
        // 257 elements: the second block has one element and 255 lanes past the end, which load m code 128 and
        // gradient 0, so that they hold qmap1[128] * absmax * beta1 and take part in the block's maximum.
        int n = 257;
        try (State8 s = new State8(backend, new float[n])) {
            float[] g = new float[n];
            Arrays.fill(g, 1f);
            s.step(g, 1e-3f, 0f, 1); // m = 0.1 everywhere: code 255 (1.0), absmax 0.1 in both blocks
            float absmax1 = backend.toFloats(s.am)[1];
            s.step(new float[n], 1e-3f, 0f, 2); // m decays to 0.9 * 0.1, which stays the absmax
            s.assertMatchesReference("partial last block");
            float absmax2 = backend.toFloats(s.am)[1];
            assertThat(absmax2).isEqualTo(absmax1 * 0.9f);
            // With the last element's moment at code 127 (0), only the lanes past the end leave anything to measure.
            CpuTrainingOps.seg(s.m8).set(ValueLayout.JAVA_BYTE, 256, (byte) 127);
            s.hM[256] = 127;
            s.step(new float[n], 1e-3f, 0f, 3);
            s.assertMatchesReference("partial last block whose element has a zero moment");
            assertThat(backend.toFloats(s.am)[1]).as("absmax of a block whose only element is 0")
                    .isEqualTo(SIGNED[128] * absmax2 * 0.9f).isPositive();
        }
    }

    @Test
    void weightDecayFollowsTheStepAndOnlyWhenPositive() {
        try (State8 s = new State8(backend, new float[] {2f, 2f})) {
            s.step(new float[] {1f, 1f}, 0.1f, 0.5f, 1);
            // Step 1: m = 0.1, v = 0.001, c1 = 0.1, c2 = sqrt(0.001): the update is -lr * m / (sqrt(v) + eps c2) * c2 / c1
            // = -0.1 (within eps), then decay (1 - 0.05).
            float[] p = backend.toFloats(s.p);
            assertThat((double) p[0]).as("bitsandbytes: (p - 0.1) * 0.95, not torch's p * 0.95 - 0.1")
                    .isCloseTo((2.0 - 0.1) * 0.95, offset(1e-5));
            s.assertMatchesReference("decay after the step");
        }
    }

    // ---- the backend's promises ---------------------------------------------------------------------------

    @Test
    void resultsDoNotDependOnTheNumberOfThreads() {
        int n = 300_000;
        float[] param = random.gaussian(n, 1);
        float[][] grads = {gradient(n, 0.1f), gradient(n, 0.3f)};
        byte[][] expected = null;
        for (int threads : new int[] {1, 4, 16}) {
            try (CpuBackend b = new CpuBackend(threads); State8 s = new State8(b, param)) {
                for (int step = 0; step < grads.length; step++) {
                    try (Tensor g = b.fromFloats(grads[step], DType.F32, n)) {
                        b.adamw8bit(s.p, g, s.m8, s.v8, s.am, s.av, s.qs, s.qu, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, step + 1);
                    }
                }
                byte[][] got = {bytes(b, s.p), bytes(b, s.m8), bytes(b, s.v8), bytes(b, s.am), bytes(b, s.av)};
                if (expected == null) expected = got;
                else for (int k = 0; k < got.length; k++) assertThat(got[k]).as("tensor %d on %d threads", k, threads).containsExactly(expected[k]);
            }
        }
    }

    @Test
    void argumentsOfTheWrongTypeOrSizeAreRejectedWithTheirName() {
        try (State8 s = new State8(backend, new float[300]); Tensor g = backend.allocate(DType.F32, 300);
             Tensor shortAbsmax = backend.allocate(DType.F32, 1); Tensor floatCodes = backend.allocate(DType.F32, 300)) {
            assertThatThrownBy(() -> backend.adamw8bit(s.p, g, s.m8, s.v8, shortAbsmax, s.av, s.qs, s.qu, 1e-3f, 0.9f, 0.999f, 1e-8f, 0f, 1))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("absmaxM").hasMessageContaining("(2)");
            assertThatThrownBy(() -> backend.adamw8bit(s.p, g, floatCodes, s.v8, s.am, s.av, s.qs, s.qu, 1e-3f, 0.9f, 0.999f, 1e-8f, 0f, 1))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("m8 must be U8");
            assertThatThrownBy(() -> backend.adamw8bit(s.p, g, s.m8, s.v8, s.am, s.av, s.qs, s.qu, 1e-3f, 0.9f, 0.999f, 1e-8f, 0f, 0))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("counts from 1");
            assertThatThrownBy(() -> backend.adamw32bit(s.p, g, s.m8, s.v8, 1e-3f, 0.9f, 0.999f, 1e-8f, 0f, 1))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("must be F32");
        }
    }
}
