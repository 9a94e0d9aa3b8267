package dev.lora4j.backend.cpu;

import dev.lora4j.backend.HostConversions;
import dev.lora4j.tensor.DType;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/** The inner loops of the CPU backend, one static method per kernel, free of threading concerns. */
final class CpuKernels {
    private static final ValueLayout.OfFloat F = ValueLayout.JAVA_FLOAT_UNALIGNED;

    private CpuKernels() {}

    static String vectorDescription() {
        return "scalar kernels";
    }

    static void rmsNormRow(MemorySegment x, MemorySegment out, long base, int d, float[] w, float eps) {
        float ss = 0f;
        for (int j = 0; j < d; j++) {
            float v = x.getAtIndex(F, base + j);
            ss += v * v;
        }
        float inv = (float) (1.0 / Math.sqrt(ss / d + eps));
        for (int j = 0; j < d; j++) out.setAtIndex(F, base + j, w[j] * (x.getAtIndex(F, base + j) * inv));
    }

    /** Output columns [m0, m1) of out[n, m] = x[n, k] · w[m, k]ᵀ. */
    static void matmulBlock(MemorySegment x, MemorySegment w, DType wt, MemorySegment out,
                            long n, long k, long m, long m0, long m1, boolean accumulate) {
        float[] row = new float[(int) k];
        for (long c = m0; c < m1; c++) {
            for (int j = 0; j < k; j++) row[j] = HostConversions.getFloat(w, wt, c * k + j);
            for (long r = 0; r < n; r++) {
                float dot = 0f;
                long xb = r * k;
                for (int j = 0; j < k; j++) dot += x.getAtIndex(F, xb + j) * row[j];
                long o = r * m + c;
                out.setAtIndex(F, o, accumulate ? out.getAtIndex(F, o) + dot : dot);
            }
        }
    }
}
