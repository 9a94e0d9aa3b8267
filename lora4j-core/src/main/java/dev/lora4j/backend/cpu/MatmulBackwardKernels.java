package dev.lora4j.backend.cpu;

import jdk.incubator.vector.FloatVector;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static dev.lora4j.backend.cpu.VectorShapes.F;
import static dev.lora4j.backend.cpu.VectorShapes.L;

/**
 * The two backward forms of {@code out = x · wᵀ}, on F32 operands, free of threading concerns. Both are sums of
 * scaled rows: a row of dX is Σ_c dY[r, c] · w[c, :] and a row of dW is Σ_r dY[r, c] · x[r, :], so each result
 * row is accumulated in an array, a scaled source row at a time, in the order of the sum's index.
 */
final class MatmulBackwardKernels {
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;

    private MatmulBackwardKernels() {}

    /** Rows [r0, r1) of dX[n, k] (+)= dY[n, m] · w[m, k]. */
    static void inputRows(MemorySegment dY, MemorySegment w, MemorySegment dX, int k, int m, int r0, int r1,
                          boolean accumulate) {
        float[] acc = new float[k];
        for (int r = r0; r < r1; r++) {
            start(acc, dX, (long) r * k, accumulate);
            for (int c = 0; c < m; c++) axpy(dY.getAtIndex(F32, (long) r * m + c), w, (long) c * k, acc);
            MemorySegment.copy(acc, 0, dX, F32, (long) r * k * 4, k);
        }
    }

    /** Rows [c0, c1) of dW[m, k] (+)= dY[n, m]ᵀ · x[n, k]. */
    static void weightRows(MemorySegment dY, MemorySegment x, MemorySegment dW, int n, int k, int m, int c0, int c1,
                           boolean accumulate) {
        float[] acc = new float[k];
        for (int c = c0; c < c1; c++) {
            start(acc, dW, (long) c * k, accumulate);
            for (int r = 0; r < n; r++) axpy(dY.getAtIndex(F32, (long) r * m + c), x, (long) r * k, acc);
            MemorySegment.copy(acc, 0, dW, F32, (long) c * k * 4, k);
        }
    }

    private static void start(float[] acc, MemorySegment out, long base, boolean accumulate) {
        if (accumulate) MemorySegment.copy(out, F32, base * 4, acc, 0, acc.length);
        else java.util.Arrays.fill(acc, 0f);
    }

    /** acc += a · src[base .. base + acc.length). */
    private static void axpy(float a, MemorySegment src, long base, float[] acc) {
        FloatVector av = FloatVector.broadcast(F, a);
        int j = 0, k = acc.length;
        for (; j + L <= k; j += L) {
            VectorShapes.f32(src, (base + j) * 4).fma(av, FloatVector.fromArray(F, acc, j)).intoArray(acc, j);
        }
        for (; j < k; j++) acc[j] = Math.fma(src.getAtIndex(F32, base + j), a, acc[j]);
    }
}
