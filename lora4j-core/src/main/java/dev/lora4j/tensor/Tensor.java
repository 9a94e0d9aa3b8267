package dev.lora4j.tensor;

import dev.lora4j.backend.Backend;

import java.util.Arrays;

/**
 * A handle to an n-dimensional, row-major, contiguous block of backend-owned memory. Model code passes tensors
 * to {@link Backend} operations and never reads their elements in a hot path.
 *
 * <p>A tensor either owns its memory (made by {@link Backend#allocate}/{@link Backend#upload}) and frees it on
 * {@link #close()}, or is a {@link #view} of another tensor's memory, which it never frees.
 */
public abstract class Tensor implements AutoCloseable {
    private final DType dtype;
    private final long[] shape;
    private final long numel;

    protected Tensor(DType dtype, long... shape) {
        this.dtype = dtype;
        this.shape = shape.clone();
        long n = 1;
        for (long d : shape) {
            if (d < 0) throw new IllegalArgumentException("negative dimension in shape " + Arrays.toString(shape));
            n = Math.multiplyExact(n, d);
        }
        this.numel = n;
    }

    public abstract Backend backend();

    /**
     * A tensor over {@code numel(shape)} elements of this one's memory starting at element {@code elementOffset};
     * it shares memory and does not own it.
     */
    public abstract Tensor view(long elementOffset, long... shape);

    /** Frees owned memory; a no-op for views. Using a tensor after close is an error. */
    @Override
    public abstract void close();

    public final DType dtype() { return dtype; }

    public final long[] shape() { return shape.clone(); }

    public final int rank() { return shape.length; }

    public final long dim(int i) { return shape[i < 0 ? shape.length + i : i]; }

    public final long numel() { return numel; }

    /** The bytes of the tensor's storage (a quantized tensor counts its packed codes and quantization state). */
    public long byteSize() { return dtype.bytesFor(numel); }

    /** Rows when seen as a matrix whose last dimension is the row length. */
    public final long rows() { return shape.length == 0 ? 1 : numel / Math.max(1, shape[shape.length - 1]); }

    /** Convenience: the view of rows [first, first+count) of a tensor seen as [rows, dim(-1)]. */
    public final Tensor rows(long first, long count) {
        long cols = dim(-1);
        if (first < 0 || count < 0 || first + count > rows()) {
            throw new IndexOutOfBoundsException("rows [" + first + ", " + (first + count) + ") of " + this);
        }
        return view(first * cols, count, cols);
    }

    @Override
    public String toString() {
        return "Tensor(" + dtype + Arrays.toString(shape) + " on " + backend().name() + ")";
    }
}
