package dev.lora4j.backend.cpu;

import dev.lora4j.backend.HostConversions;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;

/**
 * The training ops of {@link CpuBackend} (see {@link dev.lora4j.backend.Backend} for their contracts): argument
 * checks, then the work split over the backend's threads and handed to {@link CpuTrainingKernels},
 * {@link MatmulBackwardKernels} and {@link AttentionTrainingKernels}.
 *
 * <p>Every output element is written by one task, and every sum is taken in an order that does not depend on the
 * number of threads, so results are the same bit for bit whatever the thread count.
 */
final class CpuTrainingOps {
    /** Element-wise work below this many elements runs on the calling thread: a fork-join round trip costs more. */
    private static final int ELEMENT_GRAIN = 1 << 15;
    /** Columns per task of the column-wise reductions (sumRows, the weight gradient of rmsNorm, embeddingBackward). */
    private static final int COLUMN_BLOCK = 256;

    private final Parallel parallel;
    private final int threads;

    CpuTrainingOps(Parallel parallel, int threads) {
        this.parallel = parallel;
        this.threads = threads;
    }

    // ---- matmul ---------------------------------------------------------------------------------------------

    void matmulBackwardInput(Tensor dY, Tensor w, Tensor dX, boolean accumulate) {
        requireF32(dY, "matmulBackwardInput dY");
        requireF32(dX, "matmulBackwardInput dX");
        requireWeightType(w, "matmulBackwardInput w");
        long n = dY.rows(), m = dY.dim(-1), k = w.dim(-1);
        if (w.rows() != m || dX.rows() != n || dX.dim(-1) != k) {
            throw new IllegalArgumentException("matmulBackwardInput shapes: dY " + dY + " [n, m], w " + w + " [m, k], dX "
                    + dX + " [n, k]");
        }
        requireIntSizes("matmulBackwardInput", n, m, k);
        if (n == 0 || k == 0) return;
        backwardBlocks(seg(dY), (int) m, MatmulBackwardKernels.Coefficients.ROWS, seg(w), w.dtype(), seg(dX), (int) m,
                (int) n, (int) k, accumulate);
    }

    void matmulBackwardWeight(Tensor dY, Tensor x, Tensor dW, boolean accumulate) {
        requireF32(dY, "matmulBackwardWeight dY");
        requireF32OrBf16(dW, "matmulBackwardWeight dW");
        requireWeightType(x, "matmulBackwardWeight x");
        long n = dY.rows(), m = dY.dim(-1), k = x.dim(-1);
        if (x.rows() != n || dW.rows() != m || dW.dim(-1) != k) {
            throw new IllegalArgumentException("matmulBackwardWeight shapes: dY " + dY + " [n, m], x " + x + " [n, k], dW "
                    + dW + " [m, k]");
        }
        requireIntSizes("matmulBackwardWeight", n, m, k);
        if (m == 0 || k == 0) return;
        if (dW.dtype() == DType.F32) {
            backwardBlocks(seg(dY), (int) m, MatmulBackwardKernels.Coefficients.COLUMNS, seg(x), x.dtype(), seg(dW),
                    (int) n, (int) m, (int) k, accumulate);
            return;
        }
        // A BF16 gradient takes the F32 sum (plus its old value, added in F32) rounded once: within what Backend
        // allows the GPU's products, which may round the sum before adding the old value.
        try (Arena arena = Arena.ofShared()) { // the worker threads write it
            MemorySegment sum = arena.allocate(4 * m * k, 64);
            backwardBlocks(seg(dY), (int) m, MatmulBackwardKernels.Coefficients.COLUMNS, seg(x), x.dtype(), sum,
                    (int) n, (int) m, (int) k, false);
            MemorySegment out = seg(dW);
            forElements(m * k, (from, to) -> {
                for (long i = from; i < to; i++) {
                    float v = sum.getAtIndex(ValueLayout.JAVA_FLOAT, i);
                    if (accumulate) v += HostConversions.getFloat(out, DType.BF16, i);
                    HostConversions.setFloat(out, DType.BF16, i, v);
                }
            });
        }
    }

    /** C[rows, width] (+)= Σ_t A(p, t)·B[t, :] over t in [0, terms), in independent blocks of C, one per task. */
    private void backwardBlocks(MemorySegment a, int aRow, MatmulBackwardKernels.Coefficients layout, MemorySegment b,
                                DType bt, MemorySegment c, int terms, int rows, int width, boolean accumulate) {
        // Tall blocks reuse each packed slice of B for more rows; enough blocks keep every thread busy.
        int jBlocks = Parallel.ceilDiv(width, MatmulBackwardKernels.J_BLOCK);
        int pBlocks = Math.max(Parallel.ceilDiv(rows, MatmulBackwardKernels.MAX_P_BLOCK),
                Math.min(Parallel.ceilDiv(rows, 16), Parallel.ceilDiv(threads * 3, jBlocks)));
        int pBlock = (Parallel.ceilDiv(rows, pBlocks) + MatmulBackwardKernels.P_TILE - 1) / MatmulBackwardKernels.P_TILE
                * MatmulBackwardKernels.P_TILE;
        int blocks = Parallel.ceilDiv(rows, pBlock);
        parallel.forEach(blocks * jBlocks, task -> {
            int p0 = task / jBlocks * pBlock, j0 = task % jBlocks * MatmulBackwardKernels.J_BLOCK;
            MatmulBackwardKernels.block(a, aRow, layout, b, bt, c, terms, width, p0, Math.min(rows, p0 + pBlock), j0,
                    Math.min(width, j0 + MatmulBackwardKernels.J_BLOCK), accumulate);
        });
    }

    void sumRows(Tensor dY, Tensor dBias) {
        requireF32(dY, "sumRows dY");
        requireF32(dBias, "sumRows dBias");
        long d = dY.dim(-1);
        if (dBias.numel() != d) throw new IllegalArgumentException("sumRows: dBias " + dBias + " must have dY's row length " + d + ", dY " + dY);
        requireIntSizes("sumRows", dY.rows(), d);
        int rows = (int) dY.rows(), width = (int) d;
        MemorySegment y = seg(dY), b = seg(dBias);
        forColumns(width, (from, to) -> CpuTrainingKernels.sumRows(y, rows, width, b, from, to));
    }

    // ---- attention ------------------------------------------------------------------------------------------

    void attentionForward(Tensor q, Tensor k, Tensor v, int nHeads, int nKvHeads, int headDim, int slidingWindow,
                          Tensor out, Tensor lse) {
        AttentionTrainingKernels.Shape s = attentionShape("attentionForward", q, k, v, nHeads, nKvHeads, headDim, slidingWindow);
        requireF32(out, "attentionForward out");
        requireF32(lse, "attentionForward lse");
        requireShape(out, "attentionForward out", q);
        if (lse.numel() != (long) s.n() * nHeads) {
            throw new IllegalArgumentException("attentionForward lse " + lse + " must be [" + s.n() + ", " + nHeads + "]");
        }
        AttentionTrainingKernels.Packed packed = new AttentionTrainingKernels.Packed(s, false);
        MemorySegment qs = seg(q), ks = seg(k), vs = seg(v), os = seg(out), ls = seg(lse);
        parallel.forRange(s.n(), 16, (from, to) -> packed.pack(qs, ks, vs, null, from, to));
        int step = s.rowsPerBlock(), blocks = Parallel.ceilDiv(s.n(), step);
        parallel.forEach(blocks * nKvHeads, task -> {
            int i0 = task / nKvHeads * step;
            AttentionTrainingKernels.forwardBlock(packed, os, ls, i0, Math.min(s.n(), i0 + step), task % nKvHeads);
        });
    }

    void attentionBackward(Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor dOut, int nHeads, int nKvHeads,
                           int headDim, int slidingWindow, Tensor dq, Tensor dk, Tensor dv) {
        AttentionTrainingKernels.Shape s = attentionShape("attentionBackward", q, k, v, nHeads, nKvHeads, headDim, slidingWindow);
        requireF32(out, "attentionBackward out");
        requireF32(lse, "attentionBackward lse");
        requireF32(dOut, "attentionBackward dOut");
        requireF32(dq, "attentionBackward dq");
        requireF32(dk, "attentionBackward dk");
        requireF32(dv, "attentionBackward dv");
        requireShape(out, "attentionBackward out", q);
        requireShape(dOut, "attentionBackward dOut", q);
        requireShape(dq, "attentionBackward dq", q);
        requireShape(dk, "attentionBackward dk", k);
        requireShape(dv, "attentionBackward dv", v);
        if (lse.numel() != (long) s.n() * nHeads) {
            throw new IllegalArgumentException("attentionBackward lse " + lse + " must be [" + s.n() + ", " + nHeads + "]");
        }
        AttentionTrainingKernels.Packed packed = new AttentionTrainingKernels.Packed(s, true);
        MemorySegment qs = seg(q), ks = seg(k), vs = seg(v), os = seg(out), dos = seg(dOut);
        MemorySegment dqs = seg(dq), dks = seg(dk), dvs = seg(dv);
        MemorySegment.copy(seg(lse), java.lang.foreign.ValueLayout.JAVA_FLOAT_UNALIGNED, 0, packed.lse, 0, packed.lse.length);
        parallel.forRange(s.n(), 16, (from, to) -> {
            packed.pack(qs, ks, vs, dos, from, to);
            AttentionTrainingKernels.rowDots(dos, os, s, packed.d, from, to);
        });
        int step = s.rowsPerBlock(), rowBlocks = Parallel.ceilDiv(s.n(), step);
        parallel.forEach(rowBlocks * nKvHeads, task -> {
            int i0 = task / nKvHeads * step;
            AttentionTrainingKernels.queryGradientBlock(packed, dqs, i0, Math.min(s.n(), i0 + step), task % nKvHeads);
        });
        int keyBlock = AttentionTrainingKernels.KEY_BLOCK, keyBlocks = Parallel.ceilDiv(s.n(), keyBlock);
        parallel.forEach(keyBlocks * nKvHeads, task -> {
            int t0 = task / nKvHeads * keyBlock;
            AttentionTrainingKernels.keyValueGradientBlock(packed, dks, dvs, t0, Math.min(s.n(), t0 + keyBlock), task % nKvHeads);
        });
    }

    private static AttentionTrainingKernels.Shape attentionShape(String op, Tensor q, Tensor k, Tensor v, int nHeads,
                                                                 int nKvHeads, int headDim, int slidingWindow) {
        requireF32(q, op + " q");
        requireF32(k, op + " k");
        requireF32(v, op + " v");
        if (nHeads <= 0 || nKvHeads <= 0 || headDim <= 0 || slidingWindow < 0 || nHeads % nKvHeads != 0) {
            throw new IllegalArgumentException(op + ": nHeads " + nHeads + " must be a positive multiple of nKvHeads "
                    + nKvHeads + ", headDim " + headDim + " positive and slidingWindow " + slidingWindow + " not negative");
        }
        long n = q.rows();
        if (q.dim(-1) != (long) nHeads * headDim || k.dim(-1) != (long) nKvHeads * headDim || v.dim(-1) != k.dim(-1)
                || k.rows() != n || v.rows() != n) {
            throw new IllegalArgumentException(op + " shapes: q " + q + " must be [n, " + nHeads + "*" + headDim + "], k "
                    + k + " and v " + v + " [n, " + nKvHeads + "*" + headDim + "] with the same n");
        }
        long paddedDim = AttentionTrainingKernels.roundUp(headDim), paddedN = AttentionTrainingKernels.roundUp((int) Math.min(n, 1 << 30));
        if (n * nHeads * paddedDim > Integer.MAX_VALUE - 64 || nKvHeads * paddedN * paddedDim > Integer.MAX_VALUE - 64) {
            throw new IllegalArgumentException(op + ": sequence too long for one call (its packed operands would pass 2^31 floats): q " + q + ", k " + k);
        }
        return new AttentionTrainingKernels.Shape((int) n, nHeads, nKvHeads, headDim, slidingWindow);
    }

    // ---- per-row and element-wise backward forms ------------------------------------------------------------

    void rmsNormBackward(Tensor x, Tensor weight, float eps, Tensor dOut, Tensor dX, Tensor dWeight, boolean accumulate) {
        requireF32(x, "rmsNormBackward x");
        requireF32(dOut, "rmsNormBackward dOut");
        requireF32(dX, "rmsNormBackward dX");
        requireShape(dOut, "rmsNormBackward dOut", x);
        requireShape(dX, "rmsNormBackward dX", x);
        long d = x.dim(-1);
        if (weight.numel() != d) throw new IllegalArgumentException("rmsNormBackward weight " + weight + " must have " + d + " elements, as x's rows " + x);
        if (dWeight != null) {
            requireF32(dWeight, "rmsNormBackward dWeight");
            if (dWeight.numel() != d) throw new IllegalArgumentException("rmsNormBackward dWeight " + dWeight + " must have " + d + " elements");
        }
        requireIntSizes("rmsNormBackward", x.rows(), d);
        requireWeightType(weight, "rmsNormBackward weight");
        int rows = (int) x.rows(), width = (int) d;
        MemorySegment xs = seg(x), w = asF32(weight), dy = seg(dOut), dx = seg(dX);
        float[] r = new float[rows];
        if (dWeight == null) {
            parallel.forRange(rows, grainRows(width), (from, to) -> {
                for (int row = from; row < to; row++) {
                    r[row] = CpuTrainingKernels.inverseRms(xs, (long) row * width, width, eps);
                    CpuTrainingKernels.rmsNormBackwardRow(xs, w, dy, dx, (long) row * width, width, r[row], accumulate);
                }
            });
            return;
        }
        // The weight gradient reads dOut and x before dX is written, so that dX may be either of them.
        parallel.forRange(rows, grainRows(width), (from, to) -> {
            for (int row = from; row < to; row++) r[row] = CpuTrainingKernels.inverseRms(xs, (long) row * width, width, eps);
        });
        MemorySegment dw = seg(dWeight);
        forColumns(width, (from, to) -> CpuTrainingKernels.rmsNormWeightGradient(xs, dy, r, width, dw, from, to));
        parallel.forRange(rows, grainRows(width), (from, to) -> {
            for (int row = from; row < to; row++) CpuTrainingKernels.rmsNormBackwardRow(xs, w, dy, dx, (long) row * width, width, r[row], accumulate);
        });
    }

    void ropeBackward(Tensor dx, int headDim, int[] positions, Tensor invFreq) {
        requireF32(dx, "ropeBackward dx");
        float[] inv = invFreq.backend().toFloats(invFreq);
        long width = dx.dim(-1);
        if (headDim <= 0 || width % headDim != 0 || headDim % 2 != 0) {
            throw new IllegalArgumentException("ropeBackward: row width " + width + " is not a multiple of an even headDim " + headDim);
        }
        if (positions.length != dx.rows()) {
            throw new IllegalArgumentException("ropeBackward: " + positions.length + " positions for " + dx.rows() + " rows");
        }
        int half = headDim / 2;
        if (inv.length != half) throw new IllegalArgumentException("ropeBackward: invFreq must have headDim/2 = " + half + " entries, got " + invFreq);
        requireIntSizes("ropeBackward", dx.rows(), width);
        int w = (int) width;
        MemorySegment xs = seg(dx);
        // The rotation by -angle, with the forward pass's cosines and sines (so it is exactly its transpose).
        parallel.forRange(positions.length, grainRows(w), (from, to) -> {
            float[] cos = new float[half], sin = new float[half];
            for (int r = from; r < to; r++) {
                for (int j = 0; j < half; j++) {
                    float angle = positions[r] * inv[j];
                    cos[j] = (float) Math.cos(angle);
                    sin[j] = -(float) Math.sin(angle);
                }
                CpuKernels.ropeRow(xs, (long) r * w, w, headDim, cos, sin);
            }
        });
    }

    void swigluBackward(Tensor gate, Tensor up, Tensor dOut, Tensor dGate, Tensor dUp) {
        requireF32(gate, "swigluBackward gate");
        requireF32(up, "swigluBackward up");
        requireF32(dOut, "swigluBackward dOut");
        requireF32(dGate, "swigluBackward dGate");
        requireF32(dUp, "swigluBackward dUp");
        requireSameCount(gate, up, "swigluBackward up");
        requireSameCount(gate, dOut, "swigluBackward dOut");
        requireSameCount(gate, dGate, "swigluBackward dGate");
        requireSameCount(gate, dUp, "swigluBackward dUp");
        MemorySegment g = seg(gate), u = seg(up), dy = seg(dOut), dg = seg(dGate), du = seg(dUp);
        forElements(gate.numel(), (from, to) -> CpuTrainingKernels.swigluBackward(g, u, dy, dg, du, from, to));
    }

    void embeddingBackward(int[] ids, Tensor dOut, Tensor dTable) {
        requireF32(dOut, "embeddingBackward dOut");
        requireF32(dTable, "embeddingBackward dTable");
        long d = dTable.dim(-1), vocab = dTable.rows();
        if (dOut.rows() != ids.length || dOut.dim(-1) != d) {
            throw new IllegalArgumentException("embeddingBackward dOut must be [" + ids.length + ", " + d + "], got " + dOut);
        }
        for (int id : ids) {
            if (id < 0 || id >= vocab) {
                throw new IndexOutOfBoundsException("embeddingBackward: token id " + id + " outside the vocabulary [0, " + vocab + ")");
            }
        }
        requireIntSizes("embeddingBackward", d);
        int width = (int) d;
        MemorySegment dy = seg(dOut), table = seg(dTable);
        forColumns(width, (from, to) -> CpuTrainingKernels.embeddingBackward(ids, dy, table, width, from, to));
    }

    // ---- loss and optimizer ---------------------------------------------------------------------------------

    void crossEntropy(Tensor logits, int[] targets, float gradScale, Tensor losses) {
        requireF32(logits, "crossEntropy logits");
        requireF32(losses, "crossEntropy losses");
        long vocab = logits.dim(-1);
        if (targets.length != logits.rows() || losses.numel() != targets.length) {
            throw new IllegalArgumentException("crossEntropy: " + targets.length + " targets for logits " + logits
                    + " and losses " + losses + "; all three need one entry per row");
        }
        for (int i = 0; i < targets.length; i++) {
            if (targets[i] >= vocab) {
                throw new IndexOutOfBoundsException("crossEntropy: target " + targets[i] + " of row " + i
                        + " outside the vocabulary [0, " + vocab + ") (negative targets are ignored)");
            }
        }
        requireIntSizes("crossEntropy", vocab);
        int v = (int) vocab;
        MemorySegment ls = seg(logits), out = seg(losses);
        parallel.forRange(targets.length, grainRows(v), (from, to) -> {
            for (int i = from; i < to; i++) {
                long base = (long) i * v;
                float loss = 0f;
                if (targets[i] < 0) ls.asSlice(base * 4, (long) v * 4).fill((byte) 0);
                else loss = CpuTrainingKernels.crossEntropyRow(ls, base, v, targets[i], gradScale);
                out.setAtIndex(java.lang.foreign.ValueLayout.JAVA_FLOAT_UNALIGNED, i, loss);
            }
        });
    }

    void adamw(Tensor param, Tensor grad, Tensor m, Tensor v, float lr, float beta1, float beta2, float eps,
               float weightDecay, long step) {
        requireF32OrBf16(param, "adamw param");
        requireF32OrBf16(grad, "adamw grad");
        requireMomentType(param, m, "adamw m");
        requireMomentType(param, v, "adamw v");
        requireSameCount(param, grad, "adamw grad");
        requireSameCount(param, m, "adamw m");
        requireSameCount(param, v, "adamw v");
        if (step < 1) throw new IllegalArgumentException("adamw: step counts from 1, got " + step);
        // torch's Python scalars are doubles, rounded to float where they meet a float32 tensor.
        double bc1 = 1 - Math.pow(beta1, step), bc2 = 1 - Math.pow(beta2, step);
        float decay = (float) (1 - (double) lr * weightDecay);
        float oneMinusBeta1 = (float) (1 - (double) beta1), oneMinusBeta2 = (float) (1 - (double) beta2);
        float negStepSize = (float) -(lr / bc1), bc2Sqrt = (float) Math.sqrt(bc2);
        MemorySegment p = seg(param), g = seg(grad), ms = seg(m), vs = seg(v);
        if (param.dtype() == DType.F32 && grad.dtype() == DType.F32) {
            forElements(param.numel(), (from, to) -> CpuTrainingKernels.adamw(p, g, ms, vs, decay, oneMinusBeta1, beta2,
                    oneMinusBeta2, negStepSize, bc2Sqrt, eps, from, to));
        } else {
            DType pt = param.dtype(), gt = grad.dtype();
            forElements(param.numel(), (from, to) -> CpuTrainingKernels.adamw(p, pt, g, gt, ms, vs, decay, oneMinusBeta1,
                    beta2, oneMinusBeta2, negStepSize, bc2Sqrt, eps, from, to));
        }
    }

    /** AdamW's moments are kept in the parameter's dtype, as torch.optim.AdamW keeps them (zeros_like(param)). */
    private static void requireMomentType(Tensor param, Tensor moment, String what) {
        if (moment.dtype() != param.dtype()) {
            throw new IllegalArgumentException(what + " is " + moment.dtype() + " but the parameter is " + param.dtype()
                    + ": the moments take the parameter's dtype");
        }
    }

    private static void requireF32OrBf16(Tensor t, String what) {
        if (t.dtype() != DType.F32 && t.dtype() != DType.BF16) {
            throw new IllegalArgumentException(what + " must be F32 or BF16, got " + t.dtype());
        }
    }

    double sumOfSquares(Tensor t) {
        requireF32OrBf16(t, "sumOfSquares");
        MemorySegment x = seg(t);
        DType type = t.dtype();
        long count = t.numel();
        int chunks = chunkCount(count);
        double[] partial = new double[chunks];
        parallel.forRange(chunks, 1, (from, to) -> {
            for (int c = from; c < to; c++) {
                long a = (long) c * ELEMENT_GRAIN, b = Math.min(count, (long) (c + 1) * ELEMENT_GRAIN);
                partial[c] = type == DType.F32 ? CpuTrainingKernels.sumOfSquares(x, a, b)
                        : CpuTrainingKernels.sumOfSquares(x, type, a, b);
            }
        });
        double sum = 0;
        for (double p : partial) sum += p;
        return sum;
    }

    void scale(Tensor t, float s) {
        requireF32OrBf16(t, "scale");
        MemorySegment x = seg(t);
        DType type = t.dtype();
        if (type == DType.F32) {
            forElements(t.numel(), (from, to) -> CpuTrainingKernels.scale(x, s, from, to));
        } else {
            forElements(t.numel(), (from, to) -> {
                for (long i = from; i < to; i++) HostConversions.setFloat(x, type, i, HostConversions.getFloat(x, type, i) * s);
            });
        }
    }

    void zero(Tensor t) {
        MemorySegment x = seg(t);
        DType type = t.dtype();
        forElements(t.numel(), (from, to) -> x.asSlice(type.bytesFor(from), type.bytesFor(to) - type.bytesFor(from)).fill((byte) 0));
    }

    void dropout(Tensor x, float p, long seed, Tensor out) {
        requireF32(x, "dropout x");
        requireF32(out, "dropout out");
        requireSameCount(x, out, "dropout out");
        if (!(p >= 0f && p <= 1f)) throw new IllegalArgumentException("dropout: p must be in [0, 1], got " + p);
        // As torch's dropout: the kept values are multiplied by 1/(1-p) computed in double, rounded to float.
        float keepScale = p == 1f ? 0f : (float) (1.0 / (1.0 - p));
        MemorySegment xs = seg(x), os = seg(out);
        forElements(x.numel(), (from, to) -> CpuTrainingKernels.dropout(xs, os, p, keepScale, seed, from, to));
    }

    // ---- helpers --------------------------------------------------------------------------------------------

    @FunctionalInterface
    private interface ElementRange {
        void run(long from, long to);
    }

    private void forElements(long count, ElementRange body) {
        parallel.forRange(chunkCount(count), 1, (from, to) ->
                body.run((long) from * ELEMENT_GRAIN, Math.min(count, (long) to * ELEMENT_GRAIN)));
    }

    private static int chunkCount(long count) {
        long chunks = (count + ELEMENT_GRAIN - 1) / ELEMENT_GRAIN;
        if (chunks > Integer.MAX_VALUE) throw new IllegalArgumentException("too many elements: " + count);
        return (int) chunks;
    }

    /** Runs body over [0, width) in blocks of {@link #COLUMN_BLOCK} columns, one block per task. */
    private void forColumns(int width, Parallel.RangeBody body) {
        int blocks = Parallel.ceilDiv(width, COLUMN_BLOCK);
        parallel.forRange(blocks, 1, (from, to) -> body.run(from * COLUMN_BLOCK, Math.min(width, to * COLUMN_BLOCK)));
    }

    private static int grainRows(long rowLength) {
        return (int) Math.max(1, ELEMENT_GRAIN / Math.max(1, rowLength));
    }

    /** The tensor's elements as F32: its own memory if it is F32, else a converted copy. */
    private static MemorySegment asF32(Tensor t) {
        if (t.dtype() == DType.F32) return seg(t);
        MemorySegment copy = Arena.ofAuto().allocate(Math.max(1, t.numel()) * Float.BYTES, 64);
        FloatConversions.convert(seg(t), t.dtype(), 0, copy, DType.F32, 0, t.numel());
        return copy;
    }

    static MemorySegment seg(Tensor t) {
        if (!(t instanceof CpuTensor c)) throw new IllegalArgumentException(t + " is not a CPU tensor");
        return c.segment();
    }

    private static void requireF32(Tensor t, String what) {
        if (t.dtype() != DType.F32) throw new IllegalArgumentException(what + " must be F32, got " + t);
    }

    private static void requireWeightType(Tensor t, String what) {
        if (t.dtype() != DType.F32 && t.dtype() != DType.BF16 && t.dtype() != DType.F16) {
            throw new IllegalArgumentException(what + " must be F32, BF16 or F16, got " + t);
        }
    }

    private static void requireSameCount(Tensor a, Tensor b, String what) {
        if (a.numel() != b.numel()) throw new IllegalArgumentException(what + " " + b + " must have as many elements as " + a);
    }

    /** Same rows and row length as {@code like}. */
    private static void requireShape(Tensor t, String what, Tensor like) {
        if (t.rows() != like.rows() || t.dim(-1) != like.dim(-1)) {
            throw new IllegalArgumentException(what + " " + t + " must have the shape of " + like);
        }
    }

    private static void requireIntSizes(String op, long... sizes) {
        for (long s : sizes) {
            if (s > Integer.MAX_VALUE) throw new IllegalArgumentException(op + ": dimensions must each be below 2^31, got " + Arrays.toString(sizes));
        }
    }
}
