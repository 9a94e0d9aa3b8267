package dev.lora4j.backend.cpu;

import jdk.incubator.vector.FloatVector;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static dev.lora4j.backend.cpu.VectorShapes.F;
import static dev.lora4j.backend.cpu.VectorShapes.L;
import static dev.lora4j.backend.cpu.VectorShapes.LE;
import static dev.lora4j.backend.cpu.VectorShapes.f32;
import static jdk.incubator.vector.VectorOperators.ADD;

/**
 * The element-wise and per-row kernels of the CPU backend (all but matmul and attention), on F32 data, free of
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
        // One computation of the scale for the forward and the backward pass, so they can never disagree.
        float inv = CpuTrainingKernels.inverseRms(x, base, d, eps);
        int j = 0;
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

    /** out (from byte o) += a[from..from+count). */
    static void addArray(MemorySegment out, long o, float[] a, int from, int count) {
        int j = 0;
        for (; j + L <= count; j += L) {
            long b = o + (long) j * 4;
            f32(out, b).add(FloatVector.fromArray(F, a, from + j)).intoMemorySegment(out, b, LE);
        }
        for (; j < count; j++) out.set(F32, o + (long) j * 4, out.get(F32, o + (long) j * 4) + a[from + j]);
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
            FloatVector denominator = Exp.exp(g.neg()).add(1f);
            g.div(denominator).mul(f32(up, i * 4)).intoMemorySegment(out, i * 4, LE);
        }
        for (; i < to; i++) {
            float a = gate.getAtIndex(F32, i);
            out.setAtIndex(F32, i, a / (1f + Exp.exp(-a)) * up.getAtIndex(F32, i));
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
}
