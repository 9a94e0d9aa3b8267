package dev.lora4j.backend.cpu;

import dev.lora4j.backend.DropoutHash;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import jdk.incubator.vector.FloatVector;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static dev.lora4j.backend.cpu.VectorShapes.F;
import static dev.lora4j.backend.cpu.VectorShapes.L;
import static dev.lora4j.backend.cpu.VectorShapes.f32;

/**
 * {@link CpuBackend}'s LoRA down projection and its gradients ({@link dev.lora4j.backend.Backend#loraDown},
 * {@link dev.lora4j.backend.Backend#loraDownBackward}) on F32 tensors, without forming dropout(x): the mask of a row
 * (forward) or of a row's block of columns (backward) is drawn where it is used, once for the input gradient and
 * the adapter gradient together. Sums run in FP32 vector lanes added in a fixed tree; every output element belongs to
 * one task, so results do not depend on the number of threads.
 */
final class CpuLoraOps {
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    /** Columns of x per task of the backward pass: the task owns those columns of gradA and of every row of dX. */
    private static final int COLUMN_BLOCK = 256;
    /** Products per task of the forward pass below which rows are not split further. */
    private static final int GRAIN = 1 << 15;

    private final Parallel parallel;

    CpuLoraOps(Parallel parallel) {
        this.parallel = parallel;
    }

    void down(Tensor x, Tensor a, float scaling, float p, long seed, Tensor hidden) {
        Shape s = Shape.of("loraDown", x, a);
        requireF32(hidden, "loraDown hidden");
        if (hidden.rows() != s.n || hidden.dim(-1) != s.r) {
            throw new IllegalArgumentException("loraDown: hidden " + hidden + " must be [" + s.n + ", " + s.r + "] for x " + x
                    + " and a " + a);
        }
        int threshold = DropoutHash.dropThreshold(p);
        float factor = scaling * keepScale(p);
        MemorySegment xs = CpuTrainingOps.seg(x), as = CpuTrainingOps.seg(a), hs = CpuTrainingOps.seg(hidden);
        int n = s.n, k = s.k, r = s.r;
        if (n == 0 || r == 0) return;
        int grain = (int) Math.max(1, GRAIN / Math.max(1L, (long) k * r));
        parallel.forRange(n, grain, (from, to) -> {
            float[] row = new float[k];
            boolean[] dropped = new boolean[k];
            for (int i = from; i < to; i++) {
                long base = (long) i * k;
                MemorySegment.copy(xs, F32, base * 4, row, 0, k);
                if (threshold > 0 && drawMask(seed, base, k, threshold, dropped)) {
                    for (int c = 0; c < k; c++) if (dropped[c]) row[c] = 0f;
                }
                for (int j = 0; j < r; j++) hs.setAtIndex(F32, (long) i * r + j, factor * dot(row, as, (long) j * k, k));
            }
        });
    }

    void downBackward(Tensor x, Tensor a, float scaling, float p, long seed, Tensor dHidden, Tensor gradA, Tensor dX,
                      boolean accumulate) {
        Shape s = Shape.of("loraDownBackward", x, a);
        requireF32(dHidden, "loraDownBackward dHidden");
        requireF32(gradA, "loraDownBackward gradA");
        requireF32(dX, "loraDownBackward dX");
        if (dHidden.rows() != s.n || dHidden.dim(-1) != s.r || gradA.rows() != s.r || gradA.dim(-1) != s.k
                || dX.rows() != s.n || dX.dim(-1) != s.k) {
            throw new IllegalArgumentException("loraDownBackward shapes: x " + x + ", a " + a + ", dHidden " + dHidden
                    + ", gradA " + gradA + ", dX " + dX + " (needs x [n, k], a [r, k], dHidden [n, r], gradA [r, k], dX [n, k])");
        }
        int threshold = DropoutHash.dropThreshold(p);
        float factor = scaling * keepScale(p);
        MemorySegment xs = CpuTrainingOps.seg(x), as = CpuTrainingOps.seg(a), hs = CpuTrainingOps.seg(dHidden);
        MemorySegment gs = CpuTrainingOps.seg(gradA), ds = CpuTrainingOps.seg(dX);
        int n = s.n, k = s.k, r = s.r;
        if (k == 0) return;
        int blocks = Parallel.ceilDiv(k, COLUMN_BLOCK);
        parallel.forEach(blocks, block -> {
            int c0 = block * COLUMN_BLOCK, w = Math.min(COLUMN_BLOCK, k - c0);
            float[] sum = new float[r * w], xm = new float[w], t = new float[w], dh = new float[r];
            boolean[] dropped = new boolean[w];
            for (int i = 0; i < n; i++) {
                long base = (long) i * k + c0;
                MemorySegment.copy(xs, F32, base * 4, xm, 0, w);
                MemorySegment.copy(hs, F32, (long) i * r * 4, dh, 0, r);
                boolean any = threshold > 0 && drawMask(seed, base, w, threshold, dropped);
                if (any) for (int c = 0; c < w; c++) if (dropped[c]) xm[c] = 0f;
                java.util.Arrays.fill(t, 0f);
                for (int j = 0; j < r; j++) {
                    axpy(dh[j], as, (long) j * k + c0, t, w);       // t += dh[j] · a[j, c0 .. c0 + w)
                    axpy(dh[j], xm, sum, j * w, w);                  // sum[j] += dh[j] · dropout-masked x
                }
                for (int c = 0; c < w; c++) {
                    float v = any && dropped[c] ? 0f : factor * t[c];
                    if (accumulate) v += ds.getAtIndex(F32, base + c);
                    ds.setAtIndex(F32, base + c, v);
                }
            }
            for (int j = 0; j < r; j++) {
                for (int c = 0; c < w; c++) {
                    long g = (long) j * k + c0 + c;
                    gs.setAtIndex(F32, g, gs.getAtIndex(F32, g) + factor * sum[j * w + c]);
                }
            }
        });
    }

    /**
     * Sets dropped[c] for elements first .. first + count - 1 of the flat tensor, one mix per group of four elements
     * ({@link DropoutHash}); returns whether any is dropped.
     */
    static boolean drawMask(long seed, long first, int count, int threshold, boolean[] dropped) {
        boolean any = false;
        int c = 0;
        for (; c < count && ((first + c) & 3) != 0; c++) { // up to the first whole group
            dropped[c] = DropoutHash.bits(seed, first + c) < threshold;
            any |= dropped[c];
        }
        for (; c + 3 < count; c += 4) {
            long z = DropoutHash.mix(seed, (first + c) >>> 2);
            for (int q = 0; q < 4; q++) {
                boolean d = DropoutHash.draw(z, q) < threshold;
                dropped[c + q] = d;
                any |= d;
            }
        }
        for (; c < count; c++) {
            dropped[c] = DropoutHash.bits(seed, first + c) < threshold;
            any |= dropped[c];
        }
        return any;
    }

    /** What dropout multiplies kept elements by: 1/(1-p) in double, rounded to float (0 at p = 1, when none is kept). */
    static float keepScale(float p) {
        return p == 1f ? 0f : (float) (1.0 / (1.0 - p));
    }

    /** Σ row[c]·a[aBase + c] over c < k, in vector lanes summed in a fixed tree, then the tail in order. */
    private static float dot(float[] row, MemorySegment a, long aBase, int k) {
        FloatVector acc = FloatVector.zero(F);
        int c = 0;
        for (; c + L <= k; c += L) acc = FloatVector.fromArray(F, row, c).fma(f32(a, (aBase + c) * 4), acc);
        float sum = Lanes.sum(acc);
        for (; c < k; c++) sum += row[c] * a.getAtIndex(F32, aBase + c);
        return sum;
    }

    /** t[0 .. w) += s · a[aBase .. aBase + w). */
    private static void axpy(float s, MemorySegment a, long aBase, float[] t, int w) {
        FloatVector sv = FloatVector.broadcast(F, s);
        int c = 0;
        for (; c + L <= w; c += L) {
            FloatVector.fromArray(F, t, c).add(sv.mul(f32(a, (aBase + c) * 4))).intoArray(t, c);
        }
        for (; c < w; c++) t[c] += s * a.getAtIndex(F32, aBase + c);
    }

    /** sum[offset .. offset + w) += s · v[0 .. w). */
    private static void axpy(float s, float[] v, float[] sum, int offset, int w) {
        FloatVector sv = FloatVector.broadcast(F, s);
        int c = 0;
        for (; c + L <= w; c += L) {
            FloatVector.fromArray(F, sum, offset + c).add(sv.mul(FloatVector.fromArray(F, v, c))).intoArray(sum, offset + c);
        }
        for (; c < w; c++) sum[offset + c] += s * v[c];
    }

    private record Shape(int n, int k, int r) {
        static Shape of(String op, Tensor x, Tensor a) {
            requireF32(x, op + " x");
            requireF32(a, op + " a");
            if (a.dim(-1) != x.dim(-1)) {
                throw new IllegalArgumentException(op + ": a " + a + " must be [r, k] for x " + x + " [n, k]");
            }
            if (x.rows() > Integer.MAX_VALUE || x.dim(-1) > Integer.MAX_VALUE || a.rows() > Integer.MAX_VALUE) {
                throw new IllegalArgumentException(op + ": dimensions must each be below 2^31: x " + x + ", a " + a);
            }
            return new Shape((int) x.rows(), (int) x.dim(-1), (int) a.rows());
        }
    }

    private static void requireF32(Tensor t, String what) {
        if (t.dtype() != DType.F32) throw new IllegalArgumentException(what + " must be F32, got " + t);
    }
}
