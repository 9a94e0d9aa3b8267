package dev.lora4j.backend.testing;

import dev.lora4j.backend.Backend;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;

import static dev.lora4j.backend.testing.TensorAssert.F32_ROUNDOFF;
import static dev.lora4j.backend.testing.TensorAssert.assertClose;
import static dev.lora4j.backend.testing.TensorAssert.assertSameFloats;
import static dev.lora4j.backend.testing.TensorAssert.assertWithin;
import static dev.lora4j.backend.testing.TensorAssert.rounded;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * What every {@link Backend} must compute, op by op, checked against {@link ReferenceOps} on randomized shapes:
 * odd sizes, rows shorter and longer than a vector, one row and many, grouped-query heads, sliding windows, a
 * filled KV cache. A backend's test class extends this one and opens the backend; tolerances are error bounds
 * derived from FP32 rounding, which a backend with other arithmetic (TF32, fast-math) may widen by overriding
 * the {@code *Roundoff} methods.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
public abstract class BackendContractTests {
    private Backend backend;

    /** Opens the backend under test (may skip the class through JUnit assumptions). */
    protected abstract Backend openBackend();

    /** The unit roundoff of the backend's matmul accumulation; FP32 by default. */
    protected double matmulRoundoff() { return F32_ROUNDOFF; }

    /** The unit roundoff of element-wise arithmetic and of exp, sin, cos; FP32 by default. */
    protected double elementwiseRoundoff() { return F32_ROUNDOFF; }

    protected final Backend backend() { return backend; }

    @BeforeAll
    final void open() { backend = openBackend(); }

    @AfterAll
    final void closeBackend() { if (backend != null) backend.close(); }

    // ---- matmul ---------------------------------------------------------------------------------------------

    @Test
    void matmulMatchesTheReferenceForRandomShapesAndWeightTypes() {
        RandomTensors random = new RandomTensors(11);
        for (int c = 0; c < 60; c++) {
            int n = random.pickInt(1, 1, 2, 3, 4, 5, 7, 8, 13, 64, 65);
            int k = random.pickInt(1, 3, 8, 15, 16, 17, 31, 33, 64, 100, 257);
            int m = random.pickInt(1, 2, 3, 4, 5, 9, 13, 32, 67);
            DType wt = random.pick(DType.F32, DType.BF16, DType.F16);
            boolean accumulate = random.between(0, 3) == 0;
            checkMatmul(random, n, k, m, wt, accumulate);
        }
    }

    @Test
    void matmulMatchesTheReferenceAtModelWidths() {
        RandomTensors random = new RandomTensors(12);
        checkMatmul(random, 1, 1024, 96, DType.BF16, false);
        checkMatmul(random, 1, 1000, 50, DType.F16, true);
        checkMatmul(random, 70, 300, 150, DType.BF16, false);
        checkMatmul(random, 130, 128, 40, DType.F32, true);
        checkMatmul(random, 67, 1100, 260, DType.F16, true);
        checkMatmul(random, 9, 2049, 33, DType.F32, false);
    }

    @Test
    void matmulWithAccumulateAddsToWhatOutHolds() {
        RandomTensors random = new RandomTensors(13);
        float[] x = random.uniform(3 * 20, -1, 1), w = random.uniform(5 * 20, -1, 1), before = random.uniform(15, -4, 4);
        try (Tensor xt = backend.fromFloats(x, DType.F32, 3, 20); Tensor wt = backend.fromFloats(w, DType.F32, 5, 20);
             Tensor out = backend.fromFloats(before, DType.F32, 3, 5)) {
            backend.matmul(xt, wt, out, true);
            backend.matmul(xt, wt, out, true);
            // out = before + 2·x·wᵀ: the reference of one product over x repeated along k.
            float[] xx = new float[3 * 40], ww = new float[5 * 40];
            for (int r = 0; r < 3; r++) {
                System.arraycopy(x, r * 20, xx, r * 40, 20);
                System.arraycopy(x, r * 20, xx, r * 40 + 20, 20);
            }
            for (int c = 0; c < 5; c++) {
                System.arraycopy(w, c * 20, ww, c * 40, 20);
                System.arraycopy(w, c * 20, ww, c * 40 + 20, 20);
            }
            assertWithin("matmul accumulated twice", backend.toFloats(out), ReferenceOps.matmul(xx, ww, 3, 40, 5, before),
                    matmulBound(xx, ww, 3, 40, 5, before));
        }
    }

    @Test
    void matmulAddWritesTheAddendPlusTheProductAsCopyingAndAccumulatingDoes() {
        RandomTensors random = new RandomTensors(17);
        for (DType weightType : new DType[] {DType.F32, DType.BF16}) {
            int n = 7, k = 48, m = 24;
            float[] x = random.uniform(n * k, -1, 1), w = random.uniform(m * k, -1, 1, weightType);
            float[] residual = random.uniform(n * m, -4, 4);
            try (Tensor xt = backend.fromFloats(x, DType.F32, n, k); Tensor wt = backend.fromFloats(w, weightType, m, k);
                 Tensor addend = backend.fromFloats(residual, DType.F32, n, m); Tensor out = backend.allocate(DType.F32, n, m);
                 Tensor composed = backend.fromFloats(residual, DType.F32, n, m);
                 Tensor inPlace = backend.fromFloats(residual, DType.F32, n, m)) {
                backend.matmulAdd(xt, wt, addend, out);
                backend.matmul(xt, wt, composed, true);
                backend.matmulAdd(xt, wt, inPlace, inPlace);
                assertThat(backend.toFloats(out)).as(weightType + ": addend + x·wᵀ").containsExactly(backend.toFloats(composed));
                assertThat(backend.toFloats(inPlace)).as(weightType + ": out may be the addend").containsExactly(backend.toFloats(composed));
                assertThat(backend.toFloats(addend)).as("the addend is left as it was").containsExactly(residual);
            }
        }
    }

    @Test
    void matmulReadsAndWritesRowViewsOfLargerTensors() {
        RandomTensors random = new RandomTensors(14);
        float[] x = random.uniform(10 * 24, -1, 1), w = random.uniform(6 * 24, -1, 1);
        try (Tensor xt = backend.fromFloats(x, DType.F32, 10, 24); Tensor wt = backend.fromFloats(w, DType.BF16, 6, 24);
             Tensor out = backend.allocate(DType.F32, 10, 6)) {
            backend.matmul(xt.rows(3, 5), wt.rows(1, 4), out.rows(2, 6).view(12, 5, 4), false);
            float[] got = backend.toFloats(out);
            float[] wBf16 = RandomTensors.representable(Arrays.copyOfRange(w, 24, 5 * 24), DType.BF16);
            double[] expected = ReferenceOps.matmul(Arrays.copyOfRange(x, 3 * 24, 8 * 24), wBf16, 5, 24, 4, null);
            float[] window = Arrays.copyOfRange(got, 24, 44);
            assertWithin("matmul on views", window, expected, matmulBound(Arrays.copyOfRange(x, 72, 192), wBf16, 5, 24, 4, null));
            for (int i = 0; i < got.length; i++) {
                if (i < 24 || i >= 44) assertThat(got[i]).as("element %d outside the output view", i).isZero();
            }
        }
    }

    @Test
    void matmulRejectsMismatchedShapes() {
        try (Tensor x = backend.allocate(DType.F32, 2, 8); Tensor w = backend.allocate(DType.F32, 3, 9);
             Tensor out = backend.allocate(DType.F32, 2, 3)) {
            assertThatThrownBy(() -> backend.matmul(x, w, out)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("matmul");
        }
    }

    private void checkMatmul(RandomTensors random, int n, int k, int m, DType wt, boolean accumulate) {
        float[] x = random.uniform(n * k, -1, 1);
        float[] w = random.uniform(m * k, -1, 1, wt);
        float[] before = accumulate ? random.uniform(n * m, -2, 2) : null;
        String what = "matmul n=" + n + " k=" + k + " m=" + m + " " + wt + (accumulate ? " accumulate" : "");
        try (Tensor xt = backend.fromFloats(x, DType.F32, n, k); Tensor wt2 = backend.fromFloats(w, wt, m, k);
             Tensor out = accumulate ? backend.fromFloats(before, DType.F32, n, m) : backend.allocate(DType.F32, n, m)) {
            backend.matmul(xt, wt2, out, accumulate);
            assertWithin(what, backend.toFloats(out), ReferenceOps.matmul(x, w, n, k, m, before),
                    matmulBound(x, w, n, k, m, before));
        }
    }

    /** Any order of FP32 accumulation of k products (and the added output) stays within (k+2)·u·Σ|terms|. */
    private double[] matmulBound(float[] x, float[] w, int n, int k, int m, float[] before) {
        double[] magnitude = ReferenceOps.matmulMagnitudes(x, w, n, k, m, before);
        double[] bound = new double[magnitude.length];
        for (int i = 0; i < bound.length; i++) bound[i] = (k + 2) * matmulRoundoff() * magnitude[i] * 1.01 + 1e-30;
        return bound;
    }

    // ---- rmsNorm, rope, attention ---------------------------------------------------------------------------

    @Test
    void rmsNormMatchesTheReference() {
        RandomTensors random = new RandomTensors(21);
        for (int c = 0; c < 30; c++) {
            int rows = random.between(1, 9), d = random.pickInt(1, 5, 16, 17, 33, 100, 257, 4096);
            DType weightType = random.pick(DType.F32, DType.BF16);
            float eps = random.pick(1e-5f, 1e-6f);
            float[] x = random.uniform(rows * d, -3, 3), weight = random.uniform(d, 0.5, 1.5, weightType);
            try (Tensor xt = backend.fromFloats(x, DType.F32, rows, d); Tensor wt = backend.fromFloats(weight, weightType, d);
                 Tensor out = backend.allocate(DType.F32, rows, d)) {
                backend.rmsNorm(xt, wt, eps, out);
                double rel = (d / 2.0 + 8) * elementwiseRoundoff();
                assertClose("rmsNorm rows=" + rows + " d=" + d + " " + weightType, backend.toFloats(out),
                        ReferenceOps.rmsNorm(x, d, weight, eps), 1e-30, rel);
            }
        }
    }

    @Test
    void ropeMatchesTheReferenceAtSmallAndLargePositions() {
        RandomTensors random = new RandomTensors(31);
        for (int c = 0; c < 30; c++) {
            int headDim = random.pickInt(2, 8, 34, 64, 128), heads = random.between(1, 4), rows = random.between(1, 6);
            int width = heads * headDim;
            float[] x = random.uniform(rows * width, -2, 2);
            int[] positions = random.ints(rows, 0, random.pickInt(8, 4096, 131072));
            float[] inv = ReferenceOps.ropeInverseFrequencies(headDim, random.pick(10000.0, 500000.0));
            try (Tensor xt = backend.fromFloats(x, DType.F32, rows, width);
                 Tensor invt = backend.fromFloats(inv, DType.F32, headDim / 2)) {
                backend.rope(xt, headDim, positions, invt);
                double[] expected = ReferenceOps.rope(x, width, headDim, positions, inv);
                double[] bound = new double[x.length];
                int half = headDim / 2;
                for (int i = 0; i < x.length; i++) {
                    int j = i % headDim, partner = j < half ? i + half : i - half;
                    bound[i] = 6 * elementwiseRoundoff() * (Math.abs(x[i]) + Math.abs(x[partner])) + 1e-30;
                }
                assertWithin("rope headDim=" + headDim + " heads=" + heads + " positions=" + Arrays.toString(positions),
                        backend.toFloats(xt), expected, bound);
            }
        }
    }

    @Test
    void attentionMatchesTheReferenceWithGroupedHeadsWindowsAndACache() {
        RandomTensors random = new RandomTensors(41);
        for (int c = 0; c < 40; c++) {
            int kvHeads = random.pickInt(1, 2, 4), group = random.pickInt(1, 2, 4), heads = kvHeads * group;
            int headDim = random.pickInt(4, 16, 24, 40, 64, 128);
            int n = random.pickInt(1, 1, 2, 5, 17), startPos = random.pickInt(0, 0, 3, 40);
            int window = random.pickInt(0, 0, 1, 7, 30);
            int cacheRows = startPos + n + random.between(0, 3); // rows past the last position must be ignored
            DType kvType = random.pick(DType.F32, DType.F32, DType.BF16);
            checkAttention(random, n, startPos, heads, kvHeads, headDim, window, cacheRows, kvType);
        }
    }

    @Test
    void attentionOverALongContextMatchesTheReference() {
        checkAttention(new RandomTensors(42), 3, 700, 8, 2, 64, 0, 703, DType.F32);
    }

    @Test
    void attentionOfTheFirstPositionReturnsItsValue() {
        RandomTensors random = new RandomTensors(43);
        float[] q = random.uniform(2 * 16, -1, 1), k = random.uniform(16, -1, 1), v = random.uniform(16, -1, 1);
        try (Tensor qt = backend.fromFloats(q, DType.F32, 1, 32); Tensor kt = backend.fromFloats(k, DType.F32, 1, 16);
             Tensor vt = backend.fromFloats(v, DType.F32, 1, 16); Tensor out = backend.allocate(DType.F32, 1, 32)) {
            backend.attention(qt, kt, vt, 0, 2, 1, 16, 0, out);
            float[] both = new float[32];
            System.arraycopy(v, 0, both, 0, 16);
            System.arraycopy(v, 0, both, 16, 16);
            assertClose("attention over one position", backend.toFloats(out), toDoubles(both), 0, 2 * elementwiseRoundoff());
        }
    }

    private void checkAttention(RandomTensors random, int n, int startPos, int heads, int kvHeads, int headDim,
                                int window, int cacheRows, DType kvType) {
        float[] q = random.uniform(n * heads * headDim, -1, 1);
        float[] k = random.uniform(cacheRows * kvHeads * headDim, -1, 1, kvType);
        float[] v = random.uniform(cacheRows * kvHeads * headDim, -1, 1, kvType);
        String what = "attention n=" + n + " startPos=" + startPos + " heads=" + heads + "/" + kvHeads + " headDim="
                + headDim + " window=" + window + " kv=" + kvType;
        try (Tensor qt = backend.fromFloats(q, DType.F32, n, (long) heads * headDim);
             Tensor kt = backend.fromFloats(k, kvType, cacheRows, (long) kvHeads * headDim);
             Tensor vt = backend.fromFloats(v, kvType, cacheRows, (long) kvHeads * headDim);
             Tensor out = backend.allocate(DType.F32, n, (long) heads * headDim)) {
            backend.attention(qt, kt, vt, startPos, heads, kvHeads, headDim, window, out);
            double[] expected = ReferenceOps.attention(q, k, v, n, startPos, heads, kvHeads, headDim, window);
            // A score's error is at most (headDim+2)·u·Σ|q·k|·scale; it perturbs the softmax weights by about twice
            // that, relatively, and the weighted sum of len values adds len·u·max|v|.
            double u = Math.max(matmulRoundoff(), elementwiseRoundoff());
            double scoreError = (headDim + 2) * u * maxQkMagnitude(q, k, n, heads, kvHeads, headDim, startPos + n) / Math.sqrt(headDim);
            int len = window > 0 ? Math.min(window, startPos + n) : startPos + n;
            double absolute = TensorAssert.maxAbs(v) * (4 * scoreError + (len + 8) * u) * 1.1;
            assertClose(what, backend.toFloats(out), expected, absolute, 0);
        }
    }

    private static double maxQkMagnitude(float[] q, float[] k, int n, int heads, int kvHeads, int headDim, int positions) {
        double max = 0;
        int group = heads / kvHeads;
        for (int i = 0; i < n; i++) {
            for (int h = 0; h < heads; h++) {
                for (int t = 0; t < positions; t++) {
                    double s = 0;
                    for (int j = 0; j < headDim; j++) {
                        s += Math.abs((double) q[(i * heads + h) * headDim + j] * k[(t * kvHeads + h / group) * headDim + j]);
                    }
                    max = Math.max(max, s);
                }
            }
        }
        return max;
    }

    // ---- element-wise ops -----------------------------------------------------------------------------------

    @Test
    void swigluMatchesTheReferenceIncludingSaturatedGates() {
        RandomTensors random = new RandomTensors(51);
        for (int count : new int[] {1, 15, 16, 17, 1000, 70_001}) {
            float[] gate = random.uniform(count, -20, 20), up = random.uniform(count, -3, 3);
            if (count > 4) {
                gate[0] = -100f; // e^100 overflows FP32: silu must still be -0, not NaN
                gate[1] = 100f;
                gate[2] = 0f;
                gate[3] = -88.5f;
            }
            try (Tensor g = backend.fromFloats(gate, DType.F32, count); Tensor u = backend.fromFloats(up, DType.F32, count);
                 Tensor out = backend.allocate(DType.F32, count)) {
                backend.swiglu(g, u, out);
                assertClose("swiglu count=" + count, backend.toFloats(out), ReferenceOps.swiglu(gate, up), 1e-30,
                        8 * elementwiseRoundoff());
            }
        }
    }

    @Test
    void addIsExactlyTheRoundedSum() {
        RandomTensors random = new RandomTensors(61);
        for (int count : new int[] {1, 7, 16, 33, 100_003}) {
            float[] x = random.uniform(count, -10, 10), y = random.uniform(count, -10, 10);
            try (Tensor xt = backend.fromFloats(x, DType.F32, count); Tensor yt = backend.fromFloats(y, DType.F32, count)) {
                backend.add(xt, yt);
                assertSameFloats("add count=" + count, backend.toFloats(xt), rounded(ReferenceOps.add(x, y)));
            }
        }
    }

    @Test
    void addBiasAddsTheBiasToEveryRowExactly() {
        RandomTensors random = new RandomTensors(62);
        for (int c = 0; c < 10; c++) {
            int rows = random.between(1, 40), d = random.pickInt(1, 3, 16, 17, 129, 896);
            DType biasType = random.pick(DType.F32, DType.BF16);
            float[] x = random.uniform(rows * d, -10, 10), bias = random.uniform(d, -1, 1, biasType);
            try (Tensor xt = backend.fromFloats(x, DType.F32, rows, d); Tensor bt = backend.fromFloats(bias, biasType, d)) {
                backend.addBias(xt, bt);
                assertSameFloats("addBias rows=" + rows + " d=" + d + " " + biasType, backend.toFloats(xt),
                        rounded(ReferenceOps.addBias(x, bias)));
            }
        }
    }

    @Test
    void embeddingCopiesTheRowsOfTheIdsWidenedToF32() {
        RandomTensors random = new RandomTensors(71);
        for (DType tableType : new DType[] {DType.F32, DType.BF16, DType.F16}) {
            int vocab = 50, d = 37;
            float[] table = random.uniform(vocab * d, -1, 1, tableType);
            int[] ids = {0, 49, 7, 7, 23};
            try (Tensor tt = backend.fromFloats(table, tableType, vocab, d); Tensor out = backend.allocate(DType.F32, ids.length, d)) {
                backend.embedding(tt, ids, out);
                assertSameFloats("embedding " + tableType, backend.toFloats(out), rounded(ReferenceOps.embedding(table, d, ids)));
                assertThatThrownBy(() -> backend.embedding(tt, new int[] {3, 50}, out.rows(0, 2)))
                        .hasMessageContaining("50").hasMessageContaining("vocabulary");
            }
        }
    }

    // ---- conversions ----------------------------------------------------------------------------------------

    @Test
    void uploadAndCopyRoundF32ToBf16ToNearestEven() {
        float[] values = conversionProbes(81);
        float[] expected = new float[values.length];
        for (int i = 0; i < values.length; i++) expected[i] = nearest(values[i], 8, -126, 0x1p127 * (2 - 0x1p-7));
        try (Tensor viaUpload = backend.fromFloats(values, DType.BF16, values.length);
             Tensor f32 = backend.fromFloats(values, DType.F32, values.length);
             Tensor viaCopy = backend.allocate(DType.BF16, values.length)) {
            backend.copy(f32, viaCopy);
            assertSameFloats("F32 -> BF16 by upload", backend.toFloats(viaUpload), expected);
            assertSameFloats("F32 -> BF16 by copy", backend.toFloats(viaCopy), expected);
        }
    }

    @Test
    void uploadAndCopyRoundF32ToF16ToNearestEven() {
        float[] values = conversionProbes(82);
        float[] expected = new float[values.length];
        for (int i = 0; i < values.length; i++) expected[i] = nearest(values[i], 11, -14, 65504);
        try (Tensor viaUpload = backend.fromFloats(values, DType.F16, values.length);
             Tensor f32 = backend.fromFloats(values, DType.F32, values.length);
             Tensor viaCopy = backend.allocate(DType.F16, values.length)) {
            backend.copy(f32, viaCopy);
            assertSameFloats("F32 -> F16 by upload", backend.toFloats(viaUpload), expected);
            assertSameFloats("F32 -> F16 by copy", backend.toFloats(viaCopy), expected);
        }
    }

    @Test
    void everyF16AndBf16EncodingWidensToF32Exactly() {
        short[] all = new short[65536];
        for (int i = 0; i < all.length; i++) all[i] = (short) i;
        float[] f16 = new float[all.length], bf16 = new float[all.length];
        for (int i = 0; i < all.length; i++) {
            f16[i] = decodeF16(all[i]);
            bf16[i] = Float.intBitsToFloat(i << 16);
        }
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment host = arena.allocateFrom(ValueLayout.JAVA_SHORT, all);
            for (DType type : new DType[] {DType.F16, DType.BF16}) {
                float[] expected = type == DType.F16 ? f16 : bf16;
                try (Tensor widened = backend.upload(host, type, DType.F32, all.length);
                     Tensor narrow = backend.upload(host, type, type, all.length);
                     Tensor copied = backend.allocate(DType.F32, all.length)) {
                    backend.copy(narrow, copied);
                    assertSameFloats(type + " -> F32 by upload", backend.toFloats(widened), expected);
                    assertSameFloats(type + " -> F32 by copy", backend.toFloats(copied), expected);
                    assertSameFloats(type + " read back", backend.toFloats(narrow), expected);
                }
            }
        }
    }

    /**
     * Random floats of every magnitude plus the cases rounding gets wrong: ties at both parities, values just
     * either side of a tie, the largest finite values and the overflow threshold, subnormals, zeros, infinities
     * and NaN.
     */
    private static float[] conversionProbes(long seed) {
        RandomTensors random = new RandomTensors(seed);
        float[] specials = {0f, -0f, Float.MIN_VALUE, -Float.MIN_VALUE, Float.MIN_NORMAL, Float.MAX_VALUE, -Float.MAX_VALUE,
                Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY, Float.NaN, Float.intBitsToFloat(0xffc00001),
                Float.intBitsToFloat(0x3f808000), Float.intBitsToFloat(0x3f818000), Float.intBitsToFloat(0x3f808001),
                Float.intBitsToFloat(0x3f807fff), Float.intBitsToFloat(0x7f7f8000), Float.intBitsToFloat(0x7f7f7fff),
                1f + 0x1p-11f, 1f + 3 * 0x1p-11f, 1f + 0x1p-11f + 0x1p-23f, 65504f, 65519.99f, 65520f, -65520f, 70000f,
                0x1p-14f, 0x1p-24f, 0x1p-25f, 0x1.8p-25f, 0x1p-26f, 3 * 0x1p-25f, 6.1e-5f, 1e-8f, -2.9802322e-8f};
        int randomCount = 20_000;
        float[] values = Arrays.copyOf(specials, specials.length + randomCount);
        for (int i = 0; i < randomCount; i++) {
            int bits = random.between(Integer.MIN_VALUE, Integer.MAX_VALUE - 1);
            if (i % 2 == 0) bits = (bits & 0x80ffffff) | (random.between(90, 160) << 23); // mostly magnitudes that matter
            values[specials.length + i] = Float.intBitsToFloat(bits);
        }
        return values;
    }

    /**
     * f rounded to nearest even in a binary format with {@code precision} significand bits and minimum normal
     * exponent {@code minExp}, computed in double without the code under test: |f| is divided by the spacing of
     * representable values around it (exact: a power of two), Math.rint rounds half to even, and a result past
     * {@code maxFinite} overflows to infinity.
     */
    private static float nearest(float f, int precision, int minExp, double maxFinite) {
        if (Float.isNaN(f) || Float.isInfinite(f)) return f;
        double a = Math.abs((double) f);
        if (a == 0) return f;
        int e = Math.max(Math.getExponent(a), minExp);
        double spacing = Math.scalb(1.0, e - (precision - 1));
        double r = Math.rint(a / spacing) * spacing;
        if (r > maxFinite) r = Double.POSITIVE_INFINITY;
        return (float) Math.copySign(r, f);
    }

    /** IEEE binary16 decoded arithmetically: (-1)^s · 2^(e-15) · 1.m, subnormals 2^-14 · 0.m. */
    private static float decodeF16(short h) {
        int bits = h & 0xffff, sign = bits >>> 15, exp = (bits >>> 10) & 0x1f, mant = bits & 0x3ff;
        double magnitude;
        if (exp == 0x1f) magnitude = mant == 0 ? Double.POSITIVE_INFINITY : Double.NaN;
        else if (exp == 0) magnitude = Math.scalb((double) mant, -24);
        else magnitude = Math.scalb(1024.0 + mant, exp - 25);
        return (float) (sign == 1 ? -magnitude : magnitude);
    }

    private static double[] toDoubles(float[] v) {
        double[] d = new double[v.length];
        for (int i = 0; i < v.length; i++) d[i] = v[i];
        return d;
    }
}
