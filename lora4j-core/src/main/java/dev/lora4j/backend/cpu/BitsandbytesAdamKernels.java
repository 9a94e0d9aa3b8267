package dev.lora4j.backend.cpu;

import dev.lora4j.backend.BitsandbytesAdam;
import dev.lora4j.backend.BitsandbytesAdam.Scalars;
import dev.lora4j.quant.Blockwise8bit;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * bitsandbytes' AdamW updates on the CPU (Backend.adamw8bit and adamw32bit): the 8-bit blockwise kernel and the
 * 32-bit one, as docs/optimizers.md states them. Each element goes through the same float operations in the same
 * order as lora4j's CUDA kernels (optimizer8bit.cu), every operation rounded once, so both backends write the same
 * bytes; blocks are independent, so the result does not depend on the number of threads.
 */
final class BitsandbytesAdamKernels {
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfByte U8 = ValueLayout.JAVA_BYTE;
    private static final int BLOCK = BitsandbytesAdam.BLOCK_SIZE;
    /** Blocks of 256 elements per task. */
    private static final int BLOCKS_PER_TASK = 64;
    /** bitsandbytes loads code 128 for m (and 0 for v) in the lanes of a block past the end of the tensor. */
    private static final int PADDING_CODE_M = 128, PADDING_CODE_V = 0;

    private BitsandbytesAdamKernels() {}

    static void adamw8bit(Parallel parallel, Tensor param, Tensor grad, Tensor m8, Tensor v8, Tensor absmaxM,
                          Tensor absmaxV, Tensor codeSigned, Tensor codeUnsigned, float lr, float beta1, float beta2,
                          float eps, float weightDecay, long step) {
        String op = "adamw8bit";
        require(param, DType.F32, op + " param");
        require(grad, DType.F32, op + " grad");
        require(m8, DType.U8, op + " m8");
        require(v8, DType.U8, op + " v8");
        require(absmaxM, DType.F32, op + " absmaxM");
        require(absmaxV, DType.F32, op + " absmaxV");
        require(codeSigned, DType.F32, op + " codeSigned");
        require(codeUnsigned, DType.F32, op + " codeUnsigned");
        long n = param.numel();
        for (Tensor t : new Tensor[] {grad, m8, v8}) requireCount(t, n, op + ": grad, m8 and v8 must have as many elements as param " + param);
        long blocks = BitsandbytesAdam.blocks(n);
        requireCount(absmaxM, blocks, op + ": absmaxM must have one value per block of 256 elements (" + blocks + ")");
        requireCount(absmaxV, blocks, op + ": absmaxV must have one value per block of 256 elements (" + blocks + ")");
        requireCount(codeSigned, BitsandbytesAdam.CODES, op + ": codeSigned must hold the 256 values of a dynamic map");
        requireCount(codeUnsigned, BitsandbytesAdam.CODES, op + ": codeUnsigned must hold the 256 values of a dynamic map");
        if (blocks > (long) Integer.MAX_VALUE * BLOCKS_PER_TASK) throw new IllegalArgumentException(op + ": too many elements: " + n);
        Scalars s = Scalars.of(lr, beta1, beta2, eps, weightDecay, step);
        float[] qs = floats(codeSigned), qu = floats(codeUnsigned);
        MemorySegment p = CpuTrainingOps.seg(param), g = CpuTrainingOps.seg(grad), m = CpuTrainingOps.seg(m8),
                v = CpuTrainingOps.seg(v8), am = CpuTrainingOps.seg(absmaxM), av = CpuTrainingOps.seg(absmaxV);
        int tasks = (int) Math.ceilDiv(blocks, BLOCKS_PER_TASK);
        parallel.forRange(tasks, 1, (from, to) -> {
            float[] s1 = new float[BLOCK], s2 = new float[BLOCK];
            for (long b = (long) from * BLOCKS_PER_TASK, end = Math.min(blocks, (long) to * BLOCKS_PER_TASK); b < end; b++) {
                block8bit(p, g, m, v, am, av, qs, qu, s, n, b, s1, s2);
            }
        });
    }

    /** One block of 256 elements: new moments, their absmax, the parameters, then the moments' new codes. */
    private static void block8bit(MemorySegment p, MemorySegment g, MemorySegment m8, MemorySegment v8, MemorySegment absmaxM,
                                  MemorySegment absmaxV, float[] qs, float[] qu, Scalars s, long n, long block,
                                  float[] s1, float[] s2) {
        long base = block * BLOCK;
        int valid = (int) Math.min(BLOCK, n - base);
        float oldM = absmaxM.getAtIndex(F32, block), oldV = absmaxV.getAtIndex(F32, block);
        float maxM = -Float.MAX_VALUE, maxV = -Float.MAX_VALUE;
        // Every lane of the block, those past the end included: bitsandbytes' reduction counts them too.
        for (int j = 0; j < BLOCK; j++) {
            float gj;
            int c1, c2;
            if (j < valid) {
                gj = g.getAtIndex(F32, base + j);
                c1 = m8.get(U8, base + j) & 0xff;
                c2 = v8.get(U8, base + j) & 0xff;
            } else {
                gj = 0.0f;
                c1 = PADDING_CODE_M;
                c2 = PADDING_CODE_V;
            }
            float a = 0.0f, b = 0.0f;
            if (Float.isFinite(gj)) {
                b = qu[c2] * oldV;
                b = b * s.beta2() + (s.oneMinusBeta2() * gj) * gj;
                a = qs[c1] * oldM;
                a = a * s.beta1() + s.oneMinusBeta1() * gj;
            }
            s1[j] = a;
            s2[j] = b;
            maxM = larger(maxM, Math.abs(a));
            maxV = larger(maxV, Math.abs(b));
        }
        absmaxM.setAtIndex(F32, block, maxM);
        absmaxV.setAtIndex(F32, block, maxV);
        for (int j = 0; j < valid; j++) {
            long i = base + j;
            if (Float.isFinite(g.getAtIndex(F32, i))) {
                float pj = p.getAtIndex(F32, i) + s.stepSize() * (s1[j] / ((float) Math.sqrt(s2[j]) + s.epsCorrection2()));
                if (s.decays()) pj = pj * s.decay();
                p.setAtIndex(F32, i, pj);
            }
            m8.set(U8, i, (byte) codeOfM(qs, s1[j], maxM));
            v8.set(U8, i, (byte) quantize(qu, s2[j] / maxV, false));
        }
    }

    /** The code of a first moment: the nearest by bitsandbytes' search, moved one step back to the moment's sign if the search lost it. */
    static int codeOfM(float[] code, float m, float absmax) {
        int c = quantize(code, m / absmax, true);
        if (signBit(code[c]) != signBit(m)) c = (m > 0.0f ? c + 1 : c - 1) & 0xff;
        return c;
    }

    /**
     * bitsandbytes' quantize_2D: a binary search of the sorted map for x with its initial bounds (-1 or 0 below,
     * 1 above), then the nearer of the two neighbours by the midpoint, a tie going to the last probe. A NaN x ends
     * at code 0, as every comparison with it is false.
     */
    static int quantize(float[] code, float x, boolean signed) {
        return Blockwise8bit.search(code, x, signed ? -1.0f : 0.0f, false);
    }

    static void adamw32bit(Parallel parallel, Tensor param, Tensor grad, Tensor m, Tensor v, float lr, float beta1,
                           float beta2, float eps, float weightDecay, long step) {
        String op = "adamw32bit";
        for (Tensor t : new Tensor[] {param, grad, m, v}) require(t, DType.F32, op + " param, grad, m and v");
        long n = param.numel();
        for (Tensor t : new Tensor[] {grad, m, v}) requireCount(t, n, op + ": grad, m and v must have as many elements as param " + param);
        Scalars s = Scalars.of(lr, beta1, beta2, eps, weightDecay, step);
        MemorySegment p = CpuTrainingOps.seg(param), g = CpuTrainingOps.seg(grad), ms = CpuTrainingOps.seg(m), vs = CpuTrainingOps.seg(v);
        long grain = (long) BLOCK * BLOCKS_PER_TASK;
        int tasks = Math.toIntExact(Math.ceilDiv(n, grain));
        parallel.forRange(tasks, 1, (from, to) -> {
            for (long i = from * grain, end = Math.min(n, to * grain); i < end; i++) {
                float gi = g.getAtIndex(F32, i);
                float mi = ms.getAtIndex(F32, i) * s.beta1() + s.oneMinusBeta1() * gi;
                float vi = vs.getAtIndex(F32, i) * s.beta2() + s.oneMinusBeta2() * (gi * gi);
                float pi = p.getAtIndex(F32, i) + s.stepSize() * (mi / ((float) Math.sqrt(vi) + s.epsCorrection2()));
                if (s.decays()) pi = pi * s.decay();
                p.setAtIndex(F32, i, pi);
                ms.setAtIndex(F32, i, mi);
                vs.setAtIndex(F32, i, vi);
            }
        });
    }

    /** The larger of a running maximum and x; a NaN x is passed over, as fmaxf passes over it. */
    private static float larger(float max, float x) {
        return x > max ? x : max;
    }

    private static boolean signBit(float x) {
        return Float.floatToRawIntBits(x) < 0;
    }

    private static float[] floats(Tensor t) {
        return CpuTrainingOps.seg(t).toArray(F32);
    }

    private static void require(Tensor t, DType type, String what) {
        if (t.dtype() != type) throw new IllegalArgumentException(what + " must be " + type + ", got " + t);
    }

    private static void requireCount(Tensor t, long count, String what) {
        if (t.numel() != count) throw new IllegalArgumentException(what + ", got " + t);
    }
}
