package dev.lora4j.backend.testing;

import dev.lora4j.backend.Backend;
import dev.lora4j.backend.DropoutHash;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;

import java.util.Locale;

import static dev.lora4j.backend.testing.TensorAssert.F32_ROUNDOFF;
import static dev.lora4j.backend.testing.TensorAssert.assertSameFloats;
import static dev.lora4j.backend.testing.TensorAssert.assertWithin;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * What {@link Backend#loraDown} and {@link Backend#loraDownBackward} must compute, on every backend and whether fused
 * or composed: hidden, gradA and dX against the double-precision {@link LoraDownReference} over odd shapes (rows,
 * widths and ranks shorter and longer than a vector or a tile), p = 0, p > 0 and p = 1; the mask exactly
 * {@link DropoutHash}'s in both directions; views; repeatable bits; bad arguments. A backend's test class extends this
 * one and opens the backend; activations are of the backend's activation dtype, with values it holds exactly.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
public abstract class LoraOpsContract {
    private Backend backend;

    /** Opens the backend under test (may skip the class through JUnit assumptions). */
    protected abstract Backend openBackend();

    /** The relative rounding of the adapter's values in the products: 0 when they multiply as F32. */
    protected double operandRoundoff() { return 0; }

    /** The op under test: the backend's loraDown by default. */
    protected void down(Backend b, Tensor x, Tensor a, float scaling, float p, long seed, Tensor hidden) {
        b.loraDown(x, a, scaling, p, seed, hidden);
    }

    /** The op under test: the backend's loraDownBackward by default. */
    protected void downBackward(Backend b, Tensor x, Tensor a, float scaling, float p, long seed, Tensor dHidden,
                                Tensor gradA, Tensor dX, boolean accumulate) {
        b.loraDownBackward(x, a, scaling, p, seed, dHidden, gradA, dX, accumulate);
    }

    protected final Backend backend() { return backend; }

    @BeforeAll
    final void open() { backend = openBackend(); }

    @AfterAll
    final void closeBackend() { if (backend != null) backend.close(); }

    private DType act() { return backend.activationType(); }

    /** The unit roundoff of an activation stored in the activation dtype. */
    private double outputRoundoff() { return act() == DType.F32 ? F32_ROUNDOFF : 0x1p-8; }

    // ---- against the reference -------------------------------------------------------------------------------

    @Test
    void loraDownMatchesTheReferenceForOddShapesWithAndWithoutDropout() {
        RandomTensors random = new RandomTensors(301);
        for (int c = 0; c < 24; c++) {
            int n = random.pickInt(1, 2, 3, 7, 17, 65, 130);
            int k = random.pickInt(1, 3, 8, 15, 24, 33, 100, 264);
            int r = random.pickInt(1, 2, 5, 8, 16, 17, 33, 64, 70);
            checkDown(random, n, k, r, random.pick(0f, 0.05f, 0.5f), random.between(0, 1 << 20));
        }
    }

    @Test
    void loraDownMatchesTheReferenceAtAdapterShapes() {
        RandomTensors random = new RandomTensors(302);
        checkDown(random, 130, 256, 16, 0.05f, 7);   // whole tiles and a partial one of rows
        checkDown(random, 64, 520, 8, 0.1f, 8);      // several column splits
        checkDown(random, 33, 136, 64, 0f, 9);
        checkDown(random, 20, 64, 130, 0.3f, 10);    // ranks beyond one group
    }

    @Test
    void loraDownBackwardMatchesTheReferenceForOddShapesWithAndWithoutDropout() {
        RandomTensors random = new RandomTensors(303);
        for (int c = 0; c < 24; c++) {
            int n = random.pickInt(1, 2, 3, 7, 17, 65, 130);
            int k = random.pickInt(1, 3, 8, 15, 24, 33, 100, 264);
            int r = random.pickInt(1, 2, 5, 8, 16, 17, 33, 64, 70);
            checkBackward(random, n, k, r, random.pick(0f, 0.05f, 0.5f), random.between(0, 1 << 20), random.between(0, 1) == 1);
        }
    }

    @Test
    void loraDownBackwardMatchesTheReferenceAtAdapterShapes() {
        RandomTensors random = new RandomTensors(304);
        checkBackward(random, 130, 256, 16, 0.05f, 7, true);
        checkBackward(random, 600, 136, 8, 0.1f, 8, false);  // several blocks of rows for gradA
        checkBackward(random, 33, 136, 64, 0f, 9, true);
        checkBackward(random, 20, 64, 130, 0.3f, 10, true);  // ranks beyond one group
    }

    @Test
    void atPOneEverythingIsDroppedAndAtPZeroNothing() {
        RandomTensors random = new RandomTensors(305);
        checkDown(random, 9, 40, 4, 1f, 3);
        checkBackward(random, 9, 40, 4, 1f, 3, true);
        int n = 5, k = 24, r = 3;
        float[] x = random.uniform(n * k, -1, 1, act()), a = random.uniform(r * k, -1, 1);
        try (Tensor xt = backend.fromFloats(x, act(), n, k); Tensor at = backend.fromFloats(a, DType.F32, r, k);
             Tensor h = backend.allocate(act(), n, r)) {
            down(backend, xt, at, 1f, 1f, 3, h);
            assertThat(backend.toFloats(h)).containsOnly(0f);
        }
    }

    // ---- the mask ----------------------------------------------------------------------------------------------

    @Test
    void theForwardPassDropsExactlyTheElementsDropoutDrops() {
        // a = identity: hidden[i, j] = scaling · dropout(x)[i, j], zero exactly where x[i, j] is dropped.
        RandomTensors random = new RandomTensors(306);
        for (int[] shape : new int[][] {{37, 24}, {70, 64}, {5, 17}}) {
            int n = shape[0], k = shape[1];
            float[] x = random.uniform(n * k, 0.5, 1, act()), a = new float[k * k];
            for (int j = 0; j < k; j++) a[j * k + j] = 1f;
            try (Tensor xt = backend.fromFloats(x, act(), n, k); Tensor at = backend.fromFloats(a, DType.F32, k, k);
                 Tensor h = backend.allocate(act(), n, k)) {
                down(backend, xt, at, 1f, 0.3f, 77, h);
                float[] got = backend.toFloats(h);
                boolean[] dropped = LoraDownReference.dropped(77, 0.3f, n * k);
                for (int i = 0; i < n * k; i++) {
                    assertThat(got[i] == 0f).as("hidden element %d of %dx%d dropped", i, n, k).isEqualTo(dropped[i]);
                }
            }
        }
    }

    @Test
    void theBackwardPassDropsTheGradientOfExactlyTheElementsTheForwardPassDropped() {
        // Positive dHidden and a: every sum is positive, so dX is zero exactly where the mask drops.
        RandomTensors random = new RandomTensors(307);
        for (int[] shape : new int[][] {{37, 24, 4}, {70, 136, 16}, {5, 17, 3}}) {
            int n = shape[0], k = shape[1], r = shape[2];
            float[] x = random.uniform(n * k, -1, 1, act()), a = random.uniform(r * k, 0.5, 1);
            float[] dh = random.uniform(n * r, 0.5, 1, act());
            try (Tensor xt = backend.fromFloats(x, act(), n, k); Tensor at = backend.fromFloats(a, DType.F32, r, k);
                 Tensor dht = backend.fromFloats(dh, act(), n, r); Tensor g = backend.allocate(DType.F32, r, k);
                 Tensor dx = backend.allocate(act(), n, k)) {
                downBackward(backend, xt, at, 1f, 0.3f, 78, dht, g, dx, false);
                float[] got = backend.toFloats(dx);
                boolean[] dropped = LoraDownReference.dropped(78, 0.3f, n * k);
                for (int i = 0; i < n * k; i++) {
                    assertThat(got[i] == 0f).as("dX element %d of %dx%d dropped", i, n, k).isEqualTo(dropped[i]);
                }
            }
        }
    }

    // ---- views, repeatability, arguments -----------------------------------------------------------------------

    @Test
    void theOpsReadAndWriteRowViews() {
        // Views that start one row in: with an odd row length, off every alignment a vector access needs.
        RandomTensors random = new RandomTensors(308);
        for (int k : new int[] {33, 64}) {
            int n = 19, r = 6;
            float p = 0.2f;
            float[] x = random.uniform((n + 2) * k, -1, 1, act()), a = random.uniform(r * k, -1, 1);
            float[] dh = random.uniform((n + 2) * r, -1, 1, act()), before = random.uniform((n + 2) * k, -1, 1, act());
            try (Tensor xs = backend.fromFloats(x, act(), n + 2, k); Tensor at = backend.fromFloats(a, DType.F32, r, k);
                 Tensor hs = backend.allocate(act(), n + 2, r); Tensor dhs = backend.fromFloats(dh, act(), n + 2, r);
                 Tensor g = backend.allocate(DType.F32, r, k); Tensor dxs = backend.fromFloats(before, act(), n + 2, k)) {
                Tensor xv = xs.rows(1, n), hv = hs.rows(1, n), dhv = dhs.rows(1, n), dxv = dxs.rows(1, n);
                down(backend, xv, at, 0.5f, p, 5, hv);
                downBackward(backend, xv, at, 0.5f, p, 5, dhv, g, dxv, true);
                float[] xr = slice(x, k, 1, n), dhr = slice(dh, r, 1, n), br = slice(before, k, 1, n);
                double[][] want = LoraDownReference.down(xr, a, n, k, r, 0.5, p, 5);
                assertWithin("hidden of a view, k=" + k, slice(backend.toFloats(hs), r, 1, n), want[0],
                        bound(want, k, outputRoundoff()));
                double[][] wantDx = LoraDownReference.dX(dhr, a, br, n, k, r, 0.5, p, 5);
                float[] dxAll = backend.toFloats(dxs);
                assertWithin("dX of a view, k=" + k, slice(dxAll, k, 1, n), wantDx[0], bound(wantDx, r, outputRoundoff()));
                // The rows around the views are untouched.
                for (int row : new int[] {0, n + 1}) {
                    for (int c = 0; c < k; c++) assertThat(dxAll[row * k + c]).isEqualTo(before[row * k + c]);
                }
                assertThat(slice(backend.toFloats(hs), r, 0, 1)).containsOnly(0f);
            }
        }
    }

    @Test
    void resultsRepeatBitForBit() {
        RandomTensors random = new RandomTensors(309);
        int n = 130, k = 136, r = 16;
        float[] x = random.uniform(n * k, -1, 1, act()), a = random.uniform(r * k, -1, 1);
        float[] dh = random.uniform(n * r, -1, 1, act());
        float[][] results = new float[2][];
        for (int run = 0; run < 2; run++) {
            try (Tensor xt = backend.fromFloats(x, act(), n, k); Tensor at = backend.fromFloats(a, DType.F32, r, k);
                 Tensor h = backend.allocate(act(), n, r); Tensor dht = backend.fromFloats(dh, act(), n, r);
                 Tensor g = backend.allocate(DType.F32, r, k); Tensor dx = backend.allocate(act(), n, k)) {
                down(backend, xt, at, 2f, 0.1f, 11, h);
                downBackward(backend, xt, at, 2f, 0.1f, 11, dht, g, dx, false);
                results[run] = concat(backend.toFloats(h), backend.toFloats(g), backend.toFloats(dx));
            }
        }
        assertSameFloats("hidden, gradA and dX of the same call", results[1], results[0]);
    }

    @Test
    void badShapesAndProbabilitiesAreRejectedWithTheirValues() {
        try (Tensor x = backend.allocate(act(), 4, 8); Tensor a = backend.allocate(DType.F32, 2, 8);
             Tensor wideA = backend.allocate(DType.F32, 2, 9); Tensor h = backend.allocate(act(), 4, 2);
             Tensor tallH = backend.allocate(act(), 5, 2); Tensor g = backend.allocate(DType.F32, 2, 8);
             Tensor tallG = backend.allocate(DType.F32, 3, 8); Tensor dx = backend.allocate(act(), 4, 8)) {
            assertThatThrownBy(() -> down(backend, x, wideA, 1f, 0f, 1, h)).isInstanceOf(IllegalArgumentException.class);
            assertThatThrownBy(() -> down(backend, x, a, 1f, 0f, 1, tallH)).isInstanceOf(IllegalArgumentException.class);
            assertThatThrownBy(() -> down(backend, x, a, 1f, 1.5f, 1, h)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("1.5");
            assertThatThrownBy(() -> downBackward(backend, x, a, 1f, -0.5f, 1, h, g, dx, false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("-0.5");
            assertThatThrownBy(() -> downBackward(backend, x, a, 1f, 0f, 1, tallH, g, dx, false))
                    .isInstanceOf(IllegalArgumentException.class);
            assertThatThrownBy(() -> downBackward(backend, x, a, 1f, 0f, 1, h, tallG, dx, false))
                    .isInstanceOf(IllegalArgumentException.class);
        }
    }

    // ---- checks ------------------------------------------------------------------------------------------------

    private void checkDown(RandomTensors random, int n, int k, int r, float p, long seed) {
        float scaling = random.pick(1f, 2f, 0.25f);
        float[] x = random.uniform(n * k, -1, 1, act()), a = random.uniform(r * k, -1, 1);
        String what = String.format(Locale.ROOT, "loraDown n=%d k=%d r=%d p=%s scaling=%s %s", n, k, r, p, scaling, act());
        try (Tensor xt = backend.fromFloats(x, act(), n, k); Tensor at = backend.fromFloats(a, DType.F32, r, k);
             Tensor h = backend.fromFloats(random.uniform(n * r, -9, 9, act()), act(), n, r)) { // overwritten
            down(backend, xt, at, scaling, p, seed, h);
            double[][] want = LoraDownReference.down(x, a, n, k, r, scaling, p, seed);
            assertWithin(what, backend.toFloats(h), want[0], bound(want, k, outputRoundoff()));
        }
    }

    private void checkBackward(RandomTensors random, int n, int k, int r, float p, long seed, boolean accumulate) {
        float scaling = random.pick(1f, 2f, 0.25f);
        float[] x = random.uniform(n * k, -1, 1, act()), a = random.uniform(r * k, -1, 1);
        float[] dh = random.uniform(n * r, -1, 1, act()), gBefore = random.uniform(r * k, -1, 1);
        float[] dxBefore = random.uniform(n * k, -1, 1, act());
        String what = String.format(Locale.ROOT, "loraDownBackward n=%d k=%d r=%d p=%s scaling=%s%s %s", n, k, r, p,
                scaling, accumulate ? " accumulate" : "", act());
        try (Tensor xt = backend.fromFloats(x, act(), n, k); Tensor at = backend.fromFloats(a, DType.F32, r, k);
             Tensor dht = backend.fromFloats(dh, act(), n, r); Tensor g = backend.fromFloats(gBefore, DType.F32, r, k);
             Tensor dx = backend.fromFloats(dxBefore, act(), n, k)) {
            downBackward(backend, xt, at, scaling, p, seed, dht, g, dx, accumulate);
            double[][] wantG = LoraDownReference.gradA(x, dh, gBefore, n, k, r, scaling, p, seed);
            assertWithin(what + ": gradA", backend.toFloats(g), wantG[0], bound(wantG, n, F32_ROUNDOFF));
            double[][] wantDx = LoraDownReference.dX(dh, a, accumulate ? dxBefore : null, n, k, r, scaling, p, seed);
            assertWithin(what + ": dX", backend.toFloats(dx), wantDx[0], bound(wantDx, r, outputRoundoff()));
        }
    }

    /**
     * The error allowed for sums of {@code terms} products: FP32 accumulation in any order and the roundings of
     * dropout(x), the keep factor and the scaling ((terms + 4) u of the magnitude), the adapter's rounding in the
     * products (operandRoundoff of the magnitude, as dHidden's product with a may round a), and the output's rounding
     * twice (a composition rounds the product and then its scaled value).
     */
    private double[] bound(double[][] valuesAndMagnitudes, int terms, double output) {
        double[] v = valuesAndMagnitudes[0], m = valuesAndMagnitudes[1], b = new double[v.length];
        for (int i = 0; i < b.length; i++) {
            b[i] = ((terms + 4) * F32_ROUNDOFF + 1.01 * operandRoundoff()) * m[i] * 1.01 + 2 * output * Math.abs(v[i])
                    + output * operandRoundoff() * m[i] + 1e-30;
        }
        return b;
    }

    private static float[] slice(float[] rowsOf, int width, int first, int count) {
        float[] out = new float[count * width];
        System.arraycopy(rowsOf, first * width, out, 0, out.length);
        return out;
    }

    private static float[] concat(float[]... parts) {
        int length = 0;
        for (float[] p : parts) length += p.length;
        float[] out = new float[length];
        int at = 0;
        for (float[] p : parts) {
            System.arraycopy(p, 0, out, at, p.length);
            at += p.length;
        }
        return out;
    }
}
