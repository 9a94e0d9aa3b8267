package dev.lora4j.backend.cpu;

import jdk.incubator.vector.FloatVector;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static dev.lora4j.backend.cpu.VectorShapes.F;
import static dev.lora4j.backend.cpu.VectorShapes.L;
import static dev.lora4j.backend.cpu.VectorShapes.LE;
import static dev.lora4j.backend.cpu.VectorShapes.f32;
import static jdk.incubator.vector.VectorOperators.ADD;
import static jdk.incubator.vector.VectorOperators.EXP;
import static jdk.incubator.vector.VectorOperators.MAX;
import static jdk.incubator.vector.VectorOperators.NEG;

/**
 * The element-wise and per-row kernels of the CPU backend (everything but matmul), on F32 data, free of
 * threading concerns. Offsets and counts are in elements unless named otherwise.
 */
final class CpuKernels {
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;

    private CpuKernels() {}

    static String vectorDescription() {
        return VectorShapes.describe();
    }

    /** out = weight * (x / sqrt(mean(x²) + eps)) for the row of d elements at {@code base}. */
    static void rmsNormRow(MemorySegment x, MemorySegment out, long base, int d, MemorySegment weight, float eps) {
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
        float ss = s0.add(s1).reduceLanes(ADD);
        for (; j < d; j++) {
            float v = x.getAtIndex(F32, base + j);
            ss += v * v;
        }
        float inv = (float) (1.0 / Math.sqrt(ss / d + eps));
        j = 0;
        for (; j + L <= d; j += L) {
            long o = (long) j * 4;
            f32(weight, o).mul(f32(x, b + o).mul(inv)).intoMemorySegment(out, b + o, LE);
        }
        for (; j < d; j++) out.setAtIndex(F32, base + j, weight.getAtIndex(F32, j) * (x.getAtIndex(F32, base + j) * inv));
    }

    /** x[from..to) += y[from..to). */
    static void add(MemorySegment x, MemorySegment y, long from, long to) {
        long i = from;
        for (; i + L <= to; i += L) f32(x, i * 4).add(f32(y, i * 4)).intoMemorySegment(x, i * 4, LE);
        for (; i < to; i++) x.setAtIndex(F32, i, x.getAtIndex(F32, i) + y.getAtIndex(F32, i));
    }

    /** The row of d elements at {@code base} gets bias[0..d) added. */
    static void addRow(MemorySegment x, long base, MemorySegment bias, int d) {
        long b = base * Float.BYTES;
        int j = 0;
        for (; j + L <= d; j += L) {
            long o = (long) j * 4;
            f32(x, b + o).add(f32(bias, o)).intoMemorySegment(x, b + o, LE);
        }
        for (; j < d; j++) x.setAtIndex(F32, base + j, x.getAtIndex(F32, base + j) + bias.getAtIndex(F32, j));
    }

    /** out[i] = silu(gate[i]) * up[i] for i in [from, to). */
    static void swiglu(MemorySegment gate, MemorySegment up, MemorySegment out, long from, long to) {
        long i = from;
        for (; i + L <= to; i += L) {
            FloatVector g = f32(gate, i * 4);
            FloatVector denominator = g.lanewise(NEG).lanewise(EXP).add(1f);
            g.div(denominator).mul(f32(up, i * 4)).intoMemorySegment(out, i * 4, LE);
        }
        for (; i < to; i++) {
            float a = gate.getAtIndex(F32, i);
            out.setAtIndex(F32, i, a / (1f + (float) Math.exp(-a)) * up.getAtIndex(F32, i));
        }
    }

    /**
     * Rotates every head of the row at {@code base} ({@code width} elements) by the angles whose cosines and
     * sines are given for the headDim/2 pairs (j, j + headDim/2).
     */
    static void ropeRow(MemorySegment x, long base, int width, int headDim, float[] cos, float[] sin) {
        int half = headDim / 2;
        for (int h0 = 0; h0 < width; h0 += headDim) {
            long lo = (base + h0) * Float.BYTES, hi = lo + (long) half * Float.BYTES;
            int j = 0;
            for (; j + L <= half; j += L) {
                long o = (long) j * 4;
                FloatVector a = f32(x, lo + o), b = f32(x, hi + o);
                FloatVector c = FloatVector.fromArray(F, cos, j), s = FloatVector.fromArray(F, sin, j);
                a.mul(c).sub(b.mul(s)).intoMemorySegment(x, lo + o, LE);
                b.mul(c).add(a.mul(s)).intoMemorySegment(x, hi + o, LE);
            }
            for (; j < half; j++) {
                long ia = base + h0 + j, ib = ia + half;
                float a = x.getAtIndex(F32, ia), b = x.getAtIndex(F32, ib);
                x.setAtIndex(F32, ia, a * cos[j] - b * sin[j]);
                x.setAtIndex(F32, ib, b * cos[j] + a * sin[j]);
            }
        }
    }

    /**
     * One query head attending to key positions [first, last] of one KV head: softmax(q·kᵀ·scale)·v written to
     * out. {@code q0}, {@code kv0} and {@code out0} are byte offsets of the head's first element (kv0 in row 0);
     * {@code kvRow} is the byte length of a K/V row.
     */
    static void attendHead(MemorySegment q, long q0, MemorySegment k, MemorySegment v, long kv0, long kvRow,
                           int first, int last, int headDim, float scale, MemorySegment out, long out0) {
        int len = last - first + 1;
        float[] s = Scratch.get().scores(len);
        long k0 = kv0 + first * kvRow;
        int t = 0;
        for (; t + 4 <= len; t += 4) scores4(q, q0, k, k0 + t * kvRow, kvRow, headDim, scale, s, t);
        for (; t < len; t++) s[t] = dot(q, q0, k, k0 + t * kvRow, headDim) * scale;

        FloatVector mv = FloatVector.broadcast(F, Float.NEGATIVE_INFINITY);
        t = 0;
        for (; t + L <= len; t += L) mv = mv.max(FloatVector.fromArray(F, s, t));
        float max = mv.reduceLanes(MAX);
        for (; t < len; t++) max = Math.max(max, s[t]);

        FloatVector sv = FloatVector.zero(F);
        t = 0;
        for (; t + L <= len; t += L) {
            FloatVector e = FloatVector.fromArray(F, s, t).sub(max).lanewise(EXP);
            e.intoArray(s, t);
            sv = sv.add(e);
        }
        float sum = sv.reduceLanes(ADD);
        for (; t < len; t++) {
            s[t] = (float) Math.exp(s[t] - max);
            sum += s[t];
        }
        weightedSum(v, kv0 + first * kvRow, kvRow, len, headDim, s, 1f / sum, out, out0);
    }

    /** Four consecutive keys (rows kvRow apart from byte k0) against one query: s[at..at+3] = dot * scale. */
    private static void scores4(MemorySegment q, long q0, MemorySegment k, long k0, long kvRow, int headDim, float scale,
                                float[] s, int at) {
        long k1 = k0 + kvRow, k2 = k1 + kvRow, k3 = k2 + kvRow;
        FloatVector a0 = FloatVector.zero(F), a1 = a0, a2 = a0, a3 = a0;
        int hv = headDim - headDim % L;
        for (int j = 0; j < hv; j += L) {
            long o = (long) j * 4;
            FloatVector qv = f32(q, q0 + o);
            a0 = qv.fma(f32(k, k0 + o), a0);
            a1 = qv.fma(f32(k, k1 + o), a1);
            a2 = qv.fma(f32(k, k2 + o), a2);
            a3 = qv.fma(f32(k, k3 + o), a3);
        }
        float d0 = a0.reduceLanes(ADD), d1 = a1.reduceLanes(ADD), d2 = a2.reduceLanes(ADD), d3 = a3.reduceLanes(ADD);
        for (int j = hv; j < headDim; j++) {
            long o = (long) j * 4;
            float qj = q.get(F32, q0 + o);
            d0 += qj * k.get(F32, k0 + o);
            d1 += qj * k.get(F32, k1 + o);
            d2 += qj * k.get(F32, k2 + o);
            d3 += qj * k.get(F32, k3 + o);
        }
        s[at] = d0 * scale;
        s[at + 1] = d1 * scale;
        s[at + 2] = d2 * scale;
        s[at + 3] = d3 * scale;
    }

    private static float dot(MemorySegment a, long a0, MemorySegment b, long b0, int count) {
        FloatVector acc = FloatVector.zero(F);
        int cv = count - count % L;
        for (int j = 0; j < cv; j += L) acc = f32(a, a0 + (long) j * 4).fma(f32(b, b0 + (long) j * 4), acc);
        float sum = acc.reduceLanes(ADD);
        for (int j = cv; j < count; j++) sum += a.get(F32, a0 + (long) j * 4) * b.get(F32, b0 + (long) j * 4);
        return sum;
    }

    /**
     * out[0..headDim) = inv · Σ_t p[t]·v_t over the len rows from byte v0. Four vectors of the head at a time
     * are held in registers across all rows, so each V row is read in whole cache lines and nothing is stored
     * until the end.
     */
    private static void weightedSum(MemorySegment v, long v0, long kvRow, int len, int headDim, float[] p, float inv,
                                    MemorySegment out, long out0) {
        int j = 0;
        for (; j + 4 * L <= headDim; j += 4 * L) {
            long o = v0 + (long) j * 4;
            FloatVector a0 = FloatVector.zero(F), a1 = a0, a2 = a0, a3 = a0;
            for (int t = 0; t < len; t++) {
                FloatVector pt = FloatVector.broadcast(F, p[t]);
                long r = o + t * kvRow;
                a0 = f32(v, r).fma(pt, a0);
                a1 = f32(v, r + L * 4L).fma(pt, a1);
                a2 = f32(v, r + 2 * L * 4L).fma(pt, a2);
                a3 = f32(v, r + 3 * L * 4L).fma(pt, a3);
            }
            long w = out0 + (long) j * 4;
            a0.mul(inv).intoMemorySegment(out, w, LE);
            a1.mul(inv).intoMemorySegment(out, w + L * 4L, LE);
            a2.mul(inv).intoMemorySegment(out, w + 2 * L * 4L, LE);
            a3.mul(inv).intoMemorySegment(out, w + 3 * L * 4L, LE);
        }
        for (; j + L <= headDim; j += L) {
            long o = v0 + (long) j * 4;
            FloatVector a = FloatVector.zero(F);
            for (int t = 0; t < len; t++) a = f32(v, o + t * kvRow).fma(FloatVector.broadcast(F, p[t]), a);
            a.mul(inv).intoMemorySegment(out, out0 + (long) j * 4, LE);
        }
        for (; j < headDim; j++) {
            long o = v0 + (long) j * 4;
            float a = 0f;
            for (int t = 0; t < len; t++) a += p[t] * v.get(F32, o + t * kvRow);
            out.set(F32, out0 + (long) j * 4, a * inv);
        }
    }
}
