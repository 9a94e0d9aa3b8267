package dev.lora4j.cuda;

import dev.lora4j.backend.DropoutHash;
import dev.lora4j.backend.HostConversions;
import dev.lora4j.backend.cpu.CpuBackend;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import org.junit.jupiter.api.Test;
import dev.lora4j.cuda.GpuAndCpu.Pair;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import java.util.Locale;
import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeFalse;

/**
 * Every training op of the CUDA backend against the CPU backend (the reference) on the same random inputs: shapes
 * on and beside the GPU's tile sizes, grouped-query heads, sliding windows, head sizes of every kernel class,
 * 16-bit weights, accumulation, views, aliasing outputs, ignored cross-entropy rows. The optimizer and dropout must
 * match bit for bit. Skips, with the probe's reason, where the CUDA backend cannot run.
 */
class CudaTrainingParityTest {
    private static CudaBackend gpu;
    private static CpuBackend cpu;

    @RegisterExtension
    static final GpuAndCpu backends = GpuAndCpu.assigning((g, c) -> { gpu = g; cpu = c; });

    // ---- matmul backward ----------------------------------------------------------------------------------

    @ParameterizedTest
    @CsvSource({
            // n, k, m, weight type, accumulate
            "1, 64, 96, BF16, false", "5, 100, 37, BF16, true", "17, 257, 129, BF16, false", "64, 1024, 512, BF16, true",
            "3, 4096, 1000, BF16, false", "7, 33, 19, F32, true", "40, 777, 201, F32, false", "9, 300, 33, F16, true",
            "1, 16, 4096, F16, false",
            "3, 4100, 8200, F16, true"}) // w has more than F16_WIDEN_CHUNK_ELEMENTS: widened in two slices
    void matmulBackwardInputMatchesTheCpuOnGradientsRoundedToTheWeightType(int n, int k, int m, DType wt, boolean accumulate) {
        assumeFalse(emulated() && (long) k * m > 10_000_000, "too large for the device emulator");
        float[] dy = random(n * m, 1, 1f);
        float[] w = random(m * k, 2, 0.5f);
        // BF16 weights multiply dY rounded to BF16 on the GPU: give the CPU the same rounded dY.
        float[] dyRounded = wt == DType.BF16 ? roundTo(dy, DType.BF16) : dy;
        float[] start = accumulate ? random(n * k, 3, 1f) : new float[n * k];
        String what = String.format(Locale.ROOT, "matmulBackwardInput n=%d k=%d m=%d %s%s", n, k, m, wt, accumulate ? " accumulate" : "");
        try (Tensor gdy = gpu.fromFloats(dy, DType.F32, n, m); Tensor cdy = cpu.fromFloats(dyRounded, DType.F32, n, m);
             Pair ws = backends.pair(w, wt, m, k); Pair dx = backends.pair(start, DType.F32, n, k)) {
            gpu.matmulBackwardInput(gdy, ws.g(), dx.g(), accumulate);
            cpu.matmulBackwardInput(cdy, ws.c(), dx.c(), accumulate);
            assertCloseNorm(dx, 1e-5, what);
        }
    }

    @ParameterizedTest
    @CsvSource({
            // n, k, m, slice: F16 weights widened a slice of rows at a time, the last slice shorter
            "5, 100, 37, 1000", "1, 64, 96, 64", "17, 33, 130, 3300", "4, 50, 9, 1"})
    void matmulBackwardInputWithF16WeightsAddsUpItsSlices(int n, int k, int m, long sliceElements) {
        float[] dy = random(n * m, 45, 1f), w = random(m * k, 46, 0.5f), start = random(n * k, 47, 1f);
        try (Pair dys = backends.pair(dy, DType.F32, n, m); Pair ws = backends.pair(w, DType.F16, m, k); Pair dx = backends.pair(start, DType.F32, n, k)) {
            gpu.matmulBackwardInput(dys.g(), ws.g(), dx.g(), true, sliceElements);
            cpu.matmulBackwardInput(dys.c(), ws.c(), dx.c(), true);
            assertCloseNorm(dx, 1e-5, "matmulBackwardInput F16 in slices of " + sliceElements + " elements");
            gpu.matmulBackwardInput(dys.g(), ws.g(), dx.g(), false, sliceElements);
            cpu.matmulBackwardInput(dys.c(), ws.c(), dx.c(), false);
            assertCloseNorm(dx, 1e-5, "matmulBackwardInput F16 in slices of " + sliceElements + " elements, overwriting");
        }
    }

    @ParameterizedTest
    @CsvSource({
            // n, k, m, x type, accumulate
            "1, 64, 96, F32, false", "300, 1030, 16, F32, true", "300, 16, 520, F32, false", "2049, 128, 64, F32, true",
            "17, 33, 19, BF16, false", "65, 100, 13, F16, true", "4096, 4096, 16, F32, false"})
    void matmulBackwardWeightMatchesTheCpu(int n, int k, int m, DType xType, boolean accumulate) {
        assumeFalse(emulated() && (long) n * k * m > 100_000_000, "too large for the device emulator");
        float[] dy = random(n * m, 4, 1f);
        float[] x = random(n * k, 5, 1f);
        float[] start = accumulate ? random(m * k, 6, 1f) : new float[m * k];
        String what = String.format(Locale.ROOT, "matmulBackwardWeight n=%d k=%d m=%d x %s%s", n, k, m, xType, accumulate ? " accumulate" : "");
        try (Pair dys = backends.pair(dy, DType.F32, n, m); Pair xs = backends.pair(x, xType, n, k); Pair dw = backends.pair(start, DType.F32, m, k)) {
            gpu.matmulBackwardWeight(dys.g(), xs.g(), dw.g(), accumulate);
            cpu.matmulBackwardWeight(dys.c(), xs.c(), dw.c(), accumulate);
            assertCloseNorm(dw, 1e-5, what);
        }
    }

    @Test
    void matmulBackwardOpsWorkOnViewsThatAreNotAlignedToTiles() {
        int n = 7, k = 33, m = 19;
        try (Pair dy = backends.pair(random((n + 1) * m, 7, 1f), DType.F32, n + 1, m); Pair w = backends.pair(random((m + 1) * k, 8, 1f), DType.F32, m + 1, k);
             Pair x = backends.pair(random((n + 1) * k, 9, 1f), DType.F32, n + 1, k);
             Pair dx = backends.zeros(DType.F32, n + 1, k); Pair dw = backends.zeros(DType.F32, m + 1, k)) {
            // Offsets of one row: 19 or 33 floats, 4-byte aligned addresses only.
            gpu.matmulBackwardInput(dy.g().rows(1, n), w.g().rows(1, m), dx.g().rows(1, n), false);
            cpu.matmulBackwardInput(dy.c().rows(1, n), w.c().rows(1, m), dx.c().rows(1, n), false);
            gpu.matmulBackwardWeight(dy.g().rows(1, n), x.g().rows(1, n), dw.g().rows(1, m), false);
            cpu.matmulBackwardWeight(dy.c().rows(1, n), x.c().rows(1, n), dw.c().rows(1, m), false);
            assertCloseNorm(dx, 1e-5, "matmulBackwardInput on views");
            assertCloseNorm(dw, 1e-5, "matmulBackwardWeight on views");
            assertThat(Arrays.copyOfRange(gpu.toFloats(dx.g()), 0, k)).as("row before the dX view").containsOnly(0f);
            assertThat(Arrays.copyOfRange(gpu.toFloats(dw.g()), 0, k)).as("row before the dW view").containsOnly(0f);
        }
    }

    @ParameterizedTest
    @CsvSource({"1, 1", "3, 17", "4096, 64", "33, 4100", "1000, 1000"})
    void sumRowsAddsColumnSumsAsTheCpuDoes(int rows, int cols) {
        try (Pair dy = backends.pair(random(rows * cols, 10, 1f), DType.F32, rows, cols); Pair bias = backends.pair(random(cols, 11, 1f), DType.F32, cols)) {
            gpu.sumRows(dy.g(), bias.g());
            cpu.sumRows(dy.c(), bias.c());
            assertClose(bias, 1e-5, "sumRows " + rows + "x" + cols);
        }
    }

    // ---- attention ----------------------------------------------------------------------------------------

    // Head sizes 64 and 128 run on the tensor cores with BF16 operands: CudaFlashAttentionParityTest. The FP32
    // kernels serve every other size, in classes of up to 64, 128 and 256.
    @ParameterizedTest
    @CsvSource({
            // n, nHeads, nKvHeads, headDim, window: around the 32-row tiles, every head-size class, GQA, windows
            "1, 1, 1, 48, 0", "31, 4, 2, 40, 0", "32, 4, 4, 56, 0", "33, 8, 2, 112, 0", "100, 8, 2, 120, 16",
            "257, 4, 1, 80, 0", "70, 2, 2, 256, 40", "65, 6, 3, 96, 31", "96, 2, 1, 17, 0",
            "200, 4, 4, 72, 64", "64, 3, 1, 200, 0", "5, 2, 2, 4, 2", "130, 4, 2, 104, 2"})
    void attentionForwardAndBackwardMatchTheCpu(int n, int nHeads, int nKvHeads, int headDim, int window) {
        long qw = (long) nHeads * headDim, kw = (long) nKvHeads * headDim;
        String what = String.format(Locale.ROOT, "attention n=%d heads=%d/%d headDim=%d window=%d", n, nHeads, nKvHeads, headDim, window);
        try (Pair q = backends.pair(random((int) (n * qw), 12, 1f), DType.F32, n, qw); Pair k = backends.pair(random((int) (n * kw), 13, 1f), DType.F32, n, kw);
             Pair v = backends.pair(random((int) (n * kw), 14, 1f), DType.F32, n, kw); Pair dOut = backends.pair(random((int) (n * qw), 15, 1f), DType.F32, n, qw);
             Pair out = backends.zeros(DType.F32, n, qw); Pair lse = backends.zeros(DType.F32, n, nHeads);
             Pair dq = backends.zeros(DType.F32, n, qw); Pair dk = backends.zeros(DType.F32, n, kw); Pair dv = backends.zeros(DType.F32, n, kw)) {
            gpu.attentionForward(q.g(), k.g(), v.g(), nHeads, nKvHeads, headDim, window, out.g(), lse.g());
            cpu.attentionForward(q.c(), k.c(), v.c(), nHeads, nKvHeads, headDim, window, out.c(), lse.c());
            assertClose(out, 1e-5, what + " out");
            assertClose(lse, 1e-5, what + " lse");
            // Each backend differentiates its own forward pass (as training does). Where a query sees one key only
            // (the first position) its dq is 0 up to rounding: the scale has a floor of 0.1, the size of these
            // gradients for inputs of unit size, so that rounding noise is not measured against itself.
            gpu.attentionBackward(q.g(), k.g(), v.g(), out.g(), lse.g(), dOut.g(), nHeads, nKvHeads, headDim, window, dq.g(), dk.g(), dv.g());
            cpu.attentionBackward(q.c(), k.c(), v.c(), out.c(), lse.c(), dOut.c(), nHeads, nKvHeads, headDim, window, dq.c(), dk.c(), dv.c());
            assertClose(dq, 1e-4, 0.1, what + " dq");
            assertClose(dk, 1e-4, 0.1, what + " dk");
            assertClose(dv, 1e-4, 0.1, what + " dv");
        }
    }

    @Test
    void withAWindowOfOneEachQueryAttendsToItselfAndOnlyTheValuesGetGradients() {
        // softmax over one score is 1 whatever the score: dq and dk are exactly 0, dv[t] sums dOut[t] over the group
        // (up to the rounding of the recomputed probability, exp of a few ulps of the score). The FP32 kernels' head
        // size: CudaFlashAttentionParityTest has this for the tensor cores'.
        int n = 70, nHeads = 4, nKvHeads = 2, headDim = 48;
        int qw = nHeads * headDim, kw = nKvHeads * headDim;
        float[] dOut = random(n * qw, 48, 1f), v = random(n * kw, 49, 1f);
        try (Tensor q = gpu.fromFloats(random(n * qw, 50, 1f), DType.F32, n, qw); Tensor k = gpu.fromFloats(random(n * kw, 51, 1f), DType.F32, n, kw);
             Tensor vt = gpu.fromFloats(v, DType.F32, n, kw); Tensor dOutT = gpu.fromFloats(dOut, DType.F32, n, qw);
             Tensor out = gpu.allocate(DType.F32, n, qw); Tensor lse = gpu.allocate(DType.F32, n, nHeads);
             Tensor dq = gpu.allocate(DType.F32, n, qw); Tensor dk = gpu.allocate(DType.F32, n, kw); Tensor dv = gpu.allocate(DType.F32, n, kw)) {
            gpu.attentionForward(q, k, vt, nHeads, nKvHeads, headDim, 1, out, lse);
            float[] o = gpu.toFloats(out);
            for (int t = 0; t < n; t++) {
                for (int h = 0; h < nHeads; h++) {
                    for (int d = 0; d < headDim; d++) {
                        assertThat(o[t * qw + h * headDim + d]).as("out[%d, head %d] is v", t, h).isEqualTo(v[t * kw + h / 2 * headDim + d]);
                    }
                }
            }
            gpu.attentionBackward(q, k, vt, out, lse, dOutT, nHeads, nKvHeads, headDim, 1, dq, dk, dv);
            assertThat(gpu.toFloats(dq)).as("dq").containsOnly(0f);
            assertThat(gpu.toFloats(dk)).as("dk").containsOnly(0f);
            float[] got = gpu.toFloats(dv);
            for (int t = 0; t < n; t++) {
                for (int g = 0; g < nKvHeads; g++) {
                    for (int d = 0; d < headDim; d++) {
                        float want = dOut[t * qw + 2 * g * headDim + d] + dOut[t * qw + (2 * g + 1) * headDim + d];
                        assertThat(got[t * kw + g * headDim + d]).as("dv[%d, kv head %d, %d]", t, g, d)
                                .isCloseTo(want, org.assertj.core.data.Offset.offset(1e-5f * (1 + Math.abs(want))));
                    }
                }
            }
        }
    }

    @Test
    void attentionBackwardOfAThousandPositionsAndThirtyTwoHeadsTakesMillisecondsNotSeconds() {
        assumeFalse(emulated(), "timing means nothing on the device emulator");
        int n = 1024, nHeads = 32, nKvHeads = 8, headDim = 128;
        long qw = (long) nHeads * headDim, kw = (long) nKvHeads * headDim;
        try (Tensor q = gpu.fromFloats(random((int) (n * qw), 16, 1f), DType.F32, n, qw);
             Tensor k = gpu.fromFloats(random((int) (n * kw), 17, 1f), DType.F32, n, kw);
             Tensor v = gpu.fromFloats(random((int) (n * kw), 18, 1f), DType.F32, n, kw);
             Tensor dOut = gpu.fromFloats(random((int) (n * qw), 19, 1f), DType.F32, n, qw);
             Tensor out = gpu.allocate(DType.F32, n, qw); Tensor lse = gpu.allocate(DType.F32, n, nHeads);
             Tensor dq = gpu.allocate(DType.F32, n, qw); Tensor dk = gpu.allocate(DType.F32, n, kw); Tensor dv = gpu.allocate(DType.F32, n, kw)) {
            long best = Long.MAX_VALUE;
            for (int round = 0; round < 3; round++) { // the first round loads the kernels and sets their shared memory
                gpu.synchronize();
                long start = System.nanoTime();
                gpu.attentionForward(q, k, v, nHeads, nKvHeads, headDim, 0, out, lse);
                gpu.attentionBackward(q, k, v, out, lse, dOut, nHeads, nKvHeads, headDim, 0, dq, dk, dv);
                gpu.synchronize();
                best = Math.min(best, System.nanoTime() - start);
            }
            System.out.printf(Locale.ROOT, "attention forward + backward, %d positions, %d/%d heads of %d: %.2f ms%n",
                    n, nHeads, nKvHeads, headDim, best / 1e6);
            for (Tensor t : new Tensor[] {dq, dk, dv}) {
                for (float f : gpu.toFloats(t)) assertThat(Float.isFinite(f)).as("finite gradient").isTrue();
            }
            assertThat(best / 1e6).as("milliseconds for forward + backward").isLessThan(500);
        }
    }

    @Test
    void attentionBackwardRejectsHeadsLargerThanItsKernels() {
        try (Tensor q = gpu.allocate(DType.F32, 2, 300); Tensor lse = gpu.allocate(DType.F32, 2, 1);
             Tensor dq = gpu.allocate(DType.F32, 2, 300)) {
            assertThatThrownBy(() -> gpu.attentionBackward(q, q, q, q, lse, q, 1, 1, 300, 0, dq, dq, dq))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("attentionBackward")
                    .hasMessageContaining("headDim 300");
        }
    }

    // ---- per-row and element-wise backward forms ----------------------------------------------------------

    @ParameterizedTest
    @CsvSource({"1, 3, F32, true", "7, 4096, BF16, true", "33, 1100, F32, false", "64, 5000, F16, true", "3, 896, BF16, false",
            "300, 64, F32, true"})
    void rmsNormBackwardMatchesTheCpu(int rows, int d, DType weightType, boolean weightGradient) {
        String what = "rmsNormBackward rows=" + rows + " d=" + d + " " + weightType;
        try (Pair x = backends.pair(random(rows * d, 20, 3f), DType.F32, rows, d); Pair w = backends.pair(random(d, 21, 1f), weightType, d);
             Pair dy = backends.pair(random(rows * d, 22, 1f), DType.F32, rows, d); Pair dx = backends.zeros(DType.F32, rows, d);
             Pair dw = weightGradient ? backends.pair(random(d, 23, 1f), DType.F32, d) : null) {
            gpu.rmsNormBackward(x.g(), w.g(), 1e-5f, dy.g(), dx.g(), dw == null ? null : dw.g());
            cpu.rmsNormBackward(x.c(), w.c(), 1e-5f, dy.c(), dx.c(), dw == null ? null : dw.c());
            assertClose(dx, 1e-5, what + " dX");
            if (dw != null) assertCloseNorm(dw, 1e-5, what + " dWeight");
        }
    }

    @Test
    void rmsNormBackwardMayOverwriteItsOutputGradient() {
        int rows = 9, d = 300;
        float[] x = random(rows * d, 24, 2f), dy = random(rows * d, 25, 1f), w = random(d, 26, 1f);
        try (Tensor xs = gpu.fromFloats(x, DType.F32, rows, d); Tensor ws = gpu.fromFloats(w, DType.BF16, d);
             Tensor dys = gpu.fromFloats(dy, DType.F32, rows, d); Tensor dx = gpu.allocate(DType.F32, rows, d);
             Tensor dw = gpu.allocate(DType.F32, d); Tensor dwInPlace = gpu.allocate(DType.F32, d)) {
            gpu.rmsNormBackward(xs, ws, 1e-6f, dys, dx, dw);
            gpu.rmsNormBackward(xs, ws, 1e-6f, dys, dys, dwInPlace); // dX written over dOut
            assertSameFloats("dX in place of dOut", gpu.toFloats(dys), gpu.toFloats(dx));
            assertSameFloats("dWeight with dX in place of dOut", gpu.toFloats(dwInPlace), gpu.toFloats(dw));
        }
    }

    @Test
    void ropeBackwardMatchesTheCpuAndUndoesRope() {
        int n = 33, headDim = 128, heads = 4;
        float[] inv = new float[headDim / 2];
        for (int j = 0; j < inv.length; j++) inv[j] = (float) (1.0 / Math.pow(500000, 2.0 * j / headDim));
        int[] positions = new int[n];
        Random r = new Random(27);
        for (int i = 0; i < n; i++) positions[i] = i < 2 ? i : r.nextInt(131072);
        float[] x = random(n * heads * headDim, 28, 2f);
        try (Pair t = backends.pair(x, DType.F32, n, heads * headDim); Pair f = backends.pair(inv, DType.F32, headDim / 2)) {
            gpu.ropeBackward(t.g(), headDim, positions, f.g());
            cpu.ropeBackward(t.c(), headDim, positions, f.c());
            assertClose(t, 1e-5, "ropeBackward");
            gpu.rope(t.g(), headDim, positions, f.g());
            float[] back = gpu.toFloats(t.g());
            for (int i = 0; i < x.length; i++) assertThat(back[i]).as("rope(ropeBackward(x)) element %d", i).isCloseTo(x[i], org.assertj.core.data.Offset.offset(1e-5f));
        }
    }

    @Test
    void swigluBackwardMatchesTheCpuIncludingSaturatedGatesAndInPlaceOutputs() {
        int count = 100_003;
        float[] gate = random(count, 29, 8f);
        gate[0] = -100f;
        gate[1] = 100f;
        gate[2] = 0f;
        gate[3] = -88.5f;
        try (Pair g = backends.pair(gate, DType.F32, count); Pair u = backends.pair(random(count, 30, 2f), DType.F32, count);
             Pair dy = backends.pair(random(count, 31, 1f), DType.F32, count); Pair dg = backends.zeros(DType.F32, count); Pair du = backends.zeros(DType.F32, count)) {
            gpu.swigluBackward(g.g(), u.g(), dy.g(), dg.g(), du.g());
            cpu.swigluBackward(g.c(), u.c(), dy.c(), dg.c(), du.c());
            assertClose(dg, 1e-6, "swigluBackward dGate");
            assertClose(du, 1e-6, "swigluBackward dUp");
            for (float f : gpu.toFloats(dg.g())) assertThat(Float.isFinite(f)).as("finite dGate").isTrue();
            gpu.swigluBackward(g.g(), u.g(), dy.g(), g.g(), u.g()); // gradients over their inputs
            assertSameFloats("dGate in place of gate", gpu.toFloats(g.g()), gpu.toFloats(dg.g()));
            assertSameFloats("dUp in place of up", gpu.toFloats(u.g()), gpu.toFloats(du.g()));
        }
    }

    @Test
    void embeddingBackwardAddsRepeatedTokensRowsAsTheCpuDoes() {
        int vocab = 1000, d = 4096;
        int[] ids = {5, 999, 5, 0, 17, 5, 999, 3, 5};
        try (Pair dy = backends.pair(random(ids.length * d, 32, 1f), DType.F32, ids.length, d); Pair table = backends.pair(random(vocab * d, 33, 1f), DType.F32, vocab, d)) {
            gpu.embeddingBackward(ids, dy.g(), table.g());
            cpu.embeddingBackward(ids, dy.c(), table.c());
            assertClose(table, 1e-6, "embeddingBackward");
            assertThatThrownBy(() -> gpu.embeddingBackward(new int[] {1, 1000, 2, 3, 4, 5, 6, 7, 8}, dy.g(), table.g()))
                    .isInstanceOf(IndexOutOfBoundsException.class).hasMessageContaining("token id 1000");
        }
    }

    // ---- loss and optimizer -------------------------------------------------------------------------------

    @ParameterizedTest
    // Rows held in registers (up to 32,768 logits) and streamed (longer), on both sides of the limit.
    @CsvSource({"1, 0.5", "17, 1", "32000, 0.125", "32768, 0.25", "32769, 0.25", "152064, 0.01"})
    void crossEntropyMatchesTheCpuAndZeroesIgnoredRows(int vocab, float gradScale) {
        int n = 6;
        float[] logits = random(n * vocab, 34, 4f);
        logits[3 * vocab] = 150f; // one dominant logit: e^150 overflows FP32 without the running maximum
        int[] targets = {0, vocab - 1, -100, Math.min(vocab - 1, 7), -1, vocab / 2};
        String what = "crossEntropy vocab=" + vocab;
        try (Pair l = backends.pair(logits, DType.F32, n, vocab); Pair losses = backends.zeros(DType.F32, n)) {
            gpu.crossEntropy(l.g(), targets, gradScale, losses.g());
            cpu.crossEntropy(l.c(), targets, gradScale, losses.c());
            assertClose(losses, 1e-6, what + " losses");
            assertClose(l, 1e-6, what + " gradient");
            float[] grad = gpu.toFloats(l.g()), loss = gpu.toFloats(losses.g());
            for (int row : new int[] {2, 4}) {
                assertThat(Arrays.copyOfRange(grad, row * vocab, (row + 1) * vocab)).as("%s ignored row %d", what, row).containsOnly(0f);
                assertThat(loss[row]).as("%s loss of ignored row %d", what, row).isZero();
            }
            assertThatThrownBy(() -> gpu.crossEntropy(l.g(), new int[] {0, vocab, 0, 0, 0, 0}, 1f, losses.g()))
                    .isInstanceOf(IndexOutOfBoundsException.class).hasMessageContaining("row 1");
        }
    }

    @Test
    void adamwStepsAreTheCpusBitForBit() {
        int count = emulated() ? 100_003 : 1_000_003;
        float[] initial = random(count, 35, 0.5f);
        try (Pair p = backends.pair(initial, DType.F32, count); Pair m = backends.zeros(DType.F32, count); Pair v = backends.zeros(DType.F32, count)) {
            for (int step = 1; step <= 5; step++) {
                float[] grad = random(count, 36 + step, step == 3 ? 1e-6f : 0.05f);
                grad[step] = 0f;
                try (Pair g = backends.pair(grad, DType.F32, count)) {
                    gpu.adamw(p.g(), g.g(), m.g(), v.g(), 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, step);
                    cpu.adamw(p.c(), g.c(), m.c(), v.c(), 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, step);
                }
                assertSameBits(p, "adamw param after step " + step);
                assertSameBits(m, "adamw m after step " + step);
                assertSameBits(v, "adamw v after step " + step);
            }
        }
    }

    @Test
    void sumOfSquaresMatchesTheCpuToDoublePrecision() {
        for (int count : new int[] {1, 255, 256, 257, emulated() ? 300_007 : 4_000_037}) {
            float[] x = random(count, 41, 3f);
            x[0] = 3e19f;
            try (Pair t = backends.pair(x, DType.F32, count)) {
                double g = gpu.sumOfSquares(t.g()), c = cpu.sumOfSquares(t.c());
                assertThat(Math.abs(g - c)).as("sumOfSquares of %d values: GPU %s, CPU %s", count, g, c).isLessThanOrEqualTo(1e-12 * c);
            }
        }
        try (Tensor empty = gpu.allocate(DType.F32, 0)) {
            assertThat(gpu.sumOfSquares(empty)).isZero();
        }
    }

    @Test
    void scaleIsTheCpusFloatProductAndZeroClears() {
        int count = 70_001;
        try (Pair t = backends.pair(random(count, 42, 5f), DType.F32, count); Tensor h = gpu.fromFloats(random(count, 43, 1f), DType.BF16, count)) {
            gpu.scale(t.g(), 0.37f);
            cpu.scale(t.c(), 0.37f);
            assertSameBits(t, "scale");
            gpu.zero(t.g());
            gpu.zero(h);
            assertThat(gpu.toFloats(t.g())).containsOnly(0f);
            assertThat(gpu.toFloats(h)).containsOnly(0f);
        }
    }

    @Test
    void dropoutDrawsDropoutHashsMaskForEveryElement() {
        int count = emulated() ? 200_003 : 3_000_017;
        float[] x = random(count, 44, 1f);
        for (long seed : new long[] {0, 1234, -7, Long.MAX_VALUE}) {
            for (float p : new float[] {0.1f, 0.5f}) {
                String what = "dropout seed=" + seed + " p=" + p;
                try (Pair xs = backends.pair(x, DType.F32, count); Pair out = backends.zeros(DType.F32, count)) {
                    gpu.dropout(xs.g(), p, seed, out.g());
                    cpu.dropout(xs.c(), p, seed, out.c());
                    float[] got = gpu.toFloats(out.g());
                    float keep = (float) (1.0 / (1.0 - p));
                    for (int i = 0; i < count; i++) {
                        boolean dropped = DropoutHash.uniform(seed, i) < p;
                        float want = dropped ? 0f : x[i] * keep;
                        if (Float.floatToRawIntBits(got[i]) != Float.floatToRawIntBits(want)) {
                            throw new AssertionError(String.format(Locale.ROOT, "%s: element %d is %s, expected %s (uniform %s)",
                                    what, i, got[i], want, DropoutHash.uniform(seed, i)));
                        }
                    }
                    assertSameBits(out, what + " against the CPU");
                    gpu.dropout(xs.g(), p, seed, xs.g()); // in place
                    assertSameFloats(what + " in place", gpu.toFloats(xs.g()), got);
                }
            }
        }
    }

    // ---- helpers ------------------------------------------------------------------------------------------

    /**
     * Whether the backend runs on the device emulator (src/test/cuda/emulator) rather than a GPU: the largest cases,
     * which it would take minutes over, run smaller or not at all there.
     */
    private static boolean emulated() {
        return gpu.description().contains("device emulator");
    }

    /** Largest element difference, relative to the largest reference magnitude; NaN anywhere fails. */
    private static void assertClose(Pair p, double tolerance, String what) {
        assertClose(p, tolerance, 0, what);
    }

    /** As {@link #assertClose(Pair, double, String)}, the magnitude taken as at least {@code minScale}. */
    private static void assertClose(Pair p, double tolerance, double minScale, String what) {
        float[] got = gpu.toFloats(p.g()), want = cpu.toFloats(p.c());
        double scale = minScale;
        for (float w : want) scale = Math.max(scale, Math.abs(w));
        int worst = -1;
        double worstDiff = 0;
        for (int i = 0; i < want.length; i++) {
            double diff = Math.abs((double) got[i] - want[i]);
            if (!(diff <= worstDiff)) {
                worstDiff = Double.isNaN(diff) ? Double.POSITIVE_INFINITY : diff;
                worst = i;
            }
        }
        assertThat(worstDiff).as("%s: worst element %d of %d is %s on the GPU, %s on the CPU (scale %s)", what, worst,
                want.length, worst < 0 ? "-" : got[worst], worst < 0 ? "-" : want[worst], scale)
                .isLessThanOrEqualTo(tolerance * Math.max(scale, 1e-30));
    }

    /** ||got - want|| / ||want|| over the whole tensor: the measure for sums whose order differs. */
    private static void assertCloseNorm(Pair p, double tolerance, String what) {
        float[] got = gpu.toFloats(p.g()), want = cpu.toFloats(p.c());
        double num = 0, den = 0;
        for (int i = 0; i < want.length; i++) {
            double d = (double) got[i] - want[i];
            num += d * d;
            den += (double) want[i] * want[i];
        }
        assertThat(Math.sqrt(num / Math.max(den, 1e-300))).as(what + ": relative error (norm)").isLessThanOrEqualTo(tolerance);
    }

    private static void assertSameBits(Pair p, String what) {
        assertSameFloats(what + " (GPU against CPU)", gpu.toFloats(p.g()), cpu.toFloats(p.c()));
    }

    /** Bit-for-bit equality, naming the first element that differs (AssertJ's array diff is quadratic). */
    private static void assertSameFloats(String what, float[] got, float[] want) {
        assertThat(got.length).as(what + ": element count").isEqualTo(want.length);
        for (int i = 0; i < want.length; i++) {
            if (Float.floatToRawIntBits(got[i]) != Float.floatToRawIntBits(want[i])) {
                throw new AssertionError(String.format(Locale.ROOT, "%s: element %d of %d is %s, expected %s", what, i,
                        want.length, got[i], want[i]));
            }
        }
    }

    private static float[] random(int count, long seed, float scale) {
        Random r = new Random(seed * 7919 + count);
        float[] v = new float[count];
        for (int i = 0; i < count; i++) v[i] = (float) (r.nextGaussian() * scale);
        return v;
    }

    private static float[] roundTo(float[] values, DType t) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment s = arena.allocate(t.bytesFor(values.length), 8);
            for (int i = 0; i < values.length; i++) HostConversions.setFloat(s, t, i, values[i]);
            return HostConversions.toFloats(s, t, values.length);
        }
    }
}
