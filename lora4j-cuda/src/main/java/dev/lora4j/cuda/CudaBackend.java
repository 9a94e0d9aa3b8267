package dev.lora4j.cuda;

import dev.lora4j.backend.AdamwTensors;
import dev.lora4j.backend.Backend;
import dev.lora4j.backend.BackendProvider.Availability;
import dev.lora4j.quant.QuantSpec;
import dev.lora4j.quant.QuantizedTensor;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.UnaryOperator;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_DOUBLE;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * The CUDA backend: tensors in GPU memory, kernels from lora4j's fatbin, matmuls through cuBLASLt, all queued on
 * one stream of the device's primary context (the context the CUDA runtime inside cuBLASLt uses too).
 * Weights may be F32, BF16 or F16. Ops return as soon as they are queued; host transfers and {@link #synchronize()}
 * wait.
 *
 * <p>Activations (and their gradients) are F32 or BF16, chosen when the backend is opened and reported by
 * {@link #activationType()}: F32 by default, BF16 with {@code -Dlora4j.cuda.activations=bf16} or
 * {@link #open(int, DType)}. Every op takes either type (one dtype for all the activations of one call); kernels
 * widen BF16 to FP32, compute in FP32 and round once, to nearest even, where they store a BF16 result. With BF16
 * activations the products run on the tensor cores with no conversion pass over x (see {@link CudaProducts}),
 * activations take half the memory, and attention, norms and the loss keep FP32 arithmetic and F32 statistics.
 *
 * <p>The semantics of every op are those of {@code CpuBackend}, which the tests compare this backend against.
 * Set {@code -Dlora4j.cuda.syncEachOp=true} to wait after every op, so that a failing kernel is named by the op
 * that launched it.
 */
public final class CudaBackend implements Backend {
    /** System property: wait for the device after every op, to pin a kernel failure on its op. */
    public static final String SYNC_EACH_OP_PROPERTY = "lora4j.cuda.syncEachOp";
    /** System property: the activation dtype of backends opened without one, {@code f32} (the default) or {@code bf16}. */
    public static final String ACTIVATIONS_PROPERTY = "lora4j.cuda.activations";

    private final CudaDriver cu;
    private final DeviceInfo device;
    private final MemorySegment context;
    private final MemorySegment stream;
    private final DeviceAllocator allocator;
    private final CudaKernels kernels;
    private final CublasLtMatmul matmul;
    private final DType activations;
    private final CudaProducts products;
    private final CudaQuantization quantization = new CudaQuantization(this);
    private final CudaOpProfile profile;
    private final boolean syncEachOp;
    /** Whether the op profile names products by shape ({@code -Dlora4j.cuda.profile-shapes=true}), read once. */
    private final boolean profileShapes;
    private volatile boolean closed;

    /**
     * Opens the device chosen by {@code -Dlora4j.cuda.device} (0 by default) with the activations of
     * {@code -Dlora4j.cuda.activations} (F32 by default).
     */
    public static CudaBackend open() {
        return open(CudaProbe.deviceOrdinal());
    }

    /** Opens GPU {@code ordinal} with the activations of {@code -Dlora4j.cuda.activations} (F32 by default). */
    public static CudaBackend open(int ordinal) {
        return open(ordinal, activationsProperty());
    }

    /**
     * Opens GPU {@code ordinal} with activations of dtype {@code activations}, F32 or BF16; a {@link CudaException}
     * with the probe's one-line reason when it cannot run.
     */
    public static CudaBackend open(int ordinal, DType activations) {
        return open(ordinal, activations, GemmAlgorithmChoice.fromProperty(GemmAlgorithmChoice.HEURISTIC));
    }

    /** {@link #open(int, DType)} with products whose algorithms are picked as {@code gemmChoice} says. */
    static CudaBackend open(int ordinal, DType activations, GemmAlgorithmChoice gemmChoice) {
        if (activations != DType.F32 && activations != DType.BF16) {
            throw new IllegalArgumentException("the CUDA backend keeps activations in F32 or BF16, not " + activations);
        }
        CudaPlatform.Status status = CudaPlatform.shared();
        Availability a = CudaProbe.probe(status, ordinal);
        if (!a.available()) throw new CudaException("CUDA backend unavailable: " + a.detail());
        return new CudaBackend(status.platform(), ordinal, activations, gemmChoice);
    }

    /** The activation dtype {@code -Dlora4j.cuda.activations} asks for: F32 when unset. */
    public static DType activationsProperty() {
        String value = System.getProperty(ACTIVATIONS_PROPERTY);
        return value == null ? DType.F32 : parseActivations(value, "-D" + ACTIVATIONS_PROPERTY);
    }

    /** "f32", "fp32", "float32", "bf16" or "bfloat16" (any case) as a dtype; {@code source} names where it came from. */
    public static DType parseActivations(String value, String source) {
        return switch (value.strip().toLowerCase(java.util.Locale.ROOT)) {
            case "f32", "fp32", "float32" -> DType.F32;
            case "bf16", "bfloat16" -> DType.BF16;
            default -> throw new IllegalArgumentException(source + "=" + value + ": activations are f32 or bf16");
        };
    }

    private CudaBackend(CudaPlatform platform, int ordinal, DType activations, GemmAlgorithmChoice gemmChoice) {
        this.cu = platform.driver;
        this.activations = activations;
        this.device = DeviceInfo.query(cu, ordinal);
        MemorySegment ctx = null, str = null;
        DeviceAllocator alloc = null;
        CudaKernels kern = null;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment out = arena.allocate(ADDRESS);
            cu.check(cu.devicePrimaryCtxRetain(out, device.handle()), "cuDevicePrimaryCtxRetain(" + ordinal + ")");
            ctx = out.get(ADDRESS, 0);
            cu.check(cu.ctxSetCurrent(ctx), "cuCtxSetCurrent");
            cu.check(cu.streamCreate(out, CudaDriver.CU_STREAM_DEFAULT), "cuStreamCreate");
            str = out.get(ADDRESS, 0);
            final MemorySegment s = str;
            this.profile = CudaOpProfile.fromProperty(cu, str);
            this.syncEachOp = Boolean.getBoolean(SYNC_EACH_OP_PROPERTY) || profile != null && profile.waitsEachOp();
            this.profileShapes = profile != null && Boolean.getBoolean("lora4j.cuda.profile-shapes");
            alloc = new DeviceAllocator(cu, () -> cu.check(cu.streamSynchronize(s), "cuStreamSynchronize"));
            kern = new CudaKernels(cu, device.multiprocessors());
            long ws = alloc.allocate(CublasLtMatmul.WORKSPACE_BYTES);
            this.matmul = new CublasLtMatmul(platform.cublasLt, ws,
                    gemmChoice,
                    () -> cu.check(cu.streamSynchronize(s), "cuStreamSynchronize"), alloc);
        } catch (RuntimeException e) {
            if (kern != null) kern.unload();
            if (alloc != null) alloc.close();
            if (str != null) cu.streamDestroy(str);
            if (ctx != null) cu.devicePrimaryCtxRelease(device.handle());
            throw e;
        }
        this.context = ctx;
        this.stream = str;
        this.allocator = alloc;
        this.kernels = kern;
        this.products = new CudaProducts(cu, kern, alloc, matmul, str, activations);
    }

    @Override public String name() { return "cuda"; }

    /** "CUDA, NVIDIA H200 (sm_90), 139.8 GiB, driver 13.0", and "BF16 activations" when they are. */
    @Override public String description() {
        return "CUDA, " + device.summary() + (activations == DType.F32 ? "" : ", " + activations + " activations");
    }

    /** F32 or BF16, as chosen when the backend was opened. */
    @Override public DType activationType() { return activations; }

    // ---- memory -------------------------------------------------------------------------------------------

    @Override
    public Tensor allocate(DType dtype, long... shape) {
        bind();
        CudaTensor t = newTensor(dtype, shape);
        if (t.byteSize() > 0) {
            cu.check(cu.memsetD8Async(t.address(), (byte) 0, t.byteSize(), stream), "cuMemsetD8Async");
        }
        return t;
    }

    @Override
    public Tensor upload(MemorySegment host, DType src, DType dst, long... shape) {
        bind();
        long count = elementCount(shape);
        long srcBytes = src.bytesFor(count);
        if (host.byteSize() < srcBytes) {
            throw new IllegalArgumentException("upload: the host buffer has " + host.byteSize() + " bytes, " + srcBytes
                    + " are needed for " + count + " " + src + " elements");
        }
        if (src != dst && !convertible(src, dst)) throw new IllegalArgumentException("cannot convert " + src + " to " + dst);
        CudaTensor t = newTensor(dst, shape);
        try {
            if (count == 0) return t;
            if (src == dst) {
                copyIn(t.address(), host, srcBytes);
            } else {
                long staged = allocator.allocate(srcBytes);
                try {
                    copyIn(staged, host, srcBytes);
                    convert(staged, src, t.address(), dst, count);
                } finally {
                    allocator.release(staged); // later work on the stream runs after the conversion
                }
            }
            opDone("upload");
            return t;
        } catch (RuntimeException e) {
            t.close();
            throw e;
        }
    }

    @Override
    public void copyToHost(Tensor t, MemorySegment dst) {
        bind();
        CudaTensor c = cuda(t);
        long bytes = c.byteSize();
        if (dst.byteSize() < bytes) {
            throw new IllegalArgumentException("copyToHost: the host buffer has " + dst.byteSize() + " bytes, " + t
                    + " needs " + bytes);
        }
        if (bytes == 0) return;
        if (dst.isNative()) {
            cu.check(cu.memcpyDtoHAsync(dst, c.address(), bytes, stream), "cuMemcpyDtoHAsync_v2(" + bytes + " bytes)");
            waitForStream("copyToHost");
        } else {
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment tmp = arena.allocate(bytes, 16);
                cu.check(cu.memcpyDtoHAsync(tmp, c.address(), bytes, stream), "cuMemcpyDtoHAsync_v2(" + bytes + " bytes)");
                waitForStream("copyToHost");
                MemorySegment.copy(tmp, 0, dst, 0, bytes);
            }
        }
    }

    @Override
    public void copy(Tensor src, Tensor dst) {
        bind();
        CudaTensor s = cuda(src), d = cuda(dst);
        requireSameCount(src, dst);
        if (s.dtype() != d.dtype() && !convertible(s.dtype(), d.dtype())) {
            throw new IllegalArgumentException("cannot convert " + s.dtype() + " to " + d.dtype());
        }
        if (s.numel() == 0) return;
        if (s.dtype() == d.dtype()) {
            cu.check(cu.memcpyDtoDAsync(d.address(), s.address(), s.byteSize(), stream), "cuMemcpyDtoDAsync_v2");
        } else {
            convert(s.address(), s.dtype(), d.address(), d.dtype(), s.numel());
        }
        opDone("copy");
    }

    @Override
    public void synchronize() {
        bind();
        waitForStream("synchronize");
    }

    @Override public long memoryInUse() { return allocator.inUse(); }

    @Override public long peakMemoryInUse() { return allocator.peak(); }

    /** Device memory this backend holds: in use, plus released blocks kept for reuse. */
    public long memoryReserved() { return allocator.inUse() + allocator.cached(); }

    /** Gives released blocks back to the driver (other processes, or cuBLASLt, may need them). */
    public void trimMemory() {
        bind();
        allocator.trim();
    }

    @Override
    public void close() {
        if (closed) return;
        closed = true;
        RuntimeException first = null;
        try {
            cu.check(cu.ctxSetCurrent(context), "cuCtxSetCurrent");
            cu.check(cu.streamSynchronize(stream), "cuStreamSynchronize");
        } catch (RuntimeException e) {
            first = e;
        }
        try {
            matmul.close();
        } catch (RuntimeException e) {
            if (first == null) first = e;
        }
        kernels.unload();
        if (paged != null) paged.close();
        allocator.close();
        if (profile != null) profile.close();
        cu.streamDestroy(stream);
        cu.devicePrimaryCtxRelease(device.handle());
        if (first != null) throw first;
    }

    void release(long address) {
        PagedMemory p = paged;
        if (p != null && p.release(address)) return;
        allocator.release(address);
    }

    /** The kernels as this backend launches them (for tests of the launch checks). */
    CudaKernels kernels() { return kernels; }

    /** The stream this backend's work is queued on. */
    MemorySegment stream() { return stream; }

    // ---- forward ops --------------------------------------------------------------------------------------

    @Override
    public void embedding(Tensor table, int[] ids, Tensor out) {
        bind();
        CudaTensor tab = cuda(table), o = cuda(out);
        long d = table.dim(-1);
        long vocab = table.rows();
        requireActivation(out, "embedding out");
        requireKernelType(table, "embedding table");
        if (out.rows() != ids.length || out.dim(-1) != d) {
            throw new IllegalArgumentException("embedding out must be [" + ids.length + ", " + d + "], got " + out);
        }
        for (int id : ids) {
            if (id < 0 || id >= vocab) {
                throw new IndexOutOfBoundsException("token id " + id + " outside the vocabulary [0, " + vocab + ")");
            }
        }
        if (ids.length == 0 || d == 0) return;
        // A block copies whole rows, about EMBEDDING_ITEMS groups of 8 elements per thread.
        int rowsPerBlock = (int) Math.max(1, Math.min(ids.length,
                CudaKernels.ELEMENTWISE_THREADS * CudaKernels.EMBEDDING_ITEMS / Math.ceilDiv(d, CudaKernels.GROUP)));
        long idsOnDevice = uploadInts(ids);
        try {
            kernels.launch(CudaKernels.embedding(out.dtype(), table.dtype()), Math.ceilDiv(ids.length, rowsPerBlock),
                    CudaKernels.ELEMENTWISE_THREADS, 0, stream,
                    KernelArgs.start().ptr(tab.address()).ptr(idsOnDevice).ptr(o.address()).i32(ids.length).i64(d)
                            .i32(rowsPerBlock));
        } finally {
            allocator.release(idsOnDevice);
        }
        opDone("embedding");
    }

    @Override
    public void rmsNorm(Tensor x, Tensor weight, float eps, Tensor out) {
        bind();
        requireActivation(x, "rmsNorm x");
        requireSameActivation(x, out, "rmsNorm x and out");
        requireSameCount(x, out);
        requireKernelType(weight, "rmsNorm weight");
        long d = x.dim(-1);
        if (weight.numel() != d) throw new IllegalArgumentException("rmsNorm weight " + weight + " does not match rows of " + x);
        if (d > Integer.MAX_VALUE) throw new IllegalArgumentException("rmsNorm rows of " + d + " elements are too long");
        long rows = x.rows();
        if (rows == 0 || d == 0) return;
        kernels.launch(CudaKernels.rmsNorm(x.dtype(), weight.dtype()), rows, CudaKernels.rowThreads(d), 0, stream,
                KernelArgs.start().ptr(cuda(x).address()).ptr(cuda(weight).address()).f32(eps)
                        .ptr(cuda(out).address()).i32((int) d));
        opDone("rmsNorm");
    }

    /**
     * {@code out (+)= x · wᵀ}; x F32 or BF16, out F32 or BF16 (an F32 out from BF16 x: the loss's logits). See
     * {@link CudaProducts} for the type the operands meet in.
     */
    @Override
    public void matmul(Tensor x, Tensor w, Tensor out, boolean accumulate) {
        bind();
        requireActivation(x, "matmul x");
        requireActivation(out, "matmul out");
        requireProductShapes("matmul", x, w, out);
        long n = x.rows(), k = x.dim(-1), m = w.rows();
        if (w instanceof QuantizedTensor q) { // the dense path on a copy dequantized for this product only
            try (Tensor dense = dequantizedForProduct(q)) {
                matmul(x, dense, out, accumulate);
            }
            return;
        }
        DType wt = w.dtype();
        CublasLtMatmul.dataType(wt); // rejects weight types cuBLASLt is not asked to handle
        CudaTensor xs = cuda(x), ws = cuda(w), os = cuda(out);
        if (n == 0 || m == 0) return;
        if (k == 0) {
            if (!accumulate) cu.check(cu.memsetD8Async(os.address(), (byte) 0, os.byteSize(), stream), "cuMemsetD8Async");
            return;
        }
        products.forward(xs, ws, os, accumulate);
        opDone(productOp("matmul", n, k, m));
    }

    /** x [n, k], w [m, k] and out [n, m] of {@code out = x · wᵀ}. */
    private static void requireProductShapes(String op, Tensor x, Tensor w, Tensor out) {
        if (w.dim(-1) != x.dim(-1) || out.rows() != x.rows() || out.dim(-1) != w.rows()) {
            throw new IllegalArgumentException(op + " shapes: x " + x + ", w " + w + ", out " + out
                    + " (needs x [n, k], w [m, k], out [n, m])");
        }
    }

    @Override
    public void matmulAdd(Tensor x, Tensor w, Tensor addend, Tensor out) {
        bind();
        requireActivation(addend, "matmulAdd addend");
        requireSameActivation(addend, out, "matmulAdd addend and out");
        requireSameCount(addend, out);
        long k = x.dim(-1);
        if (w instanceof QuantizedTensor || k == 0 || x.rows() == 0 || w.rows() == 0) {
            Backend.super.matmulAdd(x, w, addend, out);
            return;
        }
        requireActivation(x, "matmulAdd x");
        requireProductShapes("matmulAdd", x, w, out);
        CublasLtMatmul.dataType(w.dtype());
        products.forwardAdd(cuda(x), cuda(w), cuda(addend), cuda(out));
        opDone(productOp("matmul", x.rows(), k, w.rows()));
    }

    @Override
    public void addBias(Tensor x, Tensor bias) {
        bind();
        requireActivation(x, "addBias x");
        requireKernelType(bias, "addBias bias");
        long d = x.dim(-1);
        if (bias.numel() != d) throw new IllegalArgumentException("bias " + bias + " does not match rows of " + x);
        if (x.numel() == 0) return;
        if (d > Integer.MAX_VALUE) throw new IllegalArgumentException("addBias rows of " + d + " elements are too long");
        kernels.launch(CudaKernels.addBias(x.dtype(), bias.dtype()), CudaKernels.gridFor(x.numel()), CudaKernels.ELEMENTWISE_THREADS,
                0, stream, KernelArgs.start().ptr(cuda(x).address()).ptr(cuda(bias).address()).i64(x.numel()).i32((int) d));
        opDone("addBias");
    }

    @Override
    public void rope(Tensor x, int headDim, int[] positions, Tensor invFreq) {
        rotate("rope", false, x, headDim, positions, invFreq);
    }

    /** rope and ropeBackward: the same pairs, rotated by the angle or by its opposite. */
    private void rotate(String op, boolean inverse, Tensor x, int headDim, int[] positions, Tensor invFreq) {
        bind();
        requireActivation(x, op + " x");
        String kernel = inverse ? CudaKernels.ropeBackward(x.dtype()) : CudaKernels.rope(x.dtype());
        long width = x.dim(-1);
        if (headDim <= 0 || width % headDim != 0 || headDim % 2 != 0) {
            throw new IllegalArgumentException(op + ": row width " + width + " is not a multiple of an even headDim " + headDim);
        }
        if (positions.length != x.rows()) {
            throw new IllegalArgumentException(op + ": " + positions.length + " positions for " + x.rows() + " rows");
        }
        if (invFreq.numel() != headDim / 2) throw new IllegalArgumentException(op + ": invFreq must have headDim/2 entries");
        if (width > Integer.MAX_VALUE) throw new IllegalArgumentException(op + ": rows of " + width + " elements are too long");
        CudaTensor xs = cuda(x), inv = cuda(invFreq);
        if (positions.length == 0) return;
        long invAddress = inv.address();
        long invF32 = 0;
        if (inv.dtype() != DType.F32) { // the kernel reads F32 frequencies; others are converted as the CPU reads them
            if (!convertible(inv.dtype(), DType.F32)) throw new IllegalArgumentException(op + ": invFreq must be a float tensor, got " + invFreq);
            invF32 = allocator.allocate(4L * inv.numel());
            convert(invAddress, inv.dtype(), invF32, DType.F32, inv.numel());
            invAddress = invF32;
        }
        // A block rotates a tile of up to `capacity` groups of 8 pairs: whole rows when they are narrow (several per
        // block), else as many whole heads of one row as fit, or part of one head (heads of over 8192).
        int half = headDim / 2, capacity = CudaKernels.ropeGroupsPerBlock(x.dtype());
        long groups = Math.ceilDiv(half, CudaKernels.GROUP), heads = width / headDim;
        int groupsPerBlock = (int) Math.min(groups, capacity);
        int headsPerBlock = (int) Math.max(1, Math.min(heads, capacity / groups));
        int rowsPerBlock = headsPerBlock < heads ? 1
                : (int) Math.min(positions.length, Math.max(1, capacity / (heads * groups)));
        long blocks = Math.ceilDiv(positions.length, rowsPerBlock) * Math.ceilDiv(heads, headsPerBlock)
                * Math.ceilDiv(groups, groupsPerBlock);
        // The cosines and sines of the tile's rows and pairs, in shared memory (at most capacity x 64 bytes).
        int tableBytes = rowsPerBlock * (int) Math.min(half, groupsPerBlock * (long) CudaKernels.GROUP) * 2 * Float.BYTES;
        long pos = uploadInts(positions);
        try {
            kernels.launch(kernel, blocks, CudaKernels.ROPE_THREADS, tableBytes, stream,
                    KernelArgs.start().ptr(xs.address()).ptr(pos).ptr(invAddress).i32(positions.length).i32((int) width)
                            .i32(headDim).i32(rowsPerBlock).i32(headsPerBlock).i32(groupsPerBlock));
        } finally {
            allocator.release(pos);
            if (invF32 != 0) allocator.release(invF32);
        }
        opDone(op);
    }

    @Override
    public void attention(Tensor q, Tensor k, Tensor v, int startPos, int nHeads, int nKvHeads, int headDim,
                          int slidingWindow, Tensor out) {
        bind();
        requireActivation(q, "attention q");
        requireSameActivation(q, out, "attention q and out");
        int n = (int) q.rows();
        if (nHeads <= 0 || nKvHeads <= 0 || headDim <= 0 || startPos < 0) {
            throw new IllegalArgumentException("attention: nHeads " + nHeads + ", nKvHeads " + nKvHeads + ", headDim "
                    + headDim + " and startPos " + startPos + " must be positive (startPos may be 0)");
        }
        if (nHeads % nKvHeads != 0) throw new IllegalArgumentException("nHeads " + nHeads + " not a multiple of nKvHeads " + nKvHeads);
        if (q.dim(-1) != (long) nHeads * headDim || k.dim(-1) != (long) nKvHeads * headDim
                || v.dim(-1) != (long) nKvHeads * headDim || k.rows() < (long) startPos + n || v.rows() < (long) startPos + n) {
            throw new IllegalArgumentException("attention shapes: q " + q + ", k " + k + ", v " + v + " at startPos " + startPos);
        }
        requireSameCount(q, out);
        if (k.dtype() != v.dtype()) throw new IllegalArgumentException("attention: k " + k + " and v " + v + " differ in element type");
        requireKernelType(k, "attention k");
        if (headDim > CudaKernels.ATTENTION_MAX_HEAD_DIM) {
            throw new IllegalArgumentException("attention: headDim " + headDim + " is larger than the CUDA kernel's "
                    + CudaKernels.ATTENTION_MAX_HEAD_DIM);
        }
        if (n == 0) return;
        long blocks = (long) n * nHeads;
        float scale = (float) (1.0 / Math.sqrt(headDim));
        int shared = (headDim + CudaKernels.ATTENTION_TILE) * Float.BYTES;
        kernels.launch(CudaKernels.attention(q.dtype(), k.dtype()), blocks, CudaKernels.ATTENTION_THREADS, shared, stream,
                KernelArgs.start().ptr(cuda(q).address()).ptr(cuda(k).address()).ptr(cuda(v).address())
                        .ptr(cuda(out).address()).i32(nHeads).i32(nKvHeads).i32(headDim).i32(startPos)
                        .i32(slidingWindow).f32(scale));
        opDone("attention");
    }

    @Override
    public void swiglu(Tensor gate, Tensor up, Tensor out) {
        bind();
        requireSameCount(gate, up);
        requireSameCount(gate, out);
        requireActivation(gate, "swiglu gate");
        requireSameActivation(gate, up, "swiglu gate and up");
        requireSameActivation(gate, out, "swiglu gate and out");
        if (gate.numel() == 0) return;
        kernels.launch(CudaKernels.swiglu(gate.dtype()), kernels.groupGrid(gate.numel()), CudaKernels.ELEMENTWISE_THREADS, 0, stream,
                KernelArgs.start().ptr(cuda(gate).address()).ptr(cuda(up).address()).ptr(cuda(out).address())
                        .i64(gate.numel()));
        opDone("swiglu");
    }

    /** swiglu_lora.cu: the tile of one block, its threads, its shared memory (l4j_swiglu_lora_shared) and ranks. */
    static final int SWIGLU_LORA_ROWS = 32, SWIGLU_LORA_COLS = 128, SWIGLU_LORA_THREADS = 256, SWIGLU_LORA_MAX_RANK = 64;
    static final int SWIGLU_LORA_SHARED = 2 * SWIGLU_LORA_ROWS * (SWIGLU_LORA_COLS + 4) * Float.BYTES;

    /**
     * One pass over gate and up (swiglu_lora.cu) for BF16 activations with F32 adapters of up to 64 ranks and rows of
     * whole 8-element groups; anything else takes the composition.
     */
    @Override
    public void swigluWithLora(Tensor gate, Tensor hiddenGate, Tensor bGate, Tensor up, Tensor hiddenUp, Tensor bUp,
                               Tensor out) {
        bind();
        long n = gate.rows(), ff = gate.dim(-1);
        int r = (int) hiddenGate.dim(-1);
        boolean fused = gate.dtype() == DType.BF16 && bGate.dtype() == DType.F32 && bUp.dtype() == DType.F32
                && hiddenGate.dtype() == DType.BF16 && hiddenUp.dtype() == DType.BF16 && hiddenUp.dim(-1) == r
                && r <= SWIGLU_LORA_MAX_RANK && ff % 8 == 0 && ff <= Integer.MAX_VALUE && n <= Integer.MAX_VALUE
                && aligned16(gate) && aligned16(up) && aligned16(out);
        if (!fused) {
            Backend.super.swigluWithLora(gate, hiddenGate, bGate, up, hiddenUp, bUp, out);
            return;
        }
        String op = "swigluWithLora";
        requireSameCount(gate, up);
        requireSameCount(gate, out);
        requireSameActivation(gate, up, op + " gate and up");
        requireSameActivation(gate, out, op + " gate and out");
        requireProductShapes(op + " (gate)", hiddenGate, bGate, gate);
        requireProductShapes(op + " (up)", hiddenUp, bUp, up);
        if (n == 0 || ff == 0) return;
        long grid = Math.ceilDiv(n, SWIGLU_LORA_ROWS) * Math.ceilDiv(ff, SWIGLU_LORA_COLS);
        kernels.launch(CudaKernels.SWIGLU_LORA, grid, SWIGLU_LORA_THREADS, SWIGLU_LORA_SHARED, stream,
                KernelArgs.start().ptr(cuda(gate).address()).ptr(cuda(up).address()).ptr(cuda(out).address())
                        .ptr(cuda(hiddenGate).address()).ptr(cuda(bGate).address()).ptr(cuda(hiddenUp).address())
                        .ptr(cuda(bUp).address()).i32((int) n).i32((int) ff).i32(r));
        opDone(op);
    }

    /** Whether the tensor's first element sits on a 16-byte boundary, as the vector loads of 8 BF16 values need. */
    private boolean aligned16(Tensor t) {
        return (cuda(t).address() & 15) == 0;
    }

    /** {@code x += y}: both F32, both BF16, or a BF16 x and an F32 y (rounded once). */
    @Override
    public void add(Tensor x, Tensor y) {
        bind();
        requireSameCount(x, y);
        requireActivation(x, "add x");
        requireActivation(y, "add y");
        if (x.dtype() != y.dtype() && !(x.dtype() == DType.BF16 && y.dtype() == DType.F32)) {
            throw new IllegalArgumentException("add: " + y + " cannot be added to " + x + " (the same dtype, or F32 into BF16)");
        }
        if (x.numel() == 0) return;
        kernels.launch(CudaKernels.add(x.dtype(), y.dtype()), kernels.groupGrid(x.numel()), CudaKernels.ELEMENTWISE_THREADS, 0, stream,
                KernelArgs.start().ptr(cuda(x).address()).ptr(cuda(y).address()).i64(x.numel()));
        opDone("add");
    }

    // ---- training ops -------------------------------------------------------------------------------------

    /** See {@link CudaProducts#F16_WIDEN_CHUNK_ELEMENTS}. */
    static final long F16_WIDEN_CHUNK_ELEMENTS = CudaProducts.F16_WIDEN_CHUNK_ELEMENTS;

    /**
     * {@code dX (+)= dY · w}; dY and dX F32 or BF16. BF16 weights run on the tensor cores with an F32 dY rounded to
     * BF16 (nearest even), as the forward pass rounds x; with BF16 activations every weight meets dY in BF16;
     * an F32 dY meets F32 weights in true FP32, and F16 weights widened to F32 a slice of rows at a time (see
     * {@link #F16_WIDEN_CHUNK_ELEMENTS}).
     */
    @Override
    public void matmulBackwardInput(Tensor dY, Tensor w, Tensor dX, boolean accumulate) {
        matmulBackwardInput(dY, w, dX, accumulate, F16_WIDEN_CHUNK_ELEMENTS);
    }

    /** {@link #matmulBackwardInput(Tensor, Tensor, Tensor, boolean)}, widening F16 weights this many elements at a time. */
    void matmulBackwardInput(Tensor dY, Tensor w, Tensor dX, boolean accumulate, long f16ChunkElements) {
        bind();
        requireActivation(dY, "matmulBackwardInput dY");
        requireActivation(dX, "matmulBackwardInput dX");
        long n = dY.rows(), m = dY.dim(-1), k = w.dim(-1);
        if (w.rows() != m || dX.rows() != n || dX.dim(-1) != k) {
            throw new IllegalArgumentException("matmulBackwardInput shapes: dY " + dY + ", w " + w + ", dX " + dX
                    + " (needs dY [n, m], w [m, k], dX [n, k])");
        }
        if (w instanceof QuantizedTensor q) {
            try (Tensor dense = dequantizedForProduct(q)) {
                matmulBackwardInput(dY, dense, dX, accumulate, f16ChunkElements);
            }
            return;
        }
        DType wt = w.dtype();
        CublasLtMatmul.dataType(wt);
        CudaTensor dys = cuda(dY), ws = cuda(w), dxs = cuda(dX);
        if (n == 0 || k == 0) return;
        if (m == 0) {
            if (!accumulate) zeroBytes(dxs);
            return;
        }
        products.backwardInput(dys, ws, dxs, accumulate, f16ChunkElements);
        opDone(productOp("matmulBackwardInput", n, m, k));
    }

    /**
     * {@code dW (+)= dYᵀ · x}, dW F32 or BF16: in true FP32 (no TF32) for F32 dY and x, and for an F32 dY with a 16-bit
     * x (widened first, exactly) under F32 activations; on the tensor cores when dY and x are BF16, and under BF16
     * activations for a BF16 x with an F32 dY (rounded to BF16 first). A BF16 dW gets the F32 sum rounded to BF16;
     * accumulating, cuBLASLt's BF16 output may round the sum before adding the old value (measured on the H200: an
     * error of one rounding of the sum), as torch's accumulation of a bfloat16 gradient rounds.
     */
    @Override
    public void matmulBackwardWeight(Tensor dY, Tensor x, Tensor dW, boolean accumulate) {
        bind();
        requireActivation(dY, "matmulBackwardWeight dY");
        requireKernelType(x, "matmulBackwardWeight x");
        requireStateType(dW, "matmulBackwardWeight dW");
        long n = dY.rows(), m = dY.dim(-1), k = x.dim(-1);
        if (x.rows() != n || dW.rows() != m || dW.dim(-1) != k) {
            throw new IllegalArgumentException("matmulBackwardWeight shapes: dY " + dY + ", x " + x + ", dW " + dW
                    + " (needs dY [n, m], x [n, k], dW [m, k])");
        }
        CudaTensor dys = cuda(dY), xs = cuda(x), dws = cuda(dW);
        if (m == 0 || k == 0) return;
        if (n == 0) {
            if (!accumulate) zeroBytes(dws);
            return;
        }
        products.backwardWeight(dys, xs, dws, accumulate);
        opDone(productOp("matmulBackwardWeight", n, m, k));
    }

    @Override
    public void sumRows(Tensor dY, Tensor dBias) {
        bind();
        requireActivation(dY, "sumRows dY");
        requireF32(dBias, "sumRows dBias");
        long cols = dY.dim(-1);
        if (dBias.numel() != cols) {
            throw new IllegalArgumentException("sumRows: dBias " + dBias + " does not match the rows of dY " + dY);
        }
        if (cols > Integer.MAX_VALUE) throw new IllegalArgumentException("sumRows: rows of " + cols + " elements are too long");
        CudaTensor dys = cuda(dY), db = cuda(dBias);
        if (cols == 0 || dY.rows() == 0) return;
        kernels.launch(CudaKernels.sumRows(dY.dtype()), Math.ceilDiv(cols, CudaKernels.COLUMN_SUM_COLUMNS),
                CudaKernels.COLUMN_SUM_THREADS, 0, stream,
                KernelArgs.start().ptr(dys.address()).ptr(db.address()).i64(dY.rows()).i32((int) cols));
        opDone("sumRows");
    }

    @Override
    public void attentionForward(Tensor q, Tensor k, Tensor v, int nHeads, int nKvHeads, int headDim, int slidingWindow,
                                 Tensor out, Tensor lse) {
        bind();
        String op = "attentionForward";
        int n = checkTrainingAttention(op, q, k, v, nHeads, nKvHeads, headDim, slidingWindow);
        requireShapeOf(op, "out", out, "q", q);
        requireF32(lse, op + " lse");
        if (lse.numel() != (long) n * nHeads) {
            throw new IllegalArgumentException(op + ": lse " + lse + " must hold [" + n + ", " + nHeads + "] values");
        }
        if (headDim > CudaKernels.ATTENTION_MAX_HEAD_DIM) {
            throw new IllegalArgumentException(op + ": headDim " + headDim + " is larger than the CUDA kernel's "
                    + CudaKernels.ATTENTION_MAX_HEAD_DIM);
        }
        if (n == 0) return;
        if (FlashAttention.serves(headDim, device.maxSharedPerBlock())) {
            new FlashAttention(kernels, allocator, stream).forward(cuda(q).address(), cuda(k).address(),
                    cuda(v).address(), q.dtype(), cuda(out).address(), cuda(lse).address(), n, nHeads, nKvHeads,
                    headDim, slidingWindow);
            opDone(op);
            return;
        }
        float scale = (float) (1.0 / Math.sqrt(headDim));
        int shared = (headDim + CudaKernels.ATTENTION_TILE) * Float.BYTES;
        kernels.launch(CudaKernels.attentionLse(q.dtype()), (long) n * nHeads, CudaKernels.ATTENTION_THREADS, shared, stream,
                KernelArgs.start().ptr(cuda(q).address()).ptr(cuda(k).address()).ptr(cuda(v).address())
                        .ptr(cuda(out).address()).ptr(cuda(lse).address()).i32(nHeads).i32(nKvHeads).i32(headDim)
                        .i32(slidingWindow).f32(scale));
        opDone(op);
    }

    /**
     * Recomputes the probabilities tile by tile from q, k and lse: for head sizes 64 and 128 on the tensor cores
     * ({@link FlashAttention}), otherwise in FP32 (attention_backward.cu): one kernel for rowsum(dOut ∘ out), one
     * for dq, one for dk and dv, each writing its output once. dq, dk and dv must not share memory with the inputs.
     */
    @Override
    public void attentionBackward(Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor dOut, int nHeads,
                                  int nKvHeads, int headDim, int slidingWindow, Tensor dq, Tensor dk, Tensor dv) {
        bind();
        String op = "attentionBackward";
        int n = checkTrainingAttention(op, q, k, v, nHeads, nKvHeads, headDim, slidingWindow);
        requireShapeOf(op, "out", out, "q", q);
        requireShapeOf(op, "dOut", dOut, "q", q);
        requireShapeOf(op, "dq", dq, "q", q);
        requireShapeOf(op, "dk", dk, "k", k);
        requireShapeOf(op, "dv", dv, "v", v);
        requireF32(lse, op + " lse");
        if (lse.numel() != (long) n * nHeads) {
            throw new IllegalArgumentException(op + ": lse " + lse + " must hold [" + n + ", " + nHeads + "] values");
        }
        int hdClass = 0;
        for (int c : CudaKernels.ATTENTION_BACKWARD_HEAD_DIMS) {
            if (headDim <= c) {
                hdClass = c;
                break;
            }
        }
        if (hdClass == 0) {
            int max = CudaKernels.ATTENTION_BACKWARD_HEAD_DIMS[CudaKernels.ATTENTION_BACKWARD_HEAD_DIMS.length - 1];
            throw new IllegalArgumentException(op + ": headDim " + headDim + " is larger than the CUDA kernels' " + max);
        }
        int shared = attentionBackwardSharedBytes(headDim);
        if (shared > device.maxSharedPerBlock()) {
            throw new IllegalArgumentException(op + ": headDim " + headDim + " needs " + shared + " bytes of shared memory"
                    + " per block, more than this GPU's " + device.maxSharedPerBlock());
        }
        if (n == 0) return;
        if (FlashAttention.serves(headDim, device.maxSharedPerBlock())) {
            new FlashAttention(kernels, allocator, stream).backward(cuda(q).address(), cuda(k).address(),
                    cuda(v).address(), q.dtype(), cuda(out).address(), cuda(lse).address(), cuda(dOut).address(),
                    cuda(dq).address(), cuda(dk).address(), cuda(dv).address(), n, nHeads, nKvHeads, headDim,
                    slidingWindow);
            opDone(op);
            return;
        }
        long rowsHeads = (long) n * nHeads;
        long tiles = Math.ceilDiv(n, CudaKernels.ATTENTION_BACKWARD_TILE);
        float scale = (float) (1.0 / Math.sqrt(headDim));
        long dsum = allocator.allocate(4L * rowsHeads);
        try {
            DType act = q.dtype();
            kernels.launch(CudaKernels.attentionBackwardDsum(act), Math.ceilDiv(rowsHeads, CudaKernels.ELEMENTWISE_THREADS),
                    CudaKernels.ELEMENTWISE_THREADS, 0, stream,
                    KernelArgs.start().ptr(cuda(out).address()).ptr(cuda(dOut).address()).ptr(dsum).i64(rowsHeads)
                            .i32(headDim));
            kernels.launch(CudaKernels.attentionBackwardDq(act, hdClass), tiles * nHeads, CudaKernels.ATTENTION_BACKWARD_THREADS,
                    shared, stream,
                    KernelArgs.start().ptr(cuda(q).address()).ptr(cuda(k).address()).ptr(cuda(v).address())
                            .ptr(cuda(lse).address()).ptr(dsum).ptr(cuda(dOut).address()).ptr(cuda(dq).address())
                            .i32(n).i32(nHeads).i32(nKvHeads).i32(headDim).i32(slidingWindow).f32(scale));
            kernels.launch(CudaKernels.attentionBackwardDkv(act, hdClass), tiles * nKvHeads,
                    CudaKernels.ATTENTION_BACKWARD_THREADS, shared, stream,
                    KernelArgs.start().ptr(cuda(q).address()).ptr(cuda(k).address()).ptr(cuda(v).address())
                            .ptr(cuda(lse).address()).ptr(dsum).ptr(cuda(dOut).address()).ptr(cuda(dk).address())
                            .ptr(cuda(dv).address()).i32(n).i32(nHeads).i32(nKvHeads).i32(headDim).i32(slidingWindow)
                            .f32(scale));
        } finally {
            allocator.release(dsum);
        }
        opDone(op);
    }

    /** The tensor-core attention kernels on this backend's stream, for tests and benchmarks that call them directly. */
    FlashAttention flashAttention() {
        bind();
        return new FlashAttention(kernels, allocator, stream);
    }

    /** Whether training attention of this head size runs on the tensor cores (BF16 operands) on this GPU. */
    boolean attentionOnTensorCores(int headDim) {
        return FlashAttention.serves(headDim, device.maxSharedPerBlock());
    }

    /** attention_backward.cu's l4j_attb_shared_floats, in bytes: four [32][headDim|1] tiles, two [32][33], two [32]. */
    static int attentionBackwardSharedBytes(int headDim) {
        int tile = CudaKernels.ATTENTION_BACKWARD_TILE;
        return Float.BYTES * (4 * tile * (headDim | 1) + 2 * tile * 33 + 2 * tile);
    }

    /** A tensor with the dtype, rows and row length of {@code like}. */
    private static void requireShapeOf(String op, String name, Tensor t, String likeName, Tensor like) {
        requireSameActivation(like, t, op + " " + likeName + " and " + name);
        if (t.rows() != like.rows() || t.dim(-1) != like.dim(-1)) {
            throw new IllegalArgumentException(op + ": " + name + " " + t + " must have the shape of " + likeName + " " + like);
        }
    }

    /**
     * The shapes of one whole sequence's attention: q [n, nHeads*headDim], k and v [n, nKvHeads*headDim], all F32 or
     * all BF16.
     */
    private static int checkTrainingAttention(String op, Tensor q, Tensor k, Tensor v, int nHeads, int nKvHeads,
                                              int headDim, int slidingWindow) {
        if (nHeads <= 0 || nKvHeads <= 0 || headDim <= 0 || slidingWindow < 0) {
            throw new IllegalArgumentException(op + ": nHeads " + nHeads + ", nKvHeads " + nKvHeads + " and headDim "
                    + headDim + " must be positive, slidingWindow " + slidingWindow + " not negative (0: none)");
        }
        if (nHeads % nKvHeads != 0) {
            throw new IllegalArgumentException(op + ": nHeads " + nHeads + " is not a multiple of nKvHeads " + nKvHeads);
        }
        requireActivation(q, op + " q");
        requireSameActivation(q, k, op + " q and k");
        requireSameActivation(q, v, op + " q and v");
        long n = q.rows();
        if (q.dim(-1) != (long) nHeads * headDim || k.dim(-1) != (long) nKvHeads * headDim
                || v.dim(-1) != (long) nKvHeads * headDim || k.rows() != n || v.rows() != n) {
            throw new IllegalArgumentException(op + " shapes: q " + q + ", k " + k + ", v " + v + " (needs q [n, " + nHeads
                    + "*" + headDim + "], k and v [n, " + nKvHeads + "*" + headDim + "])");
        }
        if (n > Integer.MAX_VALUE / 2) throw new IllegalArgumentException(op + ": " + n + " positions are too many");
        return (int) n;
    }

    @Override
    public void rmsNormBackward(Tensor x, Tensor weight, float eps, Tensor dOut, Tensor dX, Tensor dWeight) {
        rmsNormBackward(x, weight, eps, dOut, dX, dWeight, false);
    }

    @Override
    public void rmsNormBackward(Tensor x, Tensor weight, float eps, Tensor dOut, Tensor dX, Tensor dWeight,
                                boolean accumulate) {
        bind();
        String op = "rmsNormBackward";
        requireActivation(x, op + " x");
        requireSameActivation(x, dOut, op + " x and dOut");
        requireSameActivation(x, dX, op + " x and dX");
        requireSameCount(x, dOut);
        requireSameCount(x, dX);
        requireKernelType(weight, op + " weight");
        long d = x.dim(-1);
        if (weight.numel() != d) throw new IllegalArgumentException(op + ": weight " + weight + " does not match rows of " + x);
        if (dWeight != null) {
            requireF32(dWeight, op + " dWeight");
            if (dWeight.numel() != d) throw new IllegalArgumentException(op + ": dWeight " + dWeight + " does not match rows of " + x);
        }
        if (d > Integer.MAX_VALUE) throw new IllegalArgumentException(op + ": rows of " + d + " elements are too long");
        long rows = x.rows();
        CudaTensor xs = cuda(x), ws = cuda(weight), dys = cuda(dOut), dxs = cuda(dX);
        CudaTensor dws = dWeight == null ? null : cuda(dWeight);
        if (rows == 0 || d == 0) return;
        int threads = CudaKernels.rowThreads(d);
        if (dws != null && d <= CudaKernels.FUSED_RMSNORM_MAX_WIDTH) {
            // Both gradients in one read of x and dOut: each block sums its rows' weight-gradient terms into its own
            // row of partial sums, which are then added to dWeight in order: deterministic.
            int perBlock = Math.max(1, CudaKernels.FUSED_RMSNORM_ROWS_PER_BLOCK);
            long blocks = Math.ceilDiv(rows, perBlock);
            long partial = allocator.allocate(4L * blocks * d);
            try {
                kernels.launch(CudaKernels.rmsNormBackwardFused(x.dtype(), weight.dtype()), blocks, threads, 0, stream,
                        KernelArgs.start().ptr(xs.address()).ptr(ws.address()).f32(eps).ptr(dys.address())
                                .ptr(dxs.address()).ptr(partial).i64(rows).i32((int) d).i32(perBlock)
                                .i32(accumulate ? 1 : 0));
                sumWeightGradChunks(partial, dws.address(), blocks, d);
            } finally {
                allocator.release(partial);
            }
            opDone(op);
            return;
        }
        if (dws != null) {
            // Rows too long to hold in registers. The weight gradient first, since dX may overwrite x or dOut: each
            // chunk of rows sums into its own row of partial sums, which are then added to dWeight in order.
            long chunks = Math.ceilDiv(rows, CudaKernels.WEIGHT_GRAD_ROWS);
            long inv = allocator.allocate(4L * rows);
            long partial = 0;
            try {
                partial = allocator.allocate(4L * chunks * d);
                kernels.launch(CudaKernels.rmsNormInverse(x.dtype()), rows, threads, 0, stream,
                        KernelArgs.start().ptr(xs.address()).f32(eps).ptr(inv).i32((int) d));
                kernels.launch(CudaKernels.rmsNormWeightGrad(x.dtype()),
                        chunks * Math.ceilDiv(d, CudaKernels.WEIGHT_GRAD_COLUMNS), CudaKernels.WEIGHT_GRAD_COLUMNS, 0,
                        stream, KernelArgs.start().ptr(xs.address()).ptr(dys.address()).ptr(inv).ptr(partial).i64(rows)
                                .i32((int) d));
                sumWeightGradChunks(partial, dws.address(), chunks, d);
            } finally {
                allocator.release(inv);
                if (partial != 0) allocator.release(partial);
            }
        }
        kernels.launch(CudaKernels.rmsNormBackward(x.dtype(), weight.dtype()), rows, threads, 0, stream,
                KernelArgs.start().ptr(xs.address()).ptr(ws.address()).f32(eps).ptr(dys.address()).ptr(dxs.address())
                        .i32((int) d).i32(accumulate ? 1 : 0));
        opDone(op);
    }

    /** dw += the sum of the {@code chunks} rows of partial sums [chunks, d] (F32), in a fixed order. */
    private void sumWeightGradChunks(long partial, long dw, long chunks, long d) {
        kernels.launch(CudaKernels.RMSNORM_WEIGHT_GRAD_SUM, Math.ceilDiv(d, CudaKernels.WEIGHT_GRAD_SUM_COLUMNS),
                CudaKernels.WEIGHT_GRAD_SUM_COLUMNS * CudaKernels.WEIGHT_GRAD_SUM_LANES, 0, stream,
                KernelArgs.start().ptr(partial).ptr(dw).i32((int) chunks).i32((int) d));
    }

    @Override
    public void ropeBackward(Tensor dx, int headDim, int[] positions, Tensor invFreq) {
        rotate("ropeBackward", true, dx, headDim, positions, invFreq);
    }

    @Override
    public void swigluBackward(Tensor gate, Tensor up, Tensor dOut, Tensor dGate, Tensor dUp) {
        bind();
        String op = "swigluBackward";
        requireActivation(gate, op + " gate");
        for (Tensor t : new Tensor[] {gate, up, dOut, dGate, dUp}) {
            requireSameActivation(gate, t, op + " tensors");
            requireSameCount(gate, t);
        }
        if (gate.numel() == 0) return;
        kernels.launch(CudaKernels.swigluBackward(gate.dtype()), kernels.groupGrid(gate.numel()), CudaKernels.ELEMENTWISE_THREADS, 0,
                stream, KernelArgs.start().ptr(cuda(gate).address()).ptr(cuda(up).address()).ptr(cuda(dOut).address())
                        .ptr(cuda(dGate).address()).ptr(cuda(dUp).address()).i64(gate.numel()));
        opDone(op);
    }

    @Override
    public void embeddingBackward(int[] ids, Tensor dOut, Tensor dTable) {
        bind();
        String op = "embeddingBackward";
        requireActivation(dOut, op + " dOut");
        requireF32(dTable, op + " dTable");
        long d = dTable.dim(-1), vocab = dTable.rows();
        if (dOut.rows() != ids.length || dOut.dim(-1) != d) {
            throw new IllegalArgumentException(op + ": dOut must be [" + ids.length + ", " + d + "], got " + dOut);
        }
        for (int i = 0; i < ids.length; i++) {
            if (ids[i] < 0 || ids[i] >= vocab) {
                throw new IndexOutOfBoundsException(op + ": token id " + ids[i] + " (row " + i + ") outside the vocabulary [0, "
                        + vocab + ")");
            }
        }
        CudaTensor dys = cuda(dOut), dts = cuda(dTable);
        if (ids.length == 0 || d == 0) return;
        long idsOnDevice = uploadInts(ids);
        try {
            kernels.launch(CudaKernels.embeddingBackward(dOut.dtype()), kernels.rowGrid(ids.length),
                    CudaKernels.ELEMENTWISE_THREADS, 0, stream,
                    KernelArgs.start().ptr(idsOnDevice).ptr(dys.address()).ptr(dts.address()).i32(ids.length).i64(d));
        } finally {
            allocator.release(idsOnDevice);
        }
        opDone(op);
    }

    @Override
    public void crossEntropy(Tensor logits, int[] targets, float gradScale, Tensor losses) {
        bind();
        String op = "crossEntropy";
        requireF32(logits, op + " logits");
        requireF32(losses, op + " losses");
        long vocab = logits.dim(-1), n = logits.rows();
        if (targets.length != n || losses.numel() != n) {
            throw new IllegalArgumentException(op + ": logits " + logits + ", " + targets.length + " targets and losses "
                    + losses + " must agree on the number of rows");
        }
        if (vocab > Integer.MAX_VALUE) throw new IllegalArgumentException(op + ": rows of " + vocab + " logits are too long");
        for (int i = 0; i < targets.length; i++) {
            if (targets[i] >= vocab) {
                throw new IndexOutOfBoundsException(op + ": target " + targets[i] + " of row " + i + " outside the vocabulary [0, "
                        + vocab + ") (negative targets are ignored)");
            }
        }
        CudaTensor ls = cuda(logits), out = cuda(losses);
        if (n == 0) return;
        if (vocab == 0) throw new IllegalArgumentException(op + ": logits " + logits + " have no columns");
        long targetsOnDevice = uploadInts(targets);
        try {
            // Rows that fit in a block's registers are read once; longer ones (Llama 3's 128,256) three times.
            boolean held = vocab <= CudaKernels.CROSS_ENTROPY_HELD_MAX_VOCAB;
            kernels.launch(held ? CudaKernels.CROSS_ENTROPY_HELD : CudaKernels.CROSS_ENTROPY, n,
                    held ? CudaKernels.CROSS_ENTROPY_HELD_THREADS : CudaKernels.CROSS_ENTROPY_THREADS, 0, stream,
                    KernelArgs.start().ptr(ls.address()).ptr(targetsOnDevice).f32(gradScale).ptr(out.address())
                            .i32((int) vocab));
        } finally {
            allocator.release(targetsOnDevice);
        }
        opDone(op);
    }

    /**
     * One launch over all four tensors: param F32 or BF16 with m and v of its dtype, grad F32 or BF16 (optimizer.cu).
     * The grid has a thread for each group of {@link CudaKernels#GROUP} elements rather than one wave of resident
     * blocks ({@link CudaKernels#groupGrid}): at the kernel's 64 or so registers a multiprocessor holds half the blocks
     * that wave counts on, and on an H200 the larger grid moved 4.0 TB/s where the wave moved 3.7 (BF16 state).
     */
    @Override
    public void adamw(Tensor param, Tensor grad, Tensor m, Tensor v, float lr, float beta1, float beta2, float eps,
                      float weightDecay, long step) {
        bind();
        String op = "adamw";
        requireAdamwTensors(op, param, grad, m, v);
        if (step < 1) throw new IllegalArgumentException(op + ": step counts from 1, got " + step);
        if (param.numel() == 0) return;
        AdamwScalars s = AdamwScalars.of(lr, beta1, beta2, eps, weightDecay, step);
        kernels.launch(CudaKernels.adamw(param.dtype(), grad.dtype()),
                CudaKernels.gridFor(Math.ceilDiv(param.numel(), CudaKernels.GROUP)),
                CudaKernels.ELEMENTWISE_THREADS, 0, stream,
                KernelArgs.start().ptr(cuda(param).address()).ptr(cuda(grad).address()).ptr(cuda(m).address())
                        .ptr(cuda(v).address()).f32(s.decay()).f32(s.oneMinusBeta1()).f32(s.beta2())
                        .f32(s.oneMinusBeta2()).f32(s.negStepSize()).f32(s.bias2Sqrt()).f32(s.eps()).i64(param.numel()));
        opDone(op);
    }

    private void requireAdamwTensors(String op, Tensor param, Tensor grad, Tensor m, Tensor v) {
        requireStateType(param, op + " param");
        requireStateType(grad, op + " grad");
        for (Tensor moment : new Tensor[] {m, v}) {
            if (moment.dtype() != param.dtype()) {
                throw new IllegalArgumentException(op + ": " + (moment == m ? "m " : "v ") + moment
                        + " must have the dtype of param " + param + " (the moments are kept in the parameter's dtype)");
            }
        }
        for (Tensor t : new Tensor[] {grad, m, v}) requireSameCount(param, t);
    }

    /**
     * One launch per pair of dtypes: a table of the pair's tensors (l4j_adamw_entry, 64 bytes each) goes to the device
     * and every block of {@link CudaKernels#ADAMW_CHUNK} elements finds its tensor in it. Every entry is checked
     * first, so a bad one changes nothing.
     */
    @Override
    public void adamwAll(List<AdamwTensors> tensors, float lr, float beta1, float beta2, float eps, long step) {
        bind();
        for (int i = 0; i < tensors.size(); i++) {
            AdamwTensors t = tensors.get(i);
            requireAdamwTensors("adamwAll entry " + i, t.param(), t.grad(), t.m(), t.v());
        }
        if (step < 1) throw new IllegalArgumentException("adamwAll: step counts from 1, got " + step);
        Map<String, List<AdamwTensors>> byKernel = new LinkedHashMap<>();
        for (AdamwTensors t : tensors) {
            if (t.param().numel() == 0) continue;
            byKernel.computeIfAbsent(CudaKernels.adamwAll(t.param().dtype(), t.grad().dtype()), k -> new ArrayList<>())
                    .add(t);
        }
        AdamwScalars shared = AdamwScalars.of(lr, beta1, beta2, eps, 0f, step);
        for (Map.Entry<String, List<AdamwTensors>> group : byKernel.entrySet()) {
            launchOverTable("adamwAll", group.getKey(), 64, group.getValue(), (host, at, t, firstBlock) -> {
                host.set(JAVA_LONG, at, cuda(t.param()).address());
                host.set(JAVA_LONG, at + 8, cuda(t.grad()).address());
                host.set(JAVA_LONG, at + 16, cuda(t.m()).address());
                host.set(JAVA_LONG, at + 24, cuda(t.v()).address());
                host.set(JAVA_LONG, at + 32, t.param().numel());
                host.set(JAVA_LONG, at + 40, firstBlock);
                // The decay as the one-tensor kernel gets it: the same float.
                host.set(JAVA_FLOAT, at + 48, AdamwScalars.of(lr, beta1, beta2, eps, t.weightDecay(), step).decay());
                return Math.ceilDiv(t.param().numel(), CudaKernels.ADAMW_CHUNK);
            }, args -> args.i32(CudaKernels.ADAMW_CHUNK).f32(shared.oneMinusBeta1()).f32(shared.beta2())
                    .f32(shared.oneMinusBeta2()).f32(shared.negStepSize()).f32(shared.bias2Sqrt()).f32(shared.eps()));
            opDone("adamw");
        }
    }

    /** Writes one entry of a many-tensor kernel's table at {@code at}; returns the blocks that work on it. */
    @FunctionalInterface
    private interface TableEntry<T> {
        long write(MemorySegment host, long at, T entry, long firstBlock);
    }

    /**
     * Launches a kernel that takes many tensors at once (adamwAll's, zeroAll's) over a table of them, each entry
     * {@code entryBytes} long and written by {@code entry}: one block per chunk of a tensor, the blocks numbered
     * through the table in order. The kernel's arguments are the table and its length, then what {@code more} adds.
     */
    private <T> void launchOverTable(String op, String kernel, int entryBytes, List<T> entries, TableEntry<T> entry,
                                     UnaryOperator<KernelArgs> more) {
        long bytes = (long) entryBytes * entries.size(), blocks = 0;
        long table = allocator.allocate(bytes);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment host = arena.allocate(bytes, 16);
            for (int i = 0; i < entries.size(); i++) {
                blocks += entry.write(host, (long) entryBytes * i, entries.get(i), blocks);
            }
            if (blocks > Integer.MAX_VALUE) {
                throw new IllegalArgumentException(op + ": " + blocks + " blocks are more than one launch takes; pass "
                        + "fewer tensors at once");
            }
            cu.check(cu.memcpyHtoDAsync(table, host, bytes, stream), "cuMemcpyHtoDAsync_v2(" + bytes + " bytes)");
            kernels.launch(kernel, blocks, CudaKernels.ELEMENTWISE_THREADS, 0, stream,
                    more.apply(KernelArgs.start().ptr(table).i32(entries.size())));
        } finally {
            allocator.release(table);
        }
    }

    /** The sum of the squares of an F32 or BF16 tensor, each value widened to double, summed in double. */
    @Override
    public double sumOfSquares(Tensor t) {
        bind();
        requireStateType(t, "sumOfSquares");
        CudaTensor ts = cuda(t);
        long n = t.numel();
        if (n == 0) return 0;
        int blocks = (int) Math.min(CudaKernels.SQUARES_MAX_BLOCKS, Math.ceilDiv(n, CudaKernels.SQUARES_THREADS));
        long partial = allocator.allocate(8L * (blocks + 1));
        try (Arena arena = Arena.ofConfined()) {
            long total = partial + 8L * blocks;
            kernels.launch(CudaKernels.sumSquaresPartial(t.dtype()), blocks, CudaKernels.SQUARES_THREADS, 0, stream,
                    KernelArgs.start().ptr(ts.address()).ptr(partial).i64(n));
            kernels.launch(CudaKernels.SUM_SQUARES_TOTAL, 1, CudaKernels.SQUARES_THREADS, 0, stream,
                    KernelArgs.start().ptr(partial).ptr(total).i32(blocks));
            MemorySegment host = arena.allocate(JAVA_DOUBLE);
            cu.check(cu.memcpyDtoHAsync(host, total, 8, stream), "cuMemcpyDtoHAsync_v2(8 bytes)");
            waitForStream("sumOfSquares");
            return host.get(JAVA_DOUBLE, 0);
        } finally {
            allocator.release(partial);
        }
    }

    @Override
    public void scale(Tensor t, float s) {
        bind();
        requireKernelType(t, "scale");
        CudaTensor ts = cuda(t);
        if (t.numel() == 0) return;
        kernels.launch(CudaKernels.scale(t.dtype()), kernels.groupGrid(t.numel()), CudaKernels.ELEMENTWISE_THREADS, 0,
                stream, KernelArgs.start().ptr(ts.address()).f32(s).i64(t.numel()));
        opDone("scale");
    }

    @Override
    public void zero(Tensor t) {
        bind();
        zeroBytes(cuda(t));
        opDone("zero");
    }

    /** One launch over a table of the tensors (l4j_zero_entry, 32 bytes each); a single tensor is one fill. */
    @Override
    public void zeroAll(List<Tensor> tensors) {
        bind();
        List<CudaTensor> fills = new ArrayList<>();
        for (Tensor t : tensors) {
            CudaTensor c = cuda(t);
            if (c.byteSize() > 0) fills.add(c);
        }
        if (fills.isEmpty()) return;
        if (fills.size() == 1) {
            zeroBytes(fills.getFirst());
        } else {
            launchOverTable("zeroAll", CudaKernels.ZERO_ALL, 32, fills, (host, at, c, firstBlock) -> {
                host.set(JAVA_LONG, at, c.address());
                host.set(JAVA_LONG, at + 8, c.byteSize());
                host.set(JAVA_LONG, at + 16, firstBlock);
                return Math.ceilDiv(c.byteSize(), CudaKernels.ZERO_CHUNK);
            }, args -> args);
        }
        opDone("zero");
    }

    @Override
    public void dropout(Tensor x, float p, long seed, Tensor out) {
        bind();
        requireActivation(x, "dropout x");
        requireSameActivation(x, out, "dropout x and out");
        requireSameCount(x, out);
        if (!(p >= 0 && p <= 1)) throw new IllegalArgumentException("dropout: p must be in [0, 1], got " + p);
        if (x.numel() == 0) return;
        kernels.launch(CudaKernels.dropout(x.dtype()), kernels.groupGrid(x.numel()), CudaKernels.ELEMENTWISE_THREADS, 0, stream,
                KernelArgs.start().ptr(cuda(x).address()).ptr(cuda(out).address()).f32(p).f32(dropoutScale(p)).i64(seed)
                        .i64(x.numel()));
        opDone("dropout");
    }

    /** What kept elements are multiplied by: 1/(1-p) in double, rounded to float, as torch and the CPU backend. */
    static float dropoutScale(float p) {
        return p == 1f ? 0f : (float) (1.0 / (1.0 - p));
    }

    // ---- LoRA's down projection (CudaLora, lora.cu) ------------------------------------------------------

    private final CudaLora lora = new CudaLora(this);

    /**
     * Fused for an F32 adapter (see {@link CudaLora}): BF16 activations on the tensor cores with a rounded to BF16,
     * F32 ones on the CUDA cores in FP32. Other adapter dtypes take the composition of other ops.
     */
    @Override
    public void loraDown(Tensor x, Tensor a, float scaling, float p, long seed, Tensor hidden) {
        bind();
        if (!CudaLora.serves(a, device.maxSharedPerBlock())) {
            Backend.super.loraDown(x, a, scaling, p, seed, hidden);
            return;
        }
        lora.down(cuda(x), cuda(a), scaling, p, seed, cuda(hidden));
        opDone(productOp("loraDown", x.rows(), x.dim(-1), a.rows()));
    }

    /**
     * In one read of dY (lora_up.cu) for BF16 activations, ranks up to 16 and dY on a 16-byte boundary; the two
     * products otherwise, or with {@code -Dlora4j.cuda.fused-lora-up-backward=false}.
     */
    @Override
    public void loraUpBackward(Tensor dY, Tensor hidden, Tensor b, Tensor gradB, Tensor dHidden) {
        bind();
        if (!CudaLora.servesUp(dY, hidden, b) || !aligned16(dY)) {  // the kernel reads dY 16 bytes at a time
            Backend.super.loraUpBackward(dY, hidden, b, gradB, dHidden);
            return;
        }
        lora.upBackward(cuda(dY), cuda(hidden), cuda(b), cuda(gradB), cuda(dHidden), device.multiprocessors());
        opDone(productOp("loraUpBackward", dY.rows(), dY.dim(-1), hidden.dim(-1)));
    }

    /** As {@link #loraDown}; with more ranks than one pass takes (64 in BF16, 16 in F32) dX is rounded after each pass. */
    @Override
    public void loraDownBackward(Tensor x, Tensor a, float scaling, float p, long seed, Tensor dHidden, Tensor gradA,
                                 Tensor dX, boolean accumulate) {
        bind();
        if (!CudaLora.serves(a, device.maxSharedPerBlock())) {
            Backend.super.loraDownBackward(x, a, scaling, p, seed, dHidden, gradA, dX, accumulate);
            return;
        }
        lora.downBackward(cuda(x), cuda(a), scaling, p, seed, cuda(dHidden), cuda(gradA), cuda(dX), accumulate);
        opDone(productOp("loraDownBackward", x.rows(), x.dim(-1), a.rows()));
    }

    private void zeroBytes(CudaTensor t) {
        if (t.byteSize() > 0) cu.check(cu.memsetD8Async(t.address(), (byte) 0, t.byteSize(), stream), "cuMemsetD8Async");
    }

    // ---- bitsandbytes' AdamW and paged optimizer state (CudaBitsandbytesAdam, PagedMemory) ------------------

    private final CudaBitsandbytesAdam bitsandbytesAdam = new CudaBitsandbytesAdam(this);
    private volatile PagedMemory paged; // made with the first paged tensor

    @Override
    public void adamw8bit(Tensor param, Tensor grad, Tensor m8, Tensor v8, Tensor absmaxM, Tensor absmaxV, Tensor codeSigned,
                          Tensor codeUnsigned, float lr, float beta1, float beta2, float eps, float weightDecay, long step) {
        bind();
        bitsandbytesAdam.adamw8bit(param, grad, m8, v8, absmaxM, absmaxV, codeSigned, codeUnsigned, lr, beta1, beta2, eps,
                weightDecay, step);
        opDone("adamw8bit");
    }

    @Override
    public void adamw32bit(Tensor param, Tensor grad, Tensor m, Tensor v, float lr, float beta1, float beta2, float eps,
                           float weightDecay, long step) {
        bind();
        bitsandbytesAdam.adamw32bit(param, grad, m, v, lr, beta1, beta2, eps, weightDecay, step);
        opDone("adamw32bit");
    }

    /** Managed memory while the device has room for it, else pinned host memory the device maps (see {@link PagedMemory}). */
    @Override
    public Tensor allocatePaged(DType dtype, long... shape) {
        bind();
        PagedMemory.Placed placed = pagedMemory().allocate(dtype.bytesFor(elementCount(shape)), stream);
        if (placed.placement() == dev.lora4j.backend.MemoryPlacement.DEVICE) return allocate(dtype, shape);
        opDone("allocatePaged");
        return new CudaTensor(this, placed.address(), dtype, shape);
    }

    @Override
    public dev.lora4j.backend.MemoryPlacement placement(Tensor t) {
        PagedMemory p = paged;
        dev.lora4j.backend.MemoryPlacement where = p == null ? null : p.placement(cuda(t).address());
        return where == null ? dev.lora4j.backend.MemoryPlacement.DEVICE : where;
    }

    /** Queues a prefetch of a managed (paged) tensor to the device; other tensors need none. */
    void prefetchPaged(CudaTensor t) {
        PagedMemory p = paged;
        if (p != null) p.prefetch(t.address(), t.byteSize(), stream);
    }

    private synchronized PagedMemory pagedMemory() {
        if (paged == null) paged = new PagedMemory(cu, device, allocator, () -> waitForStream("freeing paged memory"));
        return paged;
    }

    // ---- helpers ------------------------------------------------------------------------------------------

    /** Makes this backend's context current on the calling thread (contexts are per thread in the driver). */
    private void bind() {
        if (closed) throw new IllegalStateException("the CUDA backend is closed");
        cu.check(cu.ctxSetCurrent(context), "cuCtxSetCurrent");
    }

    private CudaTensor newTensor(DType dtype, long... shape) {
        long bytes = dtype.bytesFor(elementCount(shape));
        long address = allocator.allocate(bytes);
        try {
            return new CudaTensor(this, address, dtype, shape);
        } catch (RuntimeException e) {
            allocator.release(address);
            throw e;
        }
    }

    private static long elementCount(long... shape) {
        long n = 1;
        for (long d : shape) {
            if (d < 0) throw new IllegalArgumentException("negative dimension in shape " + java.util.Arrays.toString(shape));
            n = Math.multiplyExact(n, d);
        }
        return n;
    }

    /** Queues a host-to-device copy. Pageable host memory is staged by the driver before the call returns. */
    private void copyIn(long dst, MemorySegment host, long bytes) {
        if (host.isNative()) {
            cu.check(cu.memcpyHtoDAsync(dst, host, bytes, stream), "cuMemcpyHtoDAsync_v2(" + bytes + " bytes)");
            return;
        }
        try (Arena arena = Arena.ofConfined()) { // a heap segment has no stable address: copy it out first
            MemorySegment tmp = arena.allocate(bytes, 16);
            MemorySegment.copy(host, 0, tmp, 0, bytes);
            cu.check(cu.memcpyHtoDAsync(dst, tmp, bytes, stream), "cuMemcpyHtoDAsync_v2(" + bytes + " bytes)");
        }
    }

    /** The ints on the device, in a block the caller releases once the op that reads them is queued. */
    private long uploadInts(int[] values) {
        long bytes = 4L * values.length;
        long address = allocator.allocate(bytes);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment host = arena.allocate(JAVA_INT, values.length);
            MemorySegment.copy(values, 0, host, JAVA_INT, 0, values.length);
            cu.check(cu.memcpyHtoDAsync(address, host, bytes, stream), "cuMemcpyHtoDAsync_v2(" + bytes + " bytes)");
        } catch (RuntimeException e) {
            allocator.release(address);
            throw e;
        }
        return address;
    }

    private void convert(long src, DType from, long dst, DType to, long count) {
        kernels.launch(CudaKernels.convert(from, to), kernels.groupGrid(count), CudaKernels.ELEMENTWISE_THREADS, 0,
                stream, KernelArgs.start().ptr(src).ptr(dst).i64(count));
    }

    private static boolean convertible(DType from, DType to) {
        return isKernelFloat(from) && isKernelFloat(to);
    }

    private static boolean isKernelFloat(DType t) {
        return t == DType.F32 || t == DType.BF16 || t == DType.F16 || t == DType.F64;
    }

    private void waitForStream(String what) {
        cu.check(cu.streamSynchronize(stream), "cuStreamSynchronize (" + what + ")");
    }

    /**
     * A product's name in the op profile: with {@code -Dlora4j.cuda.profile-shapes=true} also its rows, inner and
     * outer sizes, so that each shape gets a line (built only while profiling).
     */
    private String productOp(String op, long rows, long inner, long outer) {
        return profileShapes ? op + " " + rows + "x" + inner + "x" + outer : op;
    }

    private void opDone(String op) {
        if (syncEachOp) waitForStream("after " + op);
        if (profile != null) profile.charge(op);
    }

    /**
     * The op profile of {@code -Dlora4j.cuda.profile=true} since the last reset, one line per op (null when
     * profiling is off); {@code reset} starts a new one.
     */
    public String opProfile(boolean reset) {
        if (profile == null) return null;
        String report = profile.report();
        if (reset) profile.reset();
        return report;
    }

    /** Tells the op profile that host work not belonging to any op happened since the last op. */
    public void opProfileMark() {
        if (profile != null) profile.mark();
    }

    private CudaTensor cuda(Tensor t) {
        if (!(t instanceof CudaTensor c) || c.cudaBackend() != this) {
            throw new IllegalArgumentException(t + " is not a tensor of this CUDA backend");
        }
        return c;
    }

    private static void requireF32(Tensor t, String what) {
        if (t.dtype() != DType.F32) throw new IllegalArgumentException(what + " must be F32, got " + t);
    }

    /** A parameter, gradient or optimizer state of the optimizer's ops: F32, or BF16 (full fine-tuning in pure BF16). */
    private static void requireStateType(Tensor t, String what) {
        if (!CudaKernels.STATE_TYPES.contains(t.dtype())) {
            throw new IllegalArgumentException(what + " must be F32 or BF16, got " + t);
        }
    }

    /** An activation or activation gradient: F32 or BF16 (kernels are instantiated for both). */
    private static void requireActivation(Tensor t, String what) {
        if (t.dtype() != DType.F32 && t.dtype() != DType.BF16) {
            throw new IllegalArgumentException(what + " must be F32 or BF16 (an activation), got " + t);
        }
    }

    /** b is an activation of a's dtype. */
    private static void requireSameActivation(Tensor a, Tensor b, String what) {
        requireActivation(a, what);
        if (b.dtype() != a.dtype()) throw new IllegalArgumentException(what + " must have one dtype, F32 or BF16: " + a + ", " + b);
    }

    private static void requireKernelType(Tensor t, String what) {
        DType d = t.dtype();
        if (d != DType.F32 && d != DType.BF16 && d != DType.F16) {
            throw new IllegalArgumentException(what + " must be F32, BF16 or F16, got " + t);
        }
    }

    private static void requireSameCount(Tensor a, Tensor b) {
        if (a.numel() != b.numel()) throw new IllegalArgumentException("element counts differ: " + a + " vs " + b);
    }

    // ---- 4-bit weights (CudaQuantization) ---------------------------------------------------------------

    @Override
    public QuantizedTensor quantize4bit(Tensor weight, QuantSpec spec) {
        bind();
        QuantizedTensor q = quantization.quantize(weight, spec);
        opDone("quantize4bit");
        return q;
    }

    @Override
    public void dequantize4bit(QuantizedTensor q, Tensor out) {
        bind();
        quantization.dequantize(q, out);
        opDone("dequantize4bit");
    }

    /** A quantized weight in its compute dtype, for one product: close it once the product is queued. */
    private Tensor dequantizedForProduct(QuantizedTensor q) {
        Tensor dense = quantization.dequantizeForProduct(q);
        opDone("dequantize4bit");
        return dense;
    }

    /** A tensor whose contents are undefined (for outputs a kernel fills completely). */
    CudaTensor uninitialized(DType dtype, long... shape) { return newTensor(dtype, shape); }

    /** The tensor as this backend's, or an IllegalArgumentException naming it. */
    CudaTensor device(Tensor t) { return cuda(t); }
}
