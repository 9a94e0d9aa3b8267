package dev.lora4j.backend.cpu;

import dev.lora4j.backend.Backend;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/** A tensor in off-heap host memory. Owning tensors hold their own shared arena; views hold none. */
final class CpuTensor extends Tensor {
    private final CpuBackend backend;
    private final MemorySegment segment;
    private final Arena arena; // null for views
    private boolean closed;

    CpuTensor(CpuBackend backend, MemorySegment segment, Arena arena, DType dtype, long... shape) {
        super(dtype, shape);
        this.backend = backend;
        this.segment = segment;
        this.arena = arena;
    }

    MemorySegment segment() {
        if (closed) throw new IllegalStateException("tensor used after close: " + this);
        return segment;
    }

    @Override
    public Backend backend() { return backend; }

    @Override
    public Tensor view(long elementOffset, long... shape) {
        CpuTensor probe = new CpuTensor(backend, MemorySegment.NULL, null, dtype(), shape);
        long bytes = probe.byteSize();
        long offset = dtype().bytesFor(elementOffset);
        if (elementOffset < 0 || offset + bytes > segment.byteSize()) {
            throw new IndexOutOfBoundsException("view of " + probe.numel() + " elements at " + elementOffset
                    + " is outside " + this);
        }
        return new CpuTensor(backend, segment().asSlice(offset, bytes), null, dtype(), shape);
    }

    @Override
    public void close() {
        if (arena != null && !closed) {
            closed = true;
            backend.released(segment.byteSize());
            arena.close();
        }
    }
}
