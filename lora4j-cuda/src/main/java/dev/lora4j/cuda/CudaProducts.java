package dev.lora4j.cuda;

import dev.lora4j.tensor.DType;

import java.lang.foreign.MemorySegment;

/**
 * The CUDA backend's three matrix products (forward, input gradient, weight gradient) over operands of mixed element
 * types: the operands meet in one type that cuBLASLt multiplies, the other one is converted into a scratch block
 * first, and the result goes straight into the output where cuBLASLt can write its type, else through an F32 block.
 *
 * <p>The type the operands meet in:
 * <ul>
 *   <li>F32 activations: true FP32 with an F32 weight; with a BF16 or F16 weight x (or dY) is rounded to the
 *       weight's type for the tensor cores, except that an F32 dY meets an F16 weight in FP32 (gradients fall below
 *       F16's range), the weight widened a slice at a time.</li>
 *   <li>BF16 activations: BF16 on the tensor cores, always. A BF16 weight (and a 4-bit weight's dequantized BF16
 *       copy) multiplies x as it is, with no conversion pass; an F32 weight (a LoRA adapter, or a full fine-tuning
 *       weight without a working copy) or an F16 weight is rounded to BF16 for the product. The output is BF16
 *       (rounded once, after the accumulation when there is one) or F32 (the loss's logits).</li>
 *   <li>The weight gradient {@code dW = dYᵀ x} is F32, or BF16 (full fine-tuning in pure BF16), whatever its
 *       inputs: BF16 dY and x on the tensor cores; with BF16 activations an F32 dY (the logits' gradient) is rounded
 *       to BF16 to meet a BF16 x there; other mixes are widened to F32, exactly. A BF16 dW is the F32 sum rounded to
 *       BF16; the old value, when accumulating, is added to it by cuBLASLt's epilogue, which may round the sum
 *       first.</li>
 * </ul>
 * Scratch blocks come from the caching allocator and are released as soon as the product is queued.
 */
final class CudaProducts {
    /**
     * F16 weights are widened to F32 for the input gradient of an F32 dY this many elements at a time: gradients
     * routinely fall below F16's smallest normal (6e-5), so dY cannot be rounded to F16 for the tensor cores.
     */
    static final long F16_WIDEN_CHUNK_ELEMENTS = 1L << 25;

    private final CudaDriver cu;
    private final CudaKernels kernels;
    private final DeviceAllocator allocator;
    private final CublasLtMatmul lt;
    private final MemorySegment stream;
    private final DType activations;

    CudaProducts(CudaDriver cu, CudaKernels kernels, DeviceAllocator allocator, CublasLtMatmul lt, MemorySegment stream,
                 DType activations) {
        this.cu = cu;
        this.kernels = kernels;
        this.allocator = allocator;
        this.lt = lt;
        this.stream = stream;
        this.activations = activations;
    }

    /** {@code out (+)= x · wᵀ}: x [n, k] F32 or BF16, w [m, k] F32, BF16 or F16, out [n, m] F32 or BF16; n, m, k > 0. */
    void forward(CudaTensor x, CudaTensor w, CudaTensor out, boolean accumulate) {
        long n = x.rows(), k = x.dim(-1), m = w.rows();
        DType type = meetingType(x.dtype(), w.dtype());
        try (Scratch s = new Scratch()) {
            long xa = s.as(x, type), wa = s.as(w, type);
            Target d = s.target(out, type, accumulate);
            lt.multiply(type, d.type, wa, xa, d.address, n, m, k, d.accumulate, stream);
            d.finish();
        }
    }

    /**
     * {@code out = addend + x · wᵀ} with the addend read by cuBLASLt's epilogue where the product writes out's type
     * directly; otherwise addend is copied into out and the product accumulates. addend and out share a shape and dtype.
     */
    void forwardAdd(CudaTensor x, CudaTensor w, CudaTensor addend, CudaTensor out) {
        long n = x.rows(), k = x.dim(-1), m = w.rows();
        DType type = meetingType(x.dtype(), w.dtype());
        DType o = out.dtype();
        if (!(o == DType.F32 || o == DType.BF16 && type == DType.BF16)) {
            if (addend.address() != out.address()) {
                cu.check(cu.memcpyDtoDAsync(out.address(), addend.address(), out.byteSize(), stream), "cuMemcpyDtoDAsync");
            }
            forward(x, w, out, true);
            return;
        }
        try (Scratch s = new Scratch()) {
            lt.multiplyAdd(type, o, s.as(w, type), s.as(x, type), addend.address(), out.address(), n, m, k, stream);
        }
    }

    /**
     * {@code dX (+)= dY · w}: dY [n, m] F32 or BF16, w [m, k] F32, BF16 or F16, dX [n, k] F32 or BF16; n, m, k > 0.
     * {@code f16ChunkElements} bounds the F32 copy of an F16 weight that an F32 dY multiplies.
     */
    void backwardInput(CudaTensor dY, CudaTensor w, CudaTensor dX, boolean accumulate, long f16ChunkElements) {
        long n = dY.rows(), m = dY.dim(-1), k = w.dim(-1);
        if (dY.dtype() == DType.F32 && w.dtype() == DType.F16) {
            try (Scratch s = new Scratch()) {
                Target d = s.target(dX, DType.F32, accumulate);
                backwardInputWidened(dY.address(), w.address(), d.address, n, m, k, d.accumulate, f16ChunkElements);
                d.finish();
            }
            return;
        }
        DType type = meetingType(dY.dtype(), w.dtype());
        try (Scratch s = new Scratch()) {
            long dya = s.as(dY, type), wa = s.as(w, type);
            Target d = s.target(dX, type, accumulate);
            lt.multiplyBackwardInput(type, d.type, dya, m, wa, d.address, n, m, k, d.accumulate, stream);
            d.finish();
        }
    }

    /** dX (+)= dY · w with an F16 w widened to F32 a slice of its rows at a time; dX F32. */
    private void backwardInputWidened(long dY, long w, long dX, long n, long m, long k, boolean accumulate,
                                      long f16ChunkElements) {
        long rowsPerChunk = Math.max(1, Math.min(m, f16ChunkElements / k));
        long widened = allocator.allocate(4L * rowsPerChunk * k);
        try {
            for (long m0 = 0; m0 < m; m0 += rowsPerChunk) {
                long mc = Math.min(rowsPerChunk, m - m0);
                convert(w + DType.F16.bytesFor(m0 * k), DType.F16, widened, DType.F32, mc * k);
                // dX (+)= dY[:, m0:m0+mc] · w[m0:m0+mc, :]; every slice after the first adds.
                lt.multiplyBackwardInput(DType.F32, dY + 4L * m0, m, widened, dX, n, mc, k, accumulate || m0 > 0, stream);
            }
        } finally {
            allocator.release(widened);
        }
    }

    /**
     * {@code dW (+)= dYᵀ · x}: dY [n, m] and x [n, k] F32 or BF16 (x also F16), dW [m, k] F32 or BF16; n, m, k > 0.
     * A BF16 dW is written by the product itself from BF16 operands, else through an F32 block.
     */
    void backwardWeight(CudaTensor dY, CudaTensor x, CudaTensor dW, boolean accumulate) {
        long n = dY.rows(), m = dY.dim(-1), k = x.dim(-1);
        DType type = dY.dtype() == DType.BF16 && x.dtype() == DType.BF16
                || activations == DType.BF16 && x.dtype() == DType.BF16 ? DType.BF16 : DType.F32;
        try (Scratch s = new Scratch()) {
            long dya = s.as(dY, type), xa = s.as(x, type);
            Target d = s.target(dW, type, accumulate);
            lt.multiplyBackwardWeight(type, d.type, dya, xa, d.address, n, m, k, d.accumulate, stream);
            d.finish();
        }
    }

    /**
     * The type an activation-side operand (x or dY) and a weight are multiplied in: BF16 when the activation is BF16;
     * for an F32 activation, the weight's type (the activation rounded to a 16-bit weight's type, FP32 with an F32
     * weight).
     */
    static DType meetingType(DType activation, DType weight) {
        if (activation == DType.BF16) return DType.BF16;
        if (activation != DType.F32) throw new IllegalArgumentException("products take F32 or BF16 activations, got " + activation);
        CublasLtMatmul.dataType(weight);
        return weight;
    }

    private void convert(long src, DType from, long dst, DType to, long count) {
        kernels.launch(CudaKernels.convert(from, to), kernels.groupGrid(count), CudaKernels.ELEMENTWISE_THREADS, 0,
                stream, KernelArgs.start().ptr(src).ptr(dst).i64(count));
    }

    /** Where a product's result goes: the output itself, or an F32 block added to (or converted into) it after. */
    private final class Target {
        final long address;
        final DType type;
        final boolean accumulate;
        private final CudaTensor out;
        private final boolean staged;
        private final boolean addToOut;

        Target(long address, DType type, boolean accumulate, CudaTensor out, boolean staged, boolean addToOut) {
            this.address = address;
            this.type = type;
            this.accumulate = accumulate;
            this.out = out;
            this.staged = staged;
            this.addToOut = addToOut;
        }

        /** Moves a staged F32 result into the output: out += result, or out = result, rounded once. */
        void finish() {
            if (!staged) return;
            long count = out.numel();
            if (addToOut) {
                kernels.launch(CudaKernels.add(out.dtype(), DType.F32), kernels.groupGrid(count),
                        CudaKernels.ELEMENTWISE_THREADS, 0, stream,
                        KernelArgs.start().ptr(out.address()).ptr(address).i64(count));
            } else {
                convert(address, DType.F32, out.address(), out.dtype(), count);
            }
        }
    }

    /** The scratch blocks of one product, released together once it is queued. */
    private final class Scratch implements AutoCloseable {
        private final long[] blocks = new long[3];
        private int count;

        /** t's elements as {@code type}: t itself, or a converted copy. */
        long as(CudaTensor t, DType type) {
            if (t.dtype() == type) return t.address();
            long copy = block(type.bytesFor(t.numel()));
            convert(t.address(), t.dtype(), copy, type, t.numel());
            return copy;
        }

        /** Where a product of {@code type} operands into {@code out} is written. */
        Target target(CudaTensor out, DType type, boolean accumulate) {
            DType o = out.dtype();
            if (o == DType.F32 || o == DType.BF16 && type == DType.BF16) {
                return new Target(out.address(), o, accumulate, out, false, false);
            }
            if (o != DType.BF16) throw new IllegalArgumentException("products write F32 or BF16, got " + out);
            long staged = block(4L * out.numel());
            return new Target(staged, DType.F32, false, out, true, accumulate);
        }

        private long block(long bytes) {
            long b = allocator.allocate(bytes);
            blocks[count++] = b;
            return b;
        }

        @Override
        public void close() {
            // Later work on the stream runs after the product that reads these blocks.
            for (int i = 0; i < count; i++) allocator.release(blocks[i]);
        }
    }

    /** Zeroes an output that a product with no inner dimension leaves as nothing. */
    void zero(CudaTensor t) {
        if (t.byteSize() > 0) cu.check(cu.memsetD8Async(t.address(), (byte) 0, t.byteSize(), stream), "cuMemsetD8Async");
    }
}
