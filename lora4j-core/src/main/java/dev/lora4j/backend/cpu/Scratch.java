package dev.lora4j.backend.cpu;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/**
 * Per-thread working memory of the kernels (packed matmul operands, attention scores, conversion staging), kept
 * between calls so that hot loops never allocate. Each buffer grows to the largest request and is freed with its
 * thread. A buffer holds leftovers from earlier use; callers write before they read.
 */
final class Scratch {
    private static final ThreadLocal<Scratch> LOCAL = ThreadLocal.withInitial(Scratch::new);

    private MemorySegment params = MemorySegment.NULL;
    private float[] xPack = new float[0];
    private float[] wPack = new float[0];
    private float[] outPack = new float[0];
    private float[] partialSums = new float[0];
    private float[] scores = new float[0];
    private float[] attentionOutput = new float[0];
    private float[] attentionQueries = new float[0];
    private float[] attentionCache = new float[0];
    private short[] halves = new short[0];
    private float[] floats = new float[0];

    private Scratch() {}

    static Scratch get() {
        return LOCAL.get();
    }

    /**
     * Native memory for an op's small F32 parameters (a norm weight, a bias), used by the thread that issued the
     * op, apart from the other buffers so that a worker running on that thread cannot overwrite them.
     */
    MemorySegment params(long floats) {
        long bytes = floats * Float.BYTES;
        if (params.byteSize() < bytes) params = Arena.ofAuto().allocate(Math.max(bytes, 2 * params.byteSize()), 64);
        return params;
    }

    /** The x rows of a matmul block, one slice of k each. */
    float[] xPack(int count) {
        if (xPack.length < count) xPack = new float[count];
        return xPack;
    }

    /** The weight rows of a matmul block, one slice of k each, widened to F32. */
    float[] wPack(int count) {
        if (wPack.length < count) wPack = new float[count];
        return wPack;
    }

    /** The lane-wise partial sums of every dot product of a matmul block, between slices of k. */
    float[] partialSums(int count) {
        if (partialSums.length < count) partialSums = new float[count];
        return partialSums;
    }

    /** The results of one matmul block, before they are written to the output tensor. */
    float[] outPack(int count) {
        if (outPack.length < count) outPack = new float[count];
        return outPack;
    }

    float[] scores(int count) {
        if (scores.length < count) scores = new float[Math.max(count, 2 * scores.length)];
        return scores;
    }

    /** The unnormalized outputs of the query heads of one attention group. */
    float[] attentionOutput(int count) {
        if (attentionOutput.length < count) attentionOutput = new float[count];
        return attentionOutput;
    }

    /** The queries of one attention block, packed. */
    float[] attentionQueries(int count) {
        if (attentionQueries.length < count) attentionQueries = new float[count];
        return attentionQueries;
    }

    /** A block of one head's key or value rows, packed. */
    float[] attentionCache(int count) {
        if (attentionCache.length < count) attentionCache = new float[count];
        return attentionCache;
    }

    /** Staging for F16 conversions, which the JIT vectorizes only over arrays. */
    short[] halves(int count) {
        if (halves.length < count) halves = new short[count];
        return halves;
    }

    float[] floats(int count) {
        if (floats.length < count) floats = new float[count];
        return floats;
    }
}
