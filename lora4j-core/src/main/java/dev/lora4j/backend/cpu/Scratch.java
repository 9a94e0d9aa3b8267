package dev.lora4j.backend.cpu;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/**
 * Per-thread working memory of the kernels (a converted weight tile, attention scores), kept between calls so
 * that hot loops never allocate. Grows to the largest request and is freed with its thread.
 */
final class Scratch {
    private static final ThreadLocal<Scratch> LOCAL = ThreadLocal.withInitial(Scratch::new);

    private MemorySegment tile = MemorySegment.NULL;
    private MemorySegment params = MemorySegment.NULL;
    private float[] scores = new float[0];

    private Scratch() {}

    static Scratch get() {
        return LOCAL.get();
    }

    /** Native memory for at least {@code floats} F32 values, 64-byte aligned; contents are left over from earlier use. */
    MemorySegment tile(long floats) {
        long bytes = floats * Float.BYTES;
        if (tile.byteSize() < bytes) tile = Arena.ofAuto().allocate(Math.max(bytes, 2 * tile.byteSize()), 64);
        return tile;
    }

    /**
     * Native memory for an op's small F32 parameters (a norm weight, a bias), used by the thread that issued the
     * op, apart from {@link #tile} so that a worker running on that thread cannot overwrite them.
     */
    MemorySegment params(long floats) {
        long bytes = floats * Float.BYTES;
        if (params.byteSize() < bytes) params = Arena.ofAuto().allocate(Math.max(bytes, 2 * params.byteSize()), 64);
        return params;
    }

    float[] scores(int count) {
        if (scores.length < count) scores = new float[Math.max(count, 2 * scores.length)];
        return scores;
    }
}
