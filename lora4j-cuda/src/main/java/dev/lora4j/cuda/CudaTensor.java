package dev.lora4j.cuda;

import dev.lora4j.backend.Backend;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

/**
 * A tensor in GPU memory: a device address and a shape. An owning tensor returns its block to the backend's
 * allocator on {@link #close()}; a view shares its owner's memory and checks, on every use, that the owner is
 * still open.
 */
final class CudaTensor extends Tensor {
    private final CudaBackend backend;
    private final long address;
    private final CudaTensor owner; // this, for an owning tensor
    private volatile boolean closed;

    /** An owning tensor over a block from the allocator. */
    CudaTensor(CudaBackend backend, long address, DType dtype, long... shape) {
        super(dtype, shape);
        this.backend = backend;
        this.address = address;
        this.owner = this;
    }

    private CudaTensor(CudaTensor owner, long address, DType dtype, long... shape) {
        super(dtype, shape);
        this.backend = owner.backend;
        this.address = address;
        this.owner = owner;
    }

    /** The device address of element 0. */
    long address() {
        if (owner.closed) {
            throw new IllegalStateException("tensor used after close: " + this + (owner == this ? "" : " (its owner was closed)"));
        }
        return address;
    }

    @Override
    public Backend backend() { return backend; }

    CudaBackend cudaBackend() { return backend; }

    @Override
    public Tensor view(long elementOffset, long... shape) {
        long count = 1;
        for (long d : shape) count = Math.multiplyExact(count, d);
        if (elementOffset < 0 || Math.addExact(elementOffset, count) > numel()) {
            throw new IndexOutOfBoundsException("view of " + count + " elements at " + elementOffset + " is outside " + this);
        }
        return new CudaTensor(owner, address() + dtype().bytesFor(elementOffset), dtype(), shape);
    }

    @Override
    public void close() {
        if (owner != this || closed) return;
        closed = true;
        backend.release(address);
    }
}
