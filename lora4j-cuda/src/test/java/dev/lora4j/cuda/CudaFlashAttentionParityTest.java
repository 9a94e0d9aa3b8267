package dev.lora4j.cuda;

import dev.lora4j.backend.Backend;
import dev.lora4j.backend.cpu.CpuBackend;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Half;
import dev.lora4j.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.util.Locale;
import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * The tensor-core training attention of the CUDA backend (head sizes 64 and 128: {@link FlashAttention}) against
 * the CPU backend's FP32 attention. The tensor cores multiply q, k, v and dOut rounded to BF16, so the comparison
 * runs twice: on operands that already are BF16 values, where only the kernels' own roundings remain (probabilities
 * and score gradients rounded to BF16 between the two products of each pass) and every element is held to the bound
 * those roundings allow; and on FP32 operands, where rounding the operands adds errors of BF16's size. Shapes:
 * causal with n off the 64-row tiles, grouped-query heads (32/8, 8/2, 4/1) and one query head per KV head, sliding
 * windows shorter than n and inside one tile. Skips, with the probe's reason, where CUDA cannot run.
 */
class CudaFlashAttentionParityTest {
    /** The unit roundoff of BF16 (8 significant bits): a rounded value is within this much of the value, relatively. */
    private static final double U = 0x1p-8;
    /**
     * What FP32 arithmetic adds on either backend, relative to the tensor's largest element: sums of up to a few
     * hundred terms in different orders, and the GPU's exp2 and log2 (2 ulp).
     */
    private static final double FP32_SLACK = 1e-5;

    private static CudaBackend gpu;
    private static CpuBackend cpu;

    @RegisterExtension
    static final GpuAndCpu backends = GpuAndCpu.assigning((g, c) -> { gpu = g; cpu = c; });

    @ParameterizedTest
    @CsvSource({
            // n, nHeads, nKvHeads, headDim, window
            "130, 32, 8, 128, 0",  // Mistral's heads; causal, n two rows past the 64-row tiles
            "200, 4, 4, 64, 0",    // one query head per KV head
            "150, 8, 2, 128, 40",  // a window shorter than n: key tiles before it skipped, its edge masked
            "97, 4, 1, 64, 17",    // a window inside one tile; four query heads on one KV head
            "64, 2, 2, 128, 0",    // exactly one tile
            "70, 4, 2, 64, 2147483647", // a window longer than any sequence is no window
            "1, 4, 2, 64, 0"})
    void matchesTheCpuWithinTheRoundingOfProbabilitiesAndScoreGradients(int n, int nHeads, int nKvHeads, int headDim,
                                                                        int window) {
        Shape s = new Shape(n, nHeads, nKvHeads, headDim, window);
        float[] q = gaussian(n * s.qw(), 1, true), k = gaussian(n * s.kw(), 2, true);
        float[] v = gaussian(n * s.kw(), 3, true), dOut = gaussian(n * s.qw(), 4, true);
        Results g = results(gpu, s, q, k, v, dOut), c = results(cpu, s, q, k, v, dOut);
        Bounds b = bounds(s, q, k, v, dOut, c);
        String what = s.toString();
        assertWithin(what + " out", g.out, c.out, b.out);
        assertWithin(what + " lse", g.lse, c.lse, new double[c.lse.length]);
        assertWithin(what + " dq", g.dq, c.dq, b.dq);
        assertWithin(what + " dk", g.dk, c.dk, b.dk);
        assertWithin(what + " dv", g.dv, c.dv, b.dv);
    }

    @ParameterizedTest
    @CsvSource({"160, 4, 2, 128", "160, 2, 1, 64"})
    void matchesTheCpuWhenScoresSpreadFarBeyondTheForwardPassRescaleSlack(int n, int nHeads, int nKvHeads,
                                                                          int headDim) {
        // q and k 8 times larger (still BF16 values): scores of standard deviation ~90 in base 2, so that a row's
        // maximum often grows by more than the forward pass's slack of 2^8 from one key tile to the next (o and l
        // rescaled) as well as by less (exponents above 0 until the next rescale).
        Shape s = new Shape(n, nHeads, nKvHeads, headDim, 0);
        float[] q = gaussian(n * s.qw(), 25, true), k = gaussian(n * s.kw(), 26, true);
        for (int i = 0; i < q.length; i++) q[i] *= 8;
        for (int i = 0; i < k.length; i++) k[i] *= 8;
        float[] v = gaussian(n * s.kw(), 27, true), dOut = gaussian(n * s.qw(), 28, true);
        Results g = results(gpu, s, q, k, v, dOut), c = results(cpu, s, q, k, v, dOut);
        Bounds b = bounds(s, q, k, v, dOut, c);
        String what = s + ", spread scores";
        assertWithin(what + " out", g.out, c.out, b.out);
        assertWithin(what + " lse", g.lse, c.lse, new double[c.lse.length]);
        assertWithin(what + " dq", g.dq, c.dq, b.dq);
        assertWithin(what + " dk", g.dk, c.dk, b.dk);
        assertWithin(what + " dv", g.dv, c.dv, b.dv);
    }

    @ParameterizedTest
    @CsvSource({"100, 8, 2, 128, 0", "150, 8, 2, 64, 40"})
    void staysWithinBf16RoundingOfTheCpuOnFp32Operands(int n, int nHeads, int nKvHeads, int headDim, int window) {
        // Each rounded operand is off by at most U, on average U/sqrt(3) (uniform in its last place); out sums
        // products of two rounded operands, about sqrt(2/3) U relatively, and the gradients go through two such
        // products, about sqrt(2) times more. 2U over the whole tensor leaves room for the kernels' own roundings.
        Shape s = new Shape(n, nHeads, nKvHeads, headDim, window);
        float[] q = gaussian(n * s.qw(), 5, false), k = gaussian(n * s.kw(), 6, false);
        float[] v = gaussian(n * s.kw(), 7, false), dOut = gaussian(n * s.qw(), 8, false);
        Results g = results(gpu, s, q, k, v, dOut), c = results(cpu, s, q, k, v, dOut);
        String what = s + ", FP32 operands";
        assertCloseNorm(what + " out", g.out, c.out, 2 * U);
        assertCloseNorm(what + " lse", g.lse, c.lse, 2 * U);
        assertCloseNorm(what + " dq", g.dq, c.dq, 2 * U);
        assertCloseNorm(what + " dk", g.dk, c.dk, 2 * U);
        assertCloseNorm(what + " dv", g.dv, c.dv, 2 * U);
    }

    @ParameterizedTest
    @CsvSource({"64", "128"})
    void withAWindowOfOneEachQuerySeesItselfAndOnlyTheValuesGetGradients(int headDim) {
        // softmax over one score is exactly 1: out is v, dv sums dOut over the group (one FP32 addition, as in
        // Java); dq and dk are dS = P (dP - Dsum) times k or q, where dP and Dsum are the same exact products summed in
        // two orders, so they are 0 up to the FP32 rounding of those sums.
        Shape s = new Shape(70, 4, 2, headDim, 1);
        float[] q = gaussian(s.n * s.qw(), 9, true), k = gaussian(s.n * s.kw(), 10, true);
        float[] v = gaussian(s.n * s.kw(), 11, true), dOut = gaussian(s.n * s.qw(), 12, true);
        Results g = results(gpu, s, q, k, v, dOut);
        int qw = s.qw(), kw = s.kw();
        for (int t = 0; t < s.n; t++) {
            for (int h = 0; h < s.nHeads; h++) {
                int kvh = h / 2;
                double dotAbs = 0;
                for (int d = 0; d < headDim; d++) dotAbs += Math.abs((double) dOut[t * qw + h * headDim + d] * v[t * kw + kvh * headDim + d]);
                double dsBound = 2 * headDim * 0x1p-24 * dotAbs * (1 + U);
                for (int d = 0; d < headDim; d++) {
                    assertThat(g.out[t * qw + h * headDim + d]).as("out[%d, head %d, %d] is v", t, h, d)
                            .isEqualTo(v[t * kw + kvh * headDim + d]);
                    assertThat((double) Math.abs(g.dq[t * qw + h * headDim + d])).as("|dq[%d, head %d, %d]|", t, h, d)
                            .isLessThanOrEqualTo(s.scale() * dsBound * Math.abs(k[t * kw + kvh * headDim + d]) + 1e-30);
                }
            }
            for (int kvh = 0; kvh < s.nKvHeads; kvh++) {
                for (int d = 0; d < headDim; d++) {
                    float want = dOut[t * qw + 2 * kvh * headDim + d] + dOut[t * qw + (2 * kvh + 1) * headDim + d];
                    assertThat(g.dv[t * kw + kvh * headDim + d]).as("dv[%d, kv head %d, %d]", t, kvh, d).isEqualTo(want);
                    double dkBound = 0;
                    for (int h = 2 * kvh; h < 2 * kvh + 2; h++) {
                        double dotAbs = 0;
                        for (int e = 0; e < headDim; e++) dotAbs += Math.abs((double) dOut[t * qw + h * headDim + e] * v[t * kw + kvh * headDim + e]);
                        dkBound += s.scale() * 2 * headDim * 0x1p-24 * dotAbs * (1 + U) * Math.abs(q[t * qw + h * headDim + d]);
                    }
                    assertThat((double) Math.abs(g.dk[t * kw + kvh * headDim + d])).as("|dk[%d, kv head %d, %d]|", t, kvh, d)
                            .isLessThanOrEqualTo(dkBound + 1e-30);
                }
            }
        }
    }

    @Test
    void repeatedRunsGiveTheSameBits() {
        // No atomics: every output element is summed by one thread in a fixed order, the query heads of a KV head
        // in head order.
        Shape s = new Shape(100, 8, 2, 64, 0);
        float[] q = gaussian(s.n * s.qw(), 13, false), k = gaussian(s.n * s.kw(), 14, false);
        float[] v = gaussian(s.n * s.kw(), 15, false), dOut = gaussian(s.n * s.qw(), 16, false);
        Results first = results(gpu, s, q, k, v, dOut), second = results(gpu, s, q, k, v, dOut);
        assertThat(first.out).as("out").containsExactly(second.out);
        assertThat(first.lse).as("lse").containsExactly(second.lse);
        assertThat(first.dq).as("dq").containsExactly(second.dq);
        assertThat(first.dk).as("dk").containsExactly(second.dk);
        assertThat(first.dv).as("dv").containsExactly(second.dv);
    }

    @ParameterizedTest
    @CsvSource({"100, 8, 2, 64, 0, 0", "70, 4, 4, 128, 30, 3"})
    void bf16ActivationsGiveTheF32ResultsRoundedOnce(int n, int nHeads, int nKvHeads, int headDim, int window,
                                                     int offset) {
        // The kernels compute alike for both activation types and round only when they store: on BF16 values, the
        // BF16 outputs are the F32 outputs rounded. For the backward pass both get the same out (the BF16 one).
        // With an offset the BF16 operands start off the 16-byte alignment cp.async needs, and are copied first.
        Shape s = new Shape(n, nHeads, nKvHeads, headDim, window);
        float[] q = gaussian(n * s.qw(), 17, true), k = gaussian(n * s.kw(), 18, true);
        float[] v = gaussian(n * s.kw(), 19, true), dOut = gaussian(n * s.qw(), 20, true);
        Results wide = flash(s, DType.F32, q, k, v, dOut, null, 0);
        Results narrow = flash(s, DType.BF16, q, k, v, dOut, null, offset);
        assertThat(narrow.out).as("out").containsExactly(roundToBf16(wide.out));
        assertThat(narrow.lse).as("lse").containsExactly(wide.lse);
        Results wideOnNarrowOut = flash(s, DType.F32, q, k, v, dOut, narrow.out, 0);
        assertThat(narrow.dq).as("dq").containsExactly(roundToBf16(wideOnNarrowOut.dq));
        assertThat(narrow.dk).as("dk").containsExactly(roundToBf16(wideOnNarrowOut.dk));
        assertThat(narrow.dv).as("dv").containsExactly(roundToBf16(wideOnNarrowOut.dv));
    }

    @ParameterizedTest
    @CsvSource({
            // n, nHeads, nKvHeads, headDim, window, query heads per chunk of stored dS (0: dq recomputes it)
            "150, 4, 2, 128, 0, 0",
            "150, 4, 2, 64, 40, 0",   // recomputed under a window: its edge masked as well as the diagonal
            "150, 4, 2, 64, 0, 3",    // chunks of 3 heads and 1
            "130, 2, 2, 64, 40, 1",   // a window shorter than a tile: the band's rows hold 1, 2, 2 tiles
            "300, 2, 1, 64, 150, 1"}) // rows of 1, 2, 3, 4, 4 tiles
    void everyWayOfGettingDqMatchesTheCpuAndLeavesDkAndDvAlone(int n, int nHeads, int nKvHeads, int headDim,
                                                               int window, int dsChunk) {
        // Stored or recomputed, dS is the same BF16 product of the same P and dP; only the order in which dq sums
        // its key tiles differs. dk and dv do not depend on how dq is made.
        Shape s = new Shape(n, nHeads, nKvHeads, headDim, window);
        float[] q = gaussian(n * s.qw(), 21, true), k = gaussian(n * s.kw(), 22, true);
        float[] v = gaussian(n * s.kw(), 23, true), dOut = gaussian(n * s.qw(), 24, true);
        Results c = results(cpu, s, q, k, v, dOut);
        Bounds b = bounds(s, q, k, v, dOut, c);
        Results chunked = flash(s, DType.F32, q, k, v, dOut, null, 0, dsChunk);
        Results whole = flash(s, DType.F32, q, k, v, dOut, null, 0, nHeads);
        String what = s + ", dS chunk " + dsChunk;
        assertWithin(what + " dq", chunked.dq, c.dq, b.dq);
        assertThat(chunked.dk).as(what + " dk").containsExactly(whole.dk);
        assertThat(chunked.dv).as(what + " dv").containsExactly(whole.dv);
        assertWithin(what + " dk", chunked.dk, c.dk, b.dk);
        assertWithin(what + " dv", chunked.dv, c.dv, b.dv);
    }

    @ParameterizedTest
    @CsvSource({
            // n, nHeads, nKvHeads, headDim, window, type, scale of q and k
            "130, 4, 2, 128, 0, F32, 1",    // causal, n two rows past the tiles
            "130, 4, 2, 128, 0, BF16, 8",   // scores far beyond the rescale slack
            "200, 4, 1, 64, 0, BF16, 1",    // four query heads on one KV head: two blocks of two
            "150, 4, 2, 128, 40, F32, 1",   // a window shorter than n
            "97, 4, 2, 64, 17, BF16, 8",    // a window inside one tile
            "64, 4, 2, 64, 0, F32, 1",      // exactly one tile
            "1, 4, 2, 128, 0, BF16, 1"})
    void forwardBlocksOfTwoQueryHeadsGiveTheSameBitsAsBlocksOfOne(int n, int nHeads, int nKvHeads, int headDim,
                                                                  int window, DType type, float qkScale) {
        // The warps of each head in a two-head block compute their rows exactly as a one-head block does; only the
        // key and value tiles are shared.
        Shape s = new Shape(n, nHeads, nKvHeads, headDim, window);
        float[] q = gaussian(n * s.qw(), 29, true), k = gaussian(n * s.kw(), 30, true);
        float[] v = gaussian(n * s.kw(), 31, true);
        for (int i = 0; i < q.length; i++) q[i] *= qkScale;
        for (int i = 0; i < k.length; i++) k[i] *= qkScale;
        float[][] one = flashForward(s, type, q, k, v, 1), two = flashForward(s, type, q, k, v, 2);
        assertThat(two[0]).as(s + " out").containsExactly(one[0]);
        assertThat(two[1]).as(s + " lse").containsExactly(one[1]);
        for (float x : two[0]) assertThat(x).as(s + " out").isFinite();
    }

    @Test
    void forwardBlocksTakeTwoQueryHeadsOnlyWhereTheHeadsOfAKvHeadSplitSo() {
        assertThat(FlashAttention.headsPerBlock(32, 8, 2)).isEqualTo(2);
        assertThat(FlashAttention.headsPerBlock(32, 8, 1)).isEqualTo(1);
        assertThat(FlashAttention.headsPerBlock(12, 4, 2)).as("three heads per KV head").isEqualTo(1);
        assertThat(FlashAttention.headsPerBlock(8, 8, 2)).as("one head per KV head").isEqualTo(1);
        assertThat(FlashAttention.forwardSharedBytes(128, 2)).isEqualTo(6 * 64 * 136 * 2);
        FlashAttention fa = gpu.flashAttention();
        assertThatThrownBy(() -> fa.forward(0, 0, 0, DType.F32, 0, 0, 64, 12, 4, 128, 0, 2))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("3 query heads of a KV head");
    }

    @Test
    void scoreGradientsAreStoredWhereTheyFitTheBudgetInChunksThatStillFillAGpu() {
        // 32 heads of 1024 tokens: 136 tiles of 8 KiB per head, 36 MB in all; of 2048: 138 MB, two chunks of 16.
        assertThat(FlashAttention.dsChunkHeads(1024, 32, 0, FlashAttention.DS_BUDGET_BYTES)).isEqualTo(32);
        assertThat(FlashAttention.dsChunkHeads(2048, 32, 0, FlashAttention.DS_BUDGET_BYTES)).isEqualTo(16);
        // 4096 tokens: 17 MB per head, chunks of 7 heads would be 448 blocks at most: dq recomputes.
        assertThat(FlashAttention.dsChunkHeads(4096, 32, 0, FlashAttention.DS_BUDGET_BYTES)).isZero();
        // A window bounds the band: 8192 tokens with a window of 4096 see 65 key tiles at most.
        assertThat(FlashAttention.dsTiles(128, FlashAttention.dsBand(128, 4096))).isEqualTo(65 * 66 / 2 + 63 * 65);
        assertThat(FlashAttention.dsBand(16, Integer.MAX_VALUE)).isEqualTo(16);
        assertThat(FlashAttention.dsBand(16, 1)).isEqualTo(1);
        assertThat(FlashAttention.dsBand(16, 65)).isEqualTo(2);
        assertThat(FlashAttention.dsBand(16, 66)).isEqualTo(3);
        // Small problems fit whole, however few their blocks.
        assertThat(FlashAttention.dsChunkHeads(100, 8, 0, FlashAttention.DS_BUDGET_BYTES)).isEqualTo(8);
    }

    // ---- helpers ------------------------------------------------------------------------------------------

    /**
     * The tensor-core kernels called directly with activations of {@code type} (the backend's ops take F32 ones),
     * the operands q, k, v and dOut placed {@code offset} elements into their buffers; the backward pass
     * differentiates {@code givenOut} when it is not null, else the forward pass's out.
     */
    private static Results flash(Shape s, DType type, float[] q, float[] k, float[] v, float[] dOut, float[] givenOut,
                                 int offset) {
        return flash(s, type, q, k, v, dOut, givenOut, offset,
                FlashAttention.dsChunkHeads(s.n, s.nHeads, s.window, FlashAttention.DS_BUDGET_BYTES));
    }

    /** {@link #flash} with dS stored for {@code dsChunk} query heads at a time (0: recomputed by dq). */
    private static Results flash(Shape s, DType type, float[] q, float[] k, float[] v, float[] dOut, float[] givenOut,
                                 int offset, int dsChunk) {
        int n = s.n;
        FlashAttention fa = gpu.flashAttention();
        try (Tensor qt = gpu.fromFloats(shifted(q, offset), type, offset + q.length);
             Tensor kt = gpu.fromFloats(shifted(k, offset), type, offset + k.length);
             Tensor vt = gpu.fromFloats(shifted(v, offset), type, offset + v.length);
             Tensor dOutT = gpu.fromFloats(shifted(dOut, offset), type, offset + dOut.length);
             Tensor out = gpu.allocate(type, n, s.qw()); Tensor lse = gpu.allocate(DType.F32, n, s.nHeads);
             Tensor dq = gpu.allocate(type, n, s.qw()); Tensor dk = gpu.allocate(type, n, s.kw());
             Tensor dv = gpu.allocate(type, n, s.kw())) {
            long skip = (long) offset * type.bytesFor(1);
            fa.forward(address(qt) + skip, address(kt) + skip, address(vt) + skip, type, address(out), address(lse), n,
                    s.nHeads, s.nKvHeads, s.headDim, s.window);
            float[] outValues = gpu.toFloats(out);
            try (Tensor o = givenOut == null ? null : gpu.fromFloats(givenOut, type, n, s.qw())) {
                fa.backward(address(qt) + skip, address(kt) + skip, address(vt) + skip, type,
                        address(o == null ? out : o), address(lse), address(dOutT) + skip, address(dq), address(dk),
                        address(dv), n, s.nHeads, s.nKvHeads, s.headDim, s.window, dsChunk);
            }
            return new Results(outValues, gpu.toFloats(lse), gpu.toFloats(dq), gpu.toFloats(dk), gpu.toFloats(dv));
        }
    }

    /** out and lse of the forward kernel with blocks of {@code headsPerBlock} query heads, on activations of type. */
    private static float[][] flashForward(Shape s, DType type, float[] q, float[] k, float[] v, int headsPerBlock) {
        int n = s.n;
        FlashAttention fa = gpu.flashAttention();
        try (Tensor qt = gpu.fromFloats(q, type, n, s.qw()); Tensor kt = gpu.fromFloats(k, type, n, s.kw());
             Tensor vt = gpu.fromFloats(v, type, n, s.kw()); Tensor out = gpu.allocate(type, n, s.qw());
             Tensor lse = gpu.allocate(DType.F32, n, s.nHeads)) {
            fa.forward(address(qt), address(kt), address(vt), type, address(out), address(lse), n, s.nHeads,
                    s.nKvHeads, s.headDim, s.window, headsPerBlock);
            return new float[][] {gpu.toFloats(out), gpu.toFloats(lse)};
        }
    }

    private static long address(Tensor t) { return ((CudaTensor) t).address(); }

    /** {@code offset} zeros, then the values. */
    private static float[] shifted(float[] values, int offset) {
        float[] r = new float[offset + values.length];
        System.arraycopy(values, 0, r, offset, values.length);
        return r;
    }

    private static float[] roundToBf16(float[] values) {
        float[] r = new float[values.length];
        for (int i = 0; i < values.length; i++) r[i] = Half.bf16ToFloat(Half.floatToBf16(values[i]));
        return r;
    }

    private record Shape(int n, int nHeads, int nKvHeads, int headDim, int window) {
        int qw() { return nHeads * headDim; }

        int kw() { return nKvHeads * headDim; }

        float scale() { return (float) (1.0 / Math.sqrt(headDim)); }

        boolean attends(int i, int j) { return j <= i && (window <= 0 || i - j < window); }

        @Override public String toString() {
            return String.format(Locale.ROOT, "attention n=%d heads=%d/%d headDim=%d window=%d", n, nHeads, nKvHeads,
                    headDim, window);
        }
    }

    private record Results(float[] out, float[] lse, float[] dq, float[] dk, float[] dv) {}

    private record Bounds(double[] out, double[] dq, double[] dk, double[] dv) {}

    /** Forward and backward on one backend; it differentiates its own forward pass, as training does. */
    private static Results results(Backend b, Shape s, float[] q, float[] k, float[] v, float[] dOut) {
        int n = s.n;
        try (Tensor qt = b.fromFloats(q, DType.F32, n, s.qw()); Tensor kt = b.fromFloats(k, DType.F32, n, s.kw());
             Tensor vt = b.fromFloats(v, DType.F32, n, s.kw()); Tensor dOutT = b.fromFloats(dOut, DType.F32, n, s.qw());
             Tensor out = b.allocate(DType.F32, n, s.qw()); Tensor lse = b.allocate(DType.F32, n, s.nHeads);
             Tensor dq = b.allocate(DType.F32, n, s.qw()); Tensor dk = b.allocate(DType.F32, n, s.kw());
             Tensor dv = b.allocate(DType.F32, n, s.kw())) {
            b.attentionForward(qt, kt, vt, s.nHeads, s.nKvHeads, s.headDim, s.window, out, lse);
            b.attentionBackward(qt, kt, vt, out, lse, dOutT, s.nHeads, s.nKvHeads, s.headDim, s.window, dq, dk, dv);
            return new Results(b.toFloats(out), b.toFloats(lse), b.toFloats(dq), b.toFloats(dk), b.toFloats(dv));
        }
    }

    /**
     * Per element, how far the tensor-core results may be from the exact ones when the operands are BF16 values,
     * to first order in U, computed in double from the CPU's results (P from its lse):
     * <ul>
     * <li>out = Σ_j P_ij v_j with each P_ij rounded to BF16: |Δout_id| <= U Σ_j P_ij |v_jd|;
     * <li>Dsum_i = dO_i · out_i inherits that: |ΔDsum_i| <= Σ_d |dO_id| |Δout_id| =: E_i;
     * <li>dv_j = Σ_i P_ij dO_i with P rounded: U Σ_i P_ij |dO_id|;
     * <li>dS_ij = P_ij (dO_i · v_j - Dsum_i) is off by P_ij E_i and rounded to BF16 (U |dS_ij|) before it
     * multiplies k (dq = scale Σ_j dS_ij k_j) and q (dk = scale Σ_i dS_ij q_i).
     * </ul>
     * dk and dv add their bounds over the query heads of a KV head.
     */
    private static Bounds bounds(Shape s, float[] q, float[] k, float[] v, float[] dOut, Results cpuResults) {
        int n = s.n, hd = s.headDim, qw = s.qw(), kw = s.kw(), group = s.nHeads / s.nKvHeads;
        double scale = s.scale();
        double[] out = new double[n * qw], dq = new double[n * qw], dk = new double[n * kw], dv = new double[n * kw];
        double[] p = new double[n], ds = new double[n];
        for (int h = 0; h < s.nHeads; h++) {
            int qo = h * hd, ko = h / group * hd;
            for (int i = 0; i < n; i++) {
                double lse = cpuResults.lse[i * s.nHeads + h];
                for (int j = 0; j <= i; j++) {
                    if (!s.attends(i, j)) {
                        p[j] = 0;
                        continue;
                    }
                    double dot = 0;
                    for (int d = 0; d < hd; d++) dot += (double) q[i * qw + qo + d] * k[j * kw + ko + d];
                    p[j] = Math.exp(dot * scale - lse);
                }
                double e = 0, dsum = 0;
                for (int d = 0; d < hd; d++) {
                    double bound = 0;
                    for (int j = 0; j <= i; j++) bound += p[j] * Math.abs(v[j * kw + ko + d]);
                    out[i * qw + qo + d] = U * bound;
                    e += Math.abs(dOut[i * qw + qo + d]) * U * bound;
                    dsum += (double) dOut[i * qw + qo + d] * cpuResults.out[i * qw + qo + d];
                }
                for (int j = 0; j <= i; j++) {
                    if (p[j] == 0) continue;
                    double dp = 0;
                    for (int d = 0; d < hd; d++) dp += (double) dOut[i * qw + qo + d] * v[j * kw + ko + d];
                    ds[j] = U * Math.abs(p[j] * (dp - dsum)) + p[j] * e;  // the error of dS_ij
                    for (int d = 0; d < hd; d++) {
                        dq[i * qw + qo + d] += scale * ds[j] * Math.abs(k[j * kw + ko + d]);
                        dk[j * kw + ko + d] += scale * ds[j] * Math.abs(q[i * qw + qo + d]);
                        dv[j * kw + ko + d] += U * p[j] * Math.abs(dOut[i * qw + qo + d]);
                    }
                }
            }
        }
        return new Bounds(out, dq, dk, dv);
    }

    /** |got - want| <= bound (first order) + the FP32 slack, for every element; NaN fails. */
    private static void assertWithin(String what, float[] got, float[] want, double[] bound) {
        double largest = 0;
        for (float w : want) largest = Math.max(largest, Math.abs(w));
        double slack = FP32_SLACK * Math.max(largest, 1e-3);
        for (int i = 0; i < want.length; i++) {
            double diff = Math.abs((double) got[i] - want[i]);
            double allowed = bound[i] * (1 + 4 * U) + slack; // 4U: the second-order terms
            if (!(diff <= allowed)) {
                throw new AssertionError(String.format(Locale.ROOT,
                        "%s: element %d of %d is %s on the GPU, %s on the CPU: off by %.3g, more than the %.3g allowed",
                        what, i, want.length, got[i], want[i], diff, allowed));
            }
        }
    }

    /** ||got - want|| / ||want|| over the whole tensor. */
    private static void assertCloseNorm(String what, float[] got, float[] want, double tolerance) {
        double num = 0, den = 0;
        for (int i = 0; i < want.length; i++) {
            double d = (double) got[i] - want[i];
            num += d * d;
            den += (double) want[i] * want[i];
        }
        assertThat(Math.sqrt(num / Math.max(den, 1e-300))).as(what + ": relative error (norm)").isLessThanOrEqualTo(tolerance);
    }

    /** Seeded Gaussian values, rounded to BF16 values when {@code bf16Values}. */
    private static float[] gaussian(int count, long seed, boolean bf16Values) {
        Random r = new Random(seed * 7919 + count);
        float[] v = new float[count];
        for (int i = 0; i < count; i++) {
            float x = (float) r.nextGaussian();
            v[i] = bf16Values ? Half.bf16ToFloat(Half.floatToBf16(x)) : x;
        }
        return v;
    }
}
