package dev.lora4j.backend.cpu;

import dev.lora4j.backend.HostConversions;
import dev.lora4j.tensor.DType;

import dev.lora4j.backend.DropoutHash;
import jdk.incubator.vector.DoubleVector;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.LongVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static dev.lora4j.backend.cpu.VectorShapes.F;
import static dev.lora4j.backend.cpu.VectorShapes.L;
import static dev.lora4j.backend.cpu.VectorShapes.LE;
import static dev.lora4j.backend.cpu.VectorShapes.f32;
import static jdk.incubator.vector.VectorOperators.ADD;
import static jdk.incubator.vector.VectorOperators.F2D;
import static jdk.incubator.vector.VectorOperators.LSHR;
import static jdk.incubator.vector.VectorOperators.LT;
import static jdk.incubator.vector.VectorOperators.MAX;
import static jdk.incubator.vector.VectorOperators.S2I;
import static jdk.incubator.vector.VectorOperators.XOR;

/**
 * The element-wise and per-row kernels of the training ops (backward forms, loss, optimizer), on F32 data, free
 * of threading concerns: each works on a range of elements, rows or columns that the caller hands to one
 * thread. Offsets and counts are in elements.
 */
final class CpuTrainingKernels {
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    /** Doubles of F's bit size: a float vector widens to two of these. */
    private static final VectorSpecies<Double> D = VectorSpecies.of(double.class, VectorShape.forBitSize(F.vectorBitSize()));
    /**
     * Elements a float lane sums before its partial sum is moved into a double: keeps the error of a long sum of
     * positive terms (a softmax denominator over a vocabulary) at a few dozen roundings, whatever the row length.
     */
    private static final int FLOAT_RUN = 64 * 16;

    private CpuTrainingKernels() {}

    // ---- rmsNorm --------------------------------------------------------------------------------------------

    /** The 1/sqrt(mean(x²) + eps) of a row: the scale of {@link CpuKernels#rmsNormRow} and of its backward form. */
    static float inverseRms(MemorySegment x, long base, int d, float eps) {
        long b = base * Float.BYTES;
        FloatVector s0 = FloatVector.zero(F), s1 = s0;
        int j = 0;
        for (; j + 2 * L <= d; j += 2 * L) {
            FloatVector v0 = f32(x, b + (long) j * 4), v1 = f32(x, b + (long) (j + L) * 4);
            s0 = v0.fma(v0, s0);
            s1 = v1.fma(v1, s1);
        }
        for (; j + L <= d; j += L) {
            FloatVector v = f32(x, b + (long) j * 4);
            s0 = v.fma(v, s0);
        }
        float ss = Lanes.sum(s0.add(s1));
        for (; j < d; j++) {
            float v = x.getAtIndex(F32, base + j);
            ss += v * v;
        }
        return (float) (1.0 / Math.sqrt(ss / d + eps));
    }

    /**
     * dX of one row of y = w·x·r, r = 1/sqrt(mean(x²)+eps): with g = w·dy,
     * {@code dx = r·g - x · r³/d · Σ g·x}, stored, or added to dX when {@code accumulate}.
     */
    static void rmsNormBackwardRow(MemorySegment x, MemorySegment w, MemorySegment dOut, MemorySegment dX, long base,
                                   int d, float r, boolean accumulate) {
        long b = base * Float.BYTES;
        FloatVector acc = FloatVector.zero(F);
        int j = 0;
        for (; j + L <= d; j += L) {
            long o = (long) j * 4;
            acc = f32(w, o).mul(f32(dOut, b + o)).fma(f32(x, b + o), acc);
        }
        float dot = Lanes.sum(acc);
        for (; j < d; j++) dot += w.getAtIndex(F32, j) * dOut.getAtIndex(F32, base + j) * x.getAtIndex(F32, base + j);
        float c = r * r * r * dot / d;
        j = 0;
        for (; j + L <= d; j += L) {
            long o = (long) j * 4;
            FloatVector g = f32(w, o).mul(f32(dOut, b + o));
            FloatVector dx = g.mul(r).sub(f32(x, b + o).mul(c));
            if (accumulate) dx = f32(dX, b + o).add(dx);
            dx.intoMemorySegment(dX, b + o, LE);
        }
        for (; j < d; j++) {
            float g = w.getAtIndex(F32, j) * dOut.getAtIndex(F32, base + j);
            float dx = g * r - x.getAtIndex(F32, base + j) * c;
            dX.setAtIndex(F32, base + j, accumulate ? dX.getAtIndex(F32, base + j) + dx : dx);
        }
    }

    /** dWeight[from..to) += Σ_rows dOut·x·r[row] over all rows, row by row in order. */
    static void rmsNormWeightGradient(MemorySegment x, MemorySegment dOut, float[] r, int d, MemorySegment dWeight,
                                      int from, int to) {
        for (int c = from; c < to; c += COLUMN_RUN) {
            int end = Math.min(to, c + COLUMN_RUN);
            float[] acc = new float[end - c];
            for (int row = 0; row < r.length; row++) {
                long base = (long) row * d + c;
                float rr = r[row];
                int j = 0;
                for (; j + L <= acc.length; j += L) {
                    long o = (base + j) * 4;
                    f32(dOut, o).mul(f32(x, o)).fma(FloatVector.broadcast(F, rr), FloatVector.fromArray(F, acc, j)).intoArray(acc, j);
                }
                for (; j < acc.length; j++) acc[j] = Math.fma(dOut.getAtIndex(F32, base + j) * x.getAtIndex(F32, base + j), rr, acc[j]);
            }
            CpuKernels.addArray(dWeight, (long) c * 4, acc, 0, acc.length);
        }
    }

    /** Columns a column-wise reduction keeps in an array while it walks the rows: 4 KiB, in L1. */
    static final int COLUMN_RUN = 1024;

    /** sums[from..to) += Σ_rows y[row, from..to), rows in order. */
    static void sumRows(MemorySegment y, int rows, int d, MemorySegment sums, int from, int to) {
        for (int c = from; c < to; c += COLUMN_RUN) {
            int end = Math.min(to, c + COLUMN_RUN);
            float[] acc = new float[end - c];
            MemorySegment.copy(sums, F32, (long) c * 4, acc, 0, acc.length);
            for (int row = 0; row < rows; row++) {
                long base = (long) row * d + c;
                int j = 0;
                for (; j + L <= acc.length; j += L) {
                    FloatVector.fromArray(F, acc, j).add(f32(y, (base + j) * 4)).intoArray(acc, j);
                }
                for (; j < acc.length; j++) acc[j] += y.getAtIndex(F32, base + j);
            }
            MemorySegment.copy(acc, 0, sums, F32, (long) c * 4, acc.length);
        }
    }

    /** table[ids[i], from..to) += dOut[i, from..to), ids in order (repeated ids add up). */
    static void embeddingBackward(int[] ids, MemorySegment dOut, MemorySegment table, int d, int from, int to) {
        for (int i = 0; i < ids.length; i++) {
            long src = ((long) i * d + from) * 4, dst = ((long) ids[i] * d + from) * 4;
            int count = to - from, j = 0;
            for (; j + L <= count; j += L) {
                long o = (long) j * 4;
                f32(table, dst + o).add(f32(dOut, src + o)).intoMemorySegment(table, dst + o, LE);
            }
            for (; j < count; j++) {
                long o = (long) j * 4;
                table.set(F32, dst + o, table.get(F32, dst + o) + dOut.get(F32, src + o));
            }
        }
    }

    // ---- swiglu ---------------------------------------------------------------------------------------------

    /**
     * With s = sigmoid(g): d/dg [g·s·u] = u·s·(1 + g·(1 - s)), d/du = g·s. Saturated gates stay finite: exp(-g)
     * overflowing to infinity gives s = 0.
     */
    static void swigluBackward(MemorySegment gate, MemorySegment up, MemorySegment dOut, MemorySegment dGate,
                               MemorySegment dUp, long from, long to) {
        long i = from;
        for (; i + L <= to; i += L) {
            long o = i * 4;
            FloatVector g = f32(gate, o), u = f32(up, o), dy = f32(dOut, o);
            FloatVector s = Exp.exp(g.neg()).add(1f);
            s = FloatVector.broadcast(F, 1f).div(s);
            dy.mul(g.mul(s)).intoMemorySegment(dUp, o, LE);
            FloatVector slope = g.mul(FloatVector.broadcast(F, 1f).sub(s)).add(1f);
            dy.mul(u).mul(s).mul(slope).intoMemorySegment(dGate, o, LE);
        }
        for (; i < to; i++) {
            float g = gate.getAtIndex(F32, i), u = up.getAtIndex(F32, i), dy = dOut.getAtIndex(F32, i);
            float s = 1f / (1f + Exp.exp(-g));
            dUp.setAtIndex(F32, i, dy * (g * s));
            dGate.setAtIndex(F32, i, dy * u * s * (g * (1f - s) + 1f));
        }
    }

    // ---- cross-entropy --------------------------------------------------------------------------------------

    /**
     * One row of fused cross-entropy, in place: returns logsumexp(row) - row[target] and leaves
     * (softmax(row) - onehot(target)) · gradScale. The max is subtracted before exp, so no logit overflows.
     */
    static float crossEntropyRow(MemorySegment logits, long base, int vocab, int target, float gradScale) {
        long b = base * Float.BYTES;
        float targetLogit = logits.getAtIndex(F32, base + target);
        FloatVector mv = FloatVector.broadcast(F, Float.NEGATIVE_INFINITY);
        int j = 0;
        for (; j + L <= vocab; j += L) mv = mv.max(f32(logits, b + (long) j * 4));
        float max = mv.reduceLanes(MAX);
        for (; j < vocab; j++) max = Math.max(max, logits.getAtIndex(F32, base + j));
        // The exponentials overwrite the logits; their sum is kept in double, a float run at a time.
        double sum = 0;
        j = 0;
        while (j + L <= vocab) {
            int runEnd = Math.min(vocab - vocab % L, j + FLOAT_RUN);
            FloatVector sv = FloatVector.zero(F);
            for (; j < runEnd; j += L) {
                long o = b + (long) j * 4;
                FloatVector e = Exp.exp(f32(logits, o).sub(max));
                e.intoMemorySegment(logits, o, LE);
                sv = sv.add(e);
            }
            sum += Lanes.sum(sv);
        }
        for (; j < vocab; j++) {
            float e = Exp.exp(logits.getAtIndex(F32, base + j) - max);
            logits.setAtIndex(F32, base + j, e);
            sum += e;
        }
        float factor = (float) (gradScale / sum);
        j = 0;
        for (; j + L <= vocab; j += L) {
            long o = b + (long) j * 4;
            f32(logits, o).mul(factor).intoMemorySegment(logits, o, LE);
        }
        for (; j < vocab; j++) logits.setAtIndex(F32, base + j, logits.getAtIndex(F32, base + j) * factor);
        logits.setAtIndex(F32, base + target, logits.getAtIndex(F32, base + target) - gradScale);
        return (float) (max + Math.log(sum) - targetLogit);
    }

    // ---- optimizer and reductions ---------------------------------------------------------------------------

    /**
     * One AdamW step over [from, to), in torch's float32 order of operations (its CPU kernels, vectorized path):
     * {@code p *= decay}; {@code m = fma(1-b1, g - m, m)} (lerp); {@code v = v·b2 + ((1-b2)·g)·g};
     * {@code p = p + (-stepSize·m) / (sqrt(v)/bc2Sqrt + eps)}. The scalars come from double, as torch's Python
     * scalars do, rounded to float once.
     */
    static void adamw(MemorySegment param, MemorySegment grad, MemorySegment m, MemorySegment v, float decay,
                      float oneMinusBeta1, float beta2, float oneMinusBeta2, float negStepSize, float bc2Sqrt,
                      float eps, long from, long to) {
        long i = from;
        for (; i + L <= to; i += L) {
            long o = i * 4;
            FloatVector g = f32(grad, o);
            FloatVector p = f32(param, o).mul(decay);
            FloatVector mi = f32(m, o);
            mi = g.sub(mi).fma(FloatVector.broadcast(F, oneMinusBeta1), mi);
            FloatVector vi = f32(v, o).mul(beta2);
            vi = vi.add(g.mul(oneMinusBeta2).mul(g));
            FloatVector denom = vi.sqrt().div(bc2Sqrt).add(eps);
            p = p.add(mi.mul(negStepSize).div(denom));
            p.intoMemorySegment(param, o, LE);
            mi.intoMemorySegment(m, o, LE);
            vi.intoMemorySegment(v, o, LE);
        }
        for (; i < to; i++) {
            float g = grad.getAtIndex(F32, i);
            float p = param.getAtIndex(F32, i) * decay;
            float mi = m.getAtIndex(F32, i);
            mi = Math.fma(oneMinusBeta1, g - mi, mi);
            float vi = v.getAtIndex(F32, i) * beta2;
            vi = vi + g * oneMinusBeta2 * g;
            float denom = (float) Math.sqrt(vi) / bc2Sqrt + eps;
            p = p + negStepSize * mi / denom;
            param.setAtIndex(F32, i, p);
            m.setAtIndex(F32, i, mi);
            v.setAtIndex(F32, i, vi);
        }
    }

    /** Σ x² over [from, to), each element widened to double before it is squared (exact) and added. */
    /**
     * AdamW over a parameter and a gradient of any float dtype, moments in the parameter's: each value widened to
     * float, the same float operations as {@link #adamw(MemorySegment, MemorySegment, MemorySegment, MemorySegment,
     * float, float, float, float, float, float, float, long, long)}'s scalar tail, each result rounded to its dtype
     * (nearest even), as the CUDA kernel does.
     */
    static void adamw(MemorySegment param, DType pt, MemorySegment grad, DType gt, MemorySegment m, MemorySegment v,
                      float decay, float oneMinusBeta1, float beta2, float oneMinusBeta2, float negStepSize,
                      float bc2Sqrt, float eps, long from, long to) {
        for (long i = from; i < to; i++) {
            float g = HostConversions.getFloat(grad, gt, i);
            float p = HostConversions.getFloat(param, pt, i) * decay;
            float mi = HostConversions.getFloat(m, pt, i);
            mi = Math.fma(oneMinusBeta1, g - mi, mi);
            float vi = HostConversions.getFloat(v, pt, i) * beta2;
            vi = vi + g * oneMinusBeta2 * g;
            float denom = (float) Math.sqrt(vi) / bc2Sqrt + eps;
            p = p + negStepSize * mi / denom;
            HostConversions.setFloat(param, pt, i, p);
            HostConversions.setFloat(m, pt, i, mi);
            HostConversions.setFloat(v, pt, i, vi);
        }
    }

    /** The sum of squares of elements [from, to) of a tensor of any float dtype, in double. */
    static double sumOfSquares(MemorySegment x, DType type, long from, long to) {
        double sum = 0;
        for (long i = from; i < to; i++) {
            double e = HostConversions.getFloat(x, type, i);
            sum += e * e;
        }
        return sum;
    }

    static double sumOfSquares(MemorySegment x, long from, long to) {
        DoubleVector a0 = DoubleVector.zero(D), a1 = a0;
        long i = from;
        for (; i + L <= to; i += L) {
            FloatVector f = f32(x, i * 4);
            DoubleVector lo = (DoubleVector) f.convertShape(F2D, D, 0), hi = (DoubleVector) f.convertShape(F2D, D, 1);
            a0 = lo.fma(lo, a0);
            a1 = hi.fma(hi, a1);
        }
        double sum = Lanes.sum(a0.add(a1));
        for (; i < to; i++) {
            double e = x.getAtIndex(F32, i);
            sum += e * e;
        }
        return sum;
    }

    /** x[from..to) *= s. */
    static void scale(MemorySegment x, float s, long from, long to) {
        long i = from;
        for (; i + L <= to; i += L) f32(x, i * 4).mul(s).intoMemorySegment(x, i * 4, LE);
        for (; i < to; i++) x.setAtIndex(F32, i, x.getAtIndex(F32, i) * s);
    }

    /** Longs per vector: each holds one group's hash, whose four 16-bit draws then widen to four int lanes. */
    private static final VectorSpecies<Long> LONGS = LongVector.SPECIES_PREFERRED;
    private static final VectorSpecies<Integer> INTS_OF_LONGS = LONGS.withLanes(int.class);
    private static final VectorSpecies<Float> FLOATS_OF_LONGS = LONGS.withLanes(float.class);

    /**
     * out[i] = 0 if uniform(seed, i) < p, else x[i]·keepScale, for i in [from, to): {@link DropoutHash} computed in
     * 64-bit vector lanes, one hash per group of four elements, its four 16-bit draws compared as integers with
     * {@link DropoutHash#dropThreshold}, so the vector and scalar paths draw the same numbers.
     */
    static void dropout(MemorySegment x, MemorySegment out, float p, float keepScale, long seed, long from, long to) {
        int threshold = DropoutHash.dropThreshold(p);
        int groups = LONGS.length(), half = INTS_OF_LONGS.length(); // 2 * groups ints, 4 * groups elements
        LongVector lane = LongVector.zero(LONGS).addIndex(1);
        long i = from;
        for (; (i & 3) != 0 && i < to; i++) dropoutOne(x, out, keepScale, seed, threshold, i); // vectors start on a group
        for (; i + 4L * groups <= to; i += 4L * groups) {
            LongVector z = lane.add((i >>> 2) + 1).mul(0x9E3779B97F4A7C15L).add(seed);
            z = z.lanewise(XOR, z.lanewise(LSHR, 30)).mul(0xBF58476D1CE4E5B9L);
            z = z.lanewise(XOR, z.lanewise(LSHR, 27)).mul(0x94D049BB133111EBL);
            z = z.lanewise(XOR, z.lanewise(LSHR, 31));
            // Read as little-endian shorts, the hashes are the draws in element order; widened without sign, in halves.
            ShortVector draws = z.reinterpretAsShorts();
            for (int part = 0; part < 2; part++) {
                IntVector bits = ((IntVector) draws.convertShape(S2I, INTS_OF_LONGS, part)).and(0xFFFF);
                VectorMask<Float> drop = bits.compare(LT, threshold).cast(FLOATS_OF_LONGS);
                long e = i + (long) part * half;
                FloatVector kept = FloatVector.fromMemorySegment(FLOATS_OF_LONGS, x, e * 4, LE).mul(keepScale);
                kept.blend(0f, drop).intoMemorySegment(out, e * 4, LE);
            }
        }
        for (; i < to; i++) dropoutOne(x, out, keepScale, seed, threshold, i);
    }

    private static void dropoutOne(MemorySegment x, MemorySegment out, float keepScale, long seed, int threshold, long i) {
        float kept = x.getAtIndex(F32, i) * keepScale;
        out.setAtIndex(F32, i, DropoutHash.bits(seed, i) < threshold ? 0f : kept);
    }
}
