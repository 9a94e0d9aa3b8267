package dev.lora4j.model;

import dev.lora4j.backend.Backend;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.util.ArrayList;
import java.util.List;

/**
 * The keys and values of every position seen so far, per layer: row p of {@code keys(layer)} is the rotated key
 * of position p, row p of {@code values(layer)} its value. Allocated once for a fixed number of positions, in the
 * backend's activation dtype, so that decoding never allocates.
 */
public final class KvCache implements AutoCloseable {
    private final Backend backend;
    private final int capacity;
    private final int kvDim;
    private final List<Tensor> keys = new ArrayList<>();
    private final List<Tensor> values = new ArrayList<>();
    private int length;
    private boolean closed;

    public KvCache(Backend backend, LlamaShape shape, int capacity) {
        if (capacity <= 0) throw new IllegalArgumentException("KV cache capacity must be positive, got " + capacity);
        this.backend = backend;
        this.capacity = capacity;
        this.kvDim = shape.kvDim();
        DType dtype = backend.activationType();
        try {
            for (int l = 0; l < shape.numLayers(); l++) {
                keys.add(backend.allocate(dtype, capacity, kvDim));
                values.add(backend.allocate(dtype, capacity, kvDim));
            }
        } catch (RuntimeException | OutOfMemoryError e) {
            close();
            throw e;
        }
    }

    /** Bytes a cache of this many positions takes for this model on this backend. */
    public static long bytesFor(LlamaShape shape, DType activationType, int capacity) {
        return 2L * shape.numLayers() * activationType.bytesFor((long) capacity * shape.kvDim());
    }

    public Tensor keys(int layer) { return check(keys.get(layer)); }

    public Tensor values(int layer) { return check(values.get(layer)); }

    /** Most positions this cache can hold. */
    public int capacity() { return capacity; }

    /** Positions 0 .. length-1 hold valid keys and values. */
    public int length() { return length; }

    public Backend backend() { return backend; }

    /**
     * Records that positions [0, newLength) are now valid. Writing at a position below the current length (to
     * rewind and continue differently) is allowed; leaving a gap is not.
     */
    void advanceTo(int newLength) {
        if (newLength < 0 || newLength > capacity) {
            throw new IllegalStateException("KV cache length " + newLength + " outside [0, " + capacity + "]");
        }
        length = newLength;
    }

    /** Forgets every position; the memory is kept for the next sequence. */
    public void reset() { length = 0; }

    /** Bytes held by this cache. */
    public long byteSize() {
        long total = 0;
        for (Tensor t : keys) total += t.byteSize();
        for (Tensor t : values) total += t.byteSize();
        return total;
    }

    private Tensor check(Tensor t) {
        if (closed) throw new IllegalStateException("KV cache used after close");
        return t;
    }

    @Override
    public void close() {
        if (closed) return;
        closed = true;
        for (Tensor t : keys) t.close();
        for (Tensor t : values) t.close();
    }

    int kvDim() { return kvDim; }
}
