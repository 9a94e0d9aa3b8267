package dev.lora4j.cuda;

import dev.lora4j.backend.DropoutHash;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Half;
import dev.lora4j.tensor.Tensor;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.function.Consumer;
import java.util.stream.Stream;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The element-wise kernels move 8 elements per thread with 16-byte accesses when every tensor they touch starts on a
 * 16-byte boundary, and one element at a time otherwise (views at other offsets) and for the last n % 8 elements. Both
 * paths must give the same bits, and the exact ops (add, scale, dropout, conversions) the bits of a scalar Java
 * reference: for every size (below one group, a whole number of groups, groups and a tail, more groups than one pass
 * of the grid) and offset (aligned, odd, even but unaligned). Skips, with the probe's reason, where CUDA cannot run.
 */
class CudaVectorisedElementwiseTest {
    /** Sizes: under one group, whole groups, groups plus a tail, and more than one grid-stride pass on 4 SMs. */
    private static final int[] SIZES = {5, 64, 8 * 37 + 3, 2 * 65536 + 13};
    /** Element offsets of the views: 16-byte aligned for both types, odd, and 4 (8 bytes, unaligned, in BF16). */
    private static final int[] OFFSETS = {0, 1, 4};

    private static CudaBackend f32;
    private static CudaBackend bf16;
    @RegisterExtension
    static final GpuBackends backends = GpuBackends.assigning((a, b) -> { f32 = a; bf16 = b; });

    static Stream<Arguments> cases() {
        List<Arguments> c = new ArrayList<>();
        for (DType t : List.of(DType.F32, DType.BF16)) {
            for (int n : SIZES) for (int off : OFFSETS) c.add(Arguments.of(t, n, off));
        }
        return c.stream();
    }

    private static CudaBackend backend(DType act) { return act == DType.F32 ? f32 : bf16; }

    /** The values as the activation type holds them. */
    private static float[] representable(float[] v, DType t) {
        float[] r = v.clone();
        if (t == DType.BF16) for (int i = 0; i < r.length; i++) r[i] = Half.bf16ToFloat(Half.floatToBf16(r[i]));
        return r;
    }

    private static float round(float v, DType t) {
        return t == DType.BF16 ? Half.bf16ToFloat(Half.floatToBf16(v)) : v;
    }

    private static float[] random(int n, long seed) {
        Random r = new Random(seed);
        float[] v = new float[n];
        for (int i = 0; i < n; i++) v[i] = (float) (r.nextGaussian() * 3);
        return v;
    }

    /** values at element offset off of a larger tensor (the elements around them are NaN), as a view of shape. */
    private static Tensor[] placed(CudaBackend b, float[] values, DType t, int off, long... shape) {
        float[] padded = new float[values.length + off + 3];
        java.util.Arrays.fill(padded, Float.NaN);
        System.arraycopy(values, 0, padded, off, values.length);
        Tensor whole = b.fromFloats(padded, t, padded.length);
        return new Tensor[] {whole, whole.view(off, shape.length == 0 ? new long[] {values.length} : shape)};
    }

    private static int[] bits(float[] v) {
        int[] r = new int[v.length];
        for (int i = 0; i < v.length; i++) r[i] = Float.floatToRawIntBits(v[i]);
        return r;
    }

    /** Runs op on views of the inputs at offset off (the first is the one the op writes) and reads back each input. */
    private static float[][] run(DType t, int off, float[][] inputs, Consumer<Tensor[]> op) {
        return run(t, off, new long[0], inputs, op);
    }

    private static float[][] run(DType t, int off, long[] shape, float[][] inputs, Consumer<Tensor[]> op) {
        CudaBackend b = backend(t);
        Tensor[][] placed = new Tensor[inputs.length][];
        try {
            Tensor[] views = new Tensor[inputs.length];
            for (int k = 0; k < inputs.length; k++) {
                placed[k] = placed(b, inputs[k], t, off, shape);
                views[k] = placed[k][1];
            }
            op.accept(views);
            float[][] out = new float[inputs.length][];
            for (int k = 0; k < inputs.length; k++) {
                float[] whole = b.toFloats(placed[k][0]);
                for (int i = 0; i < off; i++) assertThat(whole[i]).as("element before the view").isNaN();
                for (int i = off + inputs[k].length; i < whole.length; i++) assertThat(whole[i]).as("element after the view").isNaN();
                out[k] = java.util.Arrays.copyOfRange(whole, off, off + inputs[k].length);
            }
            return out;
        } finally {
            for (Tensor[] p : placed) if (p != null) p[0].close();
        }
    }

    @ParameterizedTest(name = "{0}, {1} elements at offset {2}")
    @MethodSource("cases")
    void addGivesTheScalarSumRoundedOnce(DType t, int n, int off) {
        float[] x = representable(random(n, 1), t), y = representable(random(n, 2), t);
        float[] got = run(t, off, new float[][] {x, y}, v -> backend(t).add(v[0], v[1]))[0];
        float[] want = new float[n];
        for (int i = 0; i < n; i++) want[i] = round(x[i] + y[i], t);
        assertThat(bits(got)).isEqualTo(bits(want));
    }

    @ParameterizedTest(name = "{0}, {1} elements at offset {2}")
    @MethodSource("cases")
    void scaleGivesTheScalarProductRoundedOnce(DType t, int n, int off) {
        float[] x = representable(random(n, 3), t);
        float s = 0.7310586f;
        float[] got = run(t, off, new float[][] {x}, v -> backend(t).scale(v[0], s))[0];
        float[] want = new float[n];
        for (int i = 0; i < n; i++) want[i] = round(x[i] * s, t);
        assertThat(bits(got)).isEqualTo(bits(want));
    }

    @ParameterizedTest(name = "{0}, {1} elements at offset {2}")
    @MethodSource("cases")
    void dropoutKeepsTheHashMaskOfEachElementIndex(DType t, int n, int off) {
        float[] x = representable(random(n, 4), t);
        float p = 0.25f;
        long seed = 0x5eedL + n;
        float scale = CudaBackend.dropoutScale(p);
        float[] got = run(t, off, new float[][] {x}, v -> backend(t).dropout(v[0], p, seed, v[0]))[0];
        float[] want = new float[n];
        for (int i = 0; i < n; i++) want[i] = DropoutHash.uniform(seed, i) < p ? 0f : round(x[i] * scale, t);
        assertThat(bits(got)).isEqualTo(bits(want));
    }

    @ParameterizedTest(name = "{0}, {1} elements at offset {2}")
    @MethodSource("cases")
    void swigluGivesTheSameBitsAlignedAndUnaligned(DType t, int n, int off) {
        float[] g = representable(random(n, 5), t), u = representable(random(n, 6), t);
        float[] out = new float[n];
        float[] got = run(t, off, new float[][] {out, g, u}, v -> backend(t).swiglu(v[1], v[2], v[0]))[0];
        // Offset 1 never takes the 16-byte path, so it is the element-by-element kernel.
        float[] scalar = run(t, 1, new float[][] {out, g, u}, v -> backend(t).swiglu(v[1], v[2], v[0]))[0];
        assertThat(bits(got)).isEqualTo(bits(scalar));
        for (int i = 0; i < n; i++) {
            double want = g[i] / (1 + Math.exp(-g[i])) * u[i];
            double tolerance = (t == DType.BF16 ? 0x1p-8 : 0x1p-21) * Math.abs(want) + 1e-30;
            assertThat((double) got[i]).as("element %d", i).isCloseTo(want, org.assertj.core.data.Offset.offset(tolerance));
        }
    }

    @ParameterizedTest(name = "{0}, {1} elements at offset {2}")
    @MethodSource("cases")
    void swigluBackwardGivesTheSameBitsAlignedAndUnaligned(DType t, int n, int off) {
        float[] g = representable(random(n, 7), t), u = representable(random(n, 8), t), dy = representable(random(n, 9), t);
        float[] zero = new float[n];
        float[][] got = run(t, off, new float[][] {zero, zero, g, u, dy},
                v -> backend(t).swigluBackward(v[2], v[3], v[4], v[0], v[1]));
        float[][] scalar = run(t, 1, new float[][] {zero, zero, g, u, dy},
                v -> backend(t).swigluBackward(v[2], v[3], v[4], v[0], v[1]));
        assertThat(bits(got[0])).as("dGate").isEqualTo(bits(scalar[0]));
        assertThat(bits(got[1])).as("dUp").isEqualTo(bits(scalar[1]));
        for (int i = 0; i < n; i++) {
            double s = 1 / (1 + Math.exp(-g[i]));
            double du = dy[i] * g[i] * s;
            assertThat((double) got[1][i]).as("dUp %d", i)
                    .isCloseTo(du, org.assertj.core.data.Offset.offset((t == DType.BF16 ? 0x1p-7 : 0x1p-20) * Math.abs(du) + 1e-30));
        }
    }

    @ParameterizedTest(name = "{0}, {1} elements at offset {2}")
    @MethodSource("cases")
    void copyBetweenDtypesRoundsEachElementOnce(DType t, int n, int off) {
        // t is the source here: F32 to BF16 rounds, BF16 to F32 is exact.
        DType other = t == DType.F32 ? DType.BF16 : DType.F32;
        float[] x = representable(random(n, 10), t);
        CudaBackend b = f32;
        Tensor[] src = placed(b, x, t, off);
        Tensor[] dst = placed(b, new float[n], other, off == 0 ? 0 : off + 1);
        try {
            b.copy(src[1], dst[1]);
            float[] got = b.toFloats(dst[1]);
            float[] want = new float[n];
            for (int i = 0; i < n; i++) want[i] = round(x[i], other);
            assertThat(bits(got)).isEqualTo(bits(want));
        } finally {
            src[0].close();
            dst[0].close();
        }
    }

    /**
     * Row lengths: whole groups (16-byte path) and not (element by element, with a clipped last group); rows a thread
     * block holds in registers (4 groups per thread) and rows longer than that (16384 elements and more), whose last
     * groups are read twice.
     */
    static Stream<Arguments> rowCases() {
        List<Arguments> c = new ArrayList<>();
        for (DType t : List.of(DType.F32, DType.BF16)) {
            for (int d : new int[] {64, 8 * 5 + 3, 1024, 4096, 16384 + 8 * 37, 16384 + 8 * 37 + 5}) {
                for (int off : new int[] {0, 1}) c.add(Arguments.of(t, d, off));
            }
        }
        return c.stream();
    }

    @ParameterizedTest(name = "{0}, rows of {1} at offset {2}")
    @MethodSource("rowCases")
    void rmsNormAndItsGradientsGiveTheSameBitsOnBothPathsAndMatchDoublePrecision(DType t, int d, int off) {
        int rows = d >= 4096 ? 5 : 37;
        float[] x = representable(random(rows * d, 11), t), dy = representable(random(rows * d, 12), t);
        float[] w = random(d, 13), dw0 = random(d, 16);
        long[] shape = {rows, d};
        try (Tensor weight = f32.fromFloats(w, DType.BF16, d); Tensor weight2 = bf16.fromFloats(w, DType.BF16, d)) {
            Tensor wt = t == DType.F32 ? weight : weight2;
            float[] out = new float[rows * d];
            float[] got = run(t, off, shape, new float[][] {out, x}, v -> backend(t).rmsNorm(v[1], wt, 1e-5f, v[0]))[0];
            // Offset 1 is never 16-byte aligned, so it reads global memory element by element.
            float[] plain = run(t, 1, shape, new float[][] {out, x}, v -> backend(t).rmsNorm(v[1], wt, 1e-5f, v[0]))[0];
            assertThat(bits(got)).as("rmsNorm").isEqualTo(bits(plain));
            float[] inPlace = run(t, off, shape, new float[][] {x}, v -> backend(t).rmsNorm(v[0], wt, 1e-5f, v[0]))[0];
            assertThat(bits(inPlace)).as("rmsNorm in place").isEqualTo(bits(got));
            float[][] gotGrads = new float[2][];
            for (int path : new int[] {off, 1}) {
                float[] dx, dw;
                try (Tensor dWeight = backend(t).fromFloats(dw0, DType.F32, d)) {
                    dx = run(t, path, shape, new float[][] {out, x, dy},
                            v -> backend(t).rmsNormBackward(v[1], wt, 1e-5f, v[2], v[0], dWeight))[0];
                    dw = backend(t).toFloats(dWeight);
                }
                if (path == off) {
                    gotGrads = new float[][] {dx, dw};
                } else {
                    assertThat(bits(gotGrads[0])).as("rmsNormBackward dX").isEqualTo(bits(dx));
                    assertThat(bits(gotGrads[1])).as("rmsNormBackward dWeight").isEqualTo(bits(dw));
                }
            }
            // dX may be dOut.
            float[] dxInPlace = run(t, off, shape, new float[][] {dy, x},
                    v -> backend(t).rmsNormBackward(v[1], wt, 1e-5f, v[0], v[0], null))[0];
            assertThat(bits(dxInPlace)).as("rmsNormBackward into dOut").isEqualTo(bits(gotGrads[0]));
            // And each result is the double-precision one, within the activation type's rounding and FP32 sums.
            double[] dwWant = new double[d], dwScale = new double[d];
            for (int r = 0; r < rows; r++) {
                double ss = 0, dot = 0, rowMax = 0;
                for (int j = 0; j < d; j++) {
                    int i = r * d + j;
                    double wj = Half.bf16ToFloat(Half.floatToBf16(w[j]));
                    ss += (double) x[i] * x[i];
                    dot += wj * dy[i] * x[i];
                }
                double inv = 1 / Math.sqrt(ss / d + 1e-5), c = inv * inv * inv * dot / d;
                double[] dxWant = new double[d];
                for (int j = 0; j < d; j++) {
                    int i = r * d + j;
                    double wj = Half.bf16ToFloat(Half.floatToBf16(w[j]));
                    double want = wj * x[i] * inv;
                    assertThat((double) got[i]).as("row %d, element %d", r, j).isCloseTo(want,
                            org.assertj.core.data.Offset.offset((t == DType.BF16 ? 0x1p-8 : 0x1p-20) * Math.abs(want) + 1e-6));
                    dxWant[j] = inv * wj * dy[i] - x[i] * c;
                    rowMax = Math.max(rowMax, Math.abs(dxWant[j]));
                    dwWant[j] += dy[i] * x[i] * inv;
                    dwScale[j] += Math.abs(dy[i] * x[i] * inv);
                }
                for (int j = 0; j < d; j++) {
                    // The two terms of dX cancel in part: FP32's error is relative to the row's largest gradient.
                    double tolerance = (t == DType.BF16 ? 0x1p-8 * Math.abs(dxWant[j]) : 0) + 1e-5 * rowMax;
                    assertThat((double) gotGrads[0][r * d + j]).as("dX row %d, element %d", r, j)
                            .isCloseTo(dxWant[j], org.assertj.core.data.Offset.offset(tolerance));
                }
            }
            for (int j = 0; j < d; j++) {
                double want = dw0[j] + dwWant[j];
                assertThat((double) gotGrads[1][j]).as("dWeight %d", j).isCloseTo(want,
                        org.assertj.core.data.Offset.offset(1e-5 * (dwScale[j] + Math.abs(dw0[j]))));
            }
        }
    }

    static Stream<Arguments> weightGradientCases() {
        List<Arguments> c = new ArrayList<>();
        for (DType t : List.of(DType.F32, DType.BF16)) {
            for (int d : new int[] {1000, 1003}) for (int off : new int[] {0, 1}) c.add(Arguments.of(t, d, off));
        }
        return c.stream();
    }

    /**
     * The weight gradient sums chunks of rows (8 rows per block of the fused pass, 64 in the pass for rows too long
     * to hold), then the chunks in order: 200 rows make whole chunks and, with 64, a part; rows of 1000 columns end in
     * a part of a 256-column tile, rows of 1003 take the element path.
     */
    @ParameterizedTest(name = "{0}, rows of {1} at offset {2}")
    @MethodSource("weightGradientCases")
    void rmsNormWeightGradientIsTheSameOnBothPathsAndEveryRunAndMatchesDoublePrecision(DType t, int d, int off) {
        int rows = 200;
        float[] x = representable(random(rows * d, 17), t), dy = representable(random(rows * d, 18), t);
        float[] w = random(d, 19), dw0 = random(d, 20);
        long[] shape = {rows, d};
        try (Tensor weight = backend(t).fromFloats(w, DType.F32, d)) {
            float[][] runs = new float[3][];
            int[] offsets = {off, off, 1};
            for (int k = 0; k < runs.length; k++) {
                try (Tensor dWeight = backend(t).fromFloats(dw0, DType.F32, d)) {
                    run(t, offsets[k], shape, new float[][] {new float[rows * d], x, dy},
                            v -> backend(t).rmsNormBackward(v[1], weight, 1e-5f, v[2], v[0], dWeight));
                    runs[k] = backend(t).toFloats(dWeight);
                }
            }
            assertThat(bits(runs[1])).as("a second run").isEqualTo(bits(runs[0]));
            assertThat(bits(runs[2])).as("the element path").isEqualTo(bits(runs[0]));
            double[] want = new double[d], scale = new double[d];
            for (int r = 0; r < rows; r++) {
                double ss = 0;
                for (int j = 0; j < d; j++) ss += (double) x[r * d + j] * x[r * d + j];
                double inv = 1 / Math.sqrt(ss / d + 1e-5);
                for (int j = 0; j < d; j++) {
                    want[j] += (double) dy[r * d + j] * x[r * d + j] * inv;
                    scale[j] += Math.abs((double) dy[r * d + j] * x[r * d + j] * inv);
                }
            }
            for (int j = 0; j < d; j++) {
                assertThat((double) runs[0][j]).as("dWeight %d", j).isCloseTo(dw0[j] + want[j],
                        org.assertj.core.data.Offset.offset(1e-5 * (scale[j] + Math.abs(dw0[j]))));
            }
        }
    }

    /**
     * Heads whose halves are a multiple of 8 (vectorised) and not (element by element, the last group clipped); a block
     * tile of several rows (few narrow heads), of whole rows, of part of a row (40 heads of 128: 32 and 8) and of part
     * of a head (halves of 4104 and 4100 pairs: 513 groups, over one tile of either type).
     */
    static Stream<Arguments> ropeCases() {
        List<Arguments> c = new ArrayList<>();
        int[][] shapes = {{16, 3}, {128, 3}, {12, 3}, {128, 8}, {128, 40}, {6, 7}, {2 * 4104, 2}, {2 * 4100, 1}};
        for (DType t : List.of(DType.F32, DType.BF16)) {
            for (int[] shape : shapes) for (int off : new int[] {0, 1}) c.add(Arguments.of(t, shape[0], shape[1], off));
        }
        return c.stream();
    }

    @ParameterizedTest(name = "{0}, {2} heads of {1} at offset {3}")
    @MethodSource("ropeCases")
    void ropeGivesTheSameBitsVectorisedOrNotAndTheCpuFormula(DType t, int headDim, int heads, int off) {
        int rows = headDim > 1024 ? 3 : 29, width = heads * headDim, half = headDim / 2;
        float[] x = representable(random(rows * width, 14), t);
        int[] positions = new int[rows];
        for (int i = 0; i < rows; i++) positions[i] = 1000 + 37 * i;
        positions[rows - 1] = 131071; // angles of up to 131071 radians
        float[] inv = new float[half];
        for (int i = 0; i < inv.length; i++) inv[i] = (float) Math.pow(10000.0, -2.0 * i / headDim);
        long[] shape = {rows, width};
        try (Tensor freq = backend(t).fromFloats(inv, DType.F32, inv.length)) {
            for (boolean backward : new boolean[] {false, true}) {
                Consumer<Tensor[]> op = v -> {
                    if (backward) backend(t).ropeBackward(v[0], headDim, positions, freq);
                    else backend(t).rope(v[0], headDim, positions, freq);
                };
                float[] got = run(t, off, shape, new float[][] {x}, op)[0];
                float[] plain = run(t, 1, shape, new float[][] {x}, op)[0];
                assertThat(bits(got)).as(backward ? "ropeBackward" : "rope").isEqualTo(bits(plain));
                // The CPU backend's formula: an FP32 angle, its cosine and sine in double rounded to float, FP32
                // products and sums rounded once to the activation type. The GPU's cosine and sine may differ in the
                // last bit of a double, so at most by one rounding of the result.
                for (int r = 0; r < rows; r++) {
                    for (int j = 0; j < half; j++) {
                        float angle = positions[r] * inv[j];
                        float cos = (float) Math.cos(angle), sin = (backward ? -1 : 1) * (float) Math.sin(angle);
                        for (int h = 0; h < heads; h++) {
                            int a = r * width + h * headDim + j, b = a + half;
                            float wantA = round(x[a] * cos - x[b] * sin, t), wantB = round(x[b] * cos + x[a] * sin, t);
                            double tolerance = (t == DType.BF16 ? 0x1p-8 : 0x1p-23) * Math.hypot(x[a], x[b]);
                            assertThat((double) got[a]).as("row %d, head %d, pair %d (first)", r, h, j)
                                    .isCloseTo(wantA, org.assertj.core.data.Offset.offset(tolerance));
                            assertThat((double) got[b]).as("row %d, head %d, pair %d (second)", r, h, j)
                                    .isCloseTo(wantB, org.assertj.core.data.Offset.offset(tolerance));
                        }
                    }
                }
            }
        }
    }

    @ParameterizedTest(name = "{0}, rows of {1} at offset {2}")
    @MethodSource("rowCases")
    void embeddingCopiesEachTableRowRoundedOnce(DType t, int d, int off) {
        int vocab = 50;
        int[] ids = {3, 49, 0, 3, 17, 25, 25, 8, 1, 44, 12};
        float[] table = random(vocab * d, 15);
        try (Tensor tab = backend(t).fromFloats(table, DType.F32, vocab, d)) {
            float[] got = run(t, off, new long[] {ids.length, d}, new float[][] {new float[ids.length * d]},
                    v -> backend(t).embedding(tab, ids, v[0]))[0];
            float[] want = new float[ids.length * d];
            for (int i = 0; i < ids.length; i++) {
                for (int j = 0; j < d; j++) want[i * d + j] = round(table[ids[i] * d + j], t);
            }
            assertThat(bits(got)).isEqualTo(bits(want));
        }
    }
}
