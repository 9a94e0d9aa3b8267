package dev.lora4j.backend.testing;

/**
 * bitsandbytes' AdamW kernels restated lane by lane from csrc/kernels.cu (docs/optimizers.md), on plain arrays, as
 * the reference the backends are compared with byte for byte: kOptimizerStatic8bit2StateBlockwise (ADAM) for 8-bit
 * states and kOptimizer32bit2State (ADAM) for 32-bit ones. It follows the kernel's own formulation where lora4j's
 * kernels restate it: the search for a code goes through bitsandbytes' {@code quadrants} array, a block is processed
 * as 256 lanes that each load (with bitsandbytes' fill values past the end) and then reduce, and the per-step
 * scalars are recomputed here from the float arguments. The few places where bitsandbytes' CUDA build rounds
 * differently (approximate __powf and __fdividef) follow lora4j's documented choice: powers in double rounded to
 * float, exact division.
 */
public final class BitsandbytesAdamReference {
    public static final int BLOCK = 256;

    private BitsandbytesAdamReference() {}

    /** One 8-bit step; updates every array in place. */
    public static void step8bit(float[] p, float[] g, byte[] state1, byte[] state2, float[] absmax1, float[] absmax2,
                                float[] qmap1, float[] qmap2, float lr, float beta1, float beta2, float eps,
                                float weightDecay, long step) {
        int n = p.length;
        float correction1 = 1.0f - (float) Math.pow(beta1, step);
        float correction2 = (float) Math.sqrt(1.0f - (float) Math.pow(beta2, step));
        float stepSize = (-lr * correction2) / correction1;
        float[] quadrants1 = quadrants(qmap1), quadrants2 = quadrants(qmap2);
        for (int base = 0; base < n; base += BLOCK) {
            int valid = Math.min(BLOCK, n - base);
            int blk = base / BLOCK;
            float[] gVals = new float[BLOCK], s1 = new float[BLOCK], s2 = new float[BLOCK];
            int[] c1s = new int[BLOCK], c2s = new int[BLOCK];
            for (int j = 0; j < BLOCK; j++) { // LoadT(g, 0.0f), LoadChar(state1, 128), LoadChar(state2, 0)
                gVals[j] = j < valid ? g[base + j] : 0.0f;
                c1s[j] = j < valid ? state1[base + j] & 0xff : 128;
                c2s[j] = j < valid ? state2[base + j] & 0xff : 0;
            }
            float newMax1 = -Float.MAX_VALUE, newMax2 = -Float.MAX_VALUE;
            for (int j = 0; j < BLOCK; j++) {
                if (!Float.isNaN(gVals[j]) && !Float.isInfinite(gVals[j])) {
                    s2[j] = qmap2[c2s[j]] * absmax2[blk];
                    float gVal = gVals[j];
                    s2[j] = (s2[j] * beta2) + (((1.0f - beta2) * gVal * gVal));
                    s1[j] = qmap1[c1s[j]] * absmax1[blk];
                    s1[j] = (s1[j] * beta1) + (((1.0f - beta1) * gVal));
                } else {
                    s1[j] = 0.0f;
                    s2[j] = 0.0f;
                }
                newMax1 = fmaxf(newMax1, Math.abs(s1[j]));
                newMax2 = fmaxf(newMax2, Math.abs(s2[j]));
            }
            absmax1[blk] = newMax1;
            absmax2[blk] = newMax2;
            for (int j = 0; j < valid; j++) {
                if (!Float.isNaN(gVals[j]) && !Float.isInfinite(gVals[j])) {
                    p[base + j] = p[base + j] + (stepSize * (s1[j] / ((float) Math.sqrt(s2[j]) + (correction2 * eps))));
                    if (weightDecay > 0.0f) p[base + j] = p[base + j] * (1.0f - (lr * weightDecay));
                }
            }
            for (int j = 0; j < valid; j++) {
                int c1 = quantize2D(quadrants1, qmap1, s1[j] / newMax1, true);
                int c2 = quantize2D(quadrants2, qmap2, s2[j] / newMax2, false);
                if (signbit(qmap1[c1]) != signbit(s1[j])) {
                    if (s1[j] > 0.0f) c1 += 1;
                    else c1 -= 1;
                }
                state1[base + j] = (byte) c1; // unsigned char arithmetic: -1 becomes 255
                state2[base + j] = (byte) c2;
            }
        }
    }

    /** One 32-bit step; updates p, m and v in place. */
    public static void step32bit(float[] p, float[] g, float[] m, float[] v, float lr, float beta1, float beta2,
                                 float eps, float weightDecay, long step) {
        float correction1 = 1.0f - (float) Math.pow(beta1, step);
        float correction2 = (float) Math.sqrt(1.0f - (float) Math.pow(beta2, step));
        float stepSize = -lr * correction2 / correction1;
        float updateScale = 1.0f;
        for (int j = 0; j < p.length; j++) {
            m[j] = m[j] * beta1 + ((1.0f - beta1) * g[j]);
            v[j] = v[j] * beta2 + ((1.0f - beta2) * (g[j] * g[j]));
            p[j] = p[j] + (updateScale * stepSize * (m[j] / ((float) Math.sqrt(v[j]) + (eps * correction2))));
            if (weightDecay > 0.0f) p[j] = p[j] * (1.0f - (lr * weightDecay));
        }
    }

    /** The kernel's quadrants: the map's values at 63, 127 and 191 ({@code k * 256 / 4 + 256 / 4 - 1}). */
    private static float[] quadrants(float[] qmap) {
        float[] q = new float[3];
        for (int k = 0; k < 3; k++) q[k] = qmap[(k * 256 / 4) + (256 / 4 - 1)];
        return q;
    }

    /** quantize_2D as written in csrc/kernels.cu, quadrants and all. */
    public static int quantize2D(float[] quadrants, float[] smemCode, float x, boolean signed) {
        int pivot = 127;
        int upperPivot = 255;
        int lowerPivot = 0;
        float lower = signed ? -1.0f : 0.0f;
        float upper = 1.0f;
        float midpoint;
        float val = quadrants[1];
        int localPivot = 1;
        int offset = 1;
        for (int i = 64; i > 0; i >>= 1) {
            if (x > val) {
                lowerPivot = pivot;
                lower = val;
                pivot += i;
                localPivot += offset;
            } else {
                upperPivot = pivot;
                upper = val;
                pivot -= i;
                localPivot -= offset;
            }
            val = i >= 64 ? quadrants[localPivot] : smemCode[pivot];
            offset -= 1;
        }
        if (x > val) {
            midpoint = (upper + val) * 0.5f;
            if (x > midpoint) return upperPivot;
            return pivot;
        }
        midpoint = (lower + val) * 0.5f;
        if (x < midpoint) return lowerPivot;
        return pivot;
    }

    /** The index of the code nearest to x in double arithmetic (the lower one of an exact tie). */
    public static int nearestInDouble(float[] code, double x) {
        int best = 0;
        for (int i = 1; i < code.length; i++) if (Math.abs(code[i] - x) < Math.abs(code[best] - x)) best = i;
        return best;
    }

    private static float fmaxf(float a, float b) {
        if (Float.isNaN(a)) return b;
        if (Float.isNaN(b)) return a;
        return Math.max(a, b);
    }

    private static boolean signbit(float x) {
        return (Float.floatToRawIntBits(x) & 0x80000000) != 0;
    }
}
