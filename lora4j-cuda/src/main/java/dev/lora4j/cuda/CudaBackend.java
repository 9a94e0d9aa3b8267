package dev.lora4j.cuda;

import dev.lora4j.backend.Backend;
import dev.lora4j.backend.BackendProvider.Availability;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;

/**
 * The CUDA backend: tensors in GPU memory, kernels from lora4j's fatbin, matmuls through cuBLASLt, all queued on
 * one stream of the device's primary context (the context the CUDA runtime inside cuBLASLt uses too).
 * Activations are F32; weights may be F32, BF16 or F16. Ops return as soon as they are queued; host transfers
 * and {@link #synchronize()} wait.
 *
 * <p>The semantics of every op are those of {@code CpuBackend}, which the tests compare this backend against.
 * Set {@code -Dlora4j.cuda.syncEachOp=true} to wait after every op, so that a failing kernel is named by the op
 * that launched it.
 */
public final class CudaBackend implements Backend {
    /** System property: wait for the device after every op, to pin a kernel failure on its op. */
    public static final String SYNC_EACH_OP_PROPERTY = "lora4j.cuda.syncEachOp";

    private final CudaDriver cu;
    private final DeviceInfo device;
    private final MemorySegment context;
    private final MemorySegment stream;
    private final DeviceAllocator allocator;
    private final CudaKernels kernels;
    private final CublasLtMatmul matmul;
    private final boolean syncEachOp = Boolean.getBoolean(SYNC_EACH_OP_PROPERTY);
    private volatile boolean closed;

    /** Opens the device chosen by {@code -Dlora4j.cuda.device} (0 by default). */
    public static CudaBackend open() {
        return open(CudaProbe.deviceOrdinal());
    }

    /** Opens GPU {@code ordinal}; a {@link CudaException} with the probe's one-line reason when it cannot run. */
    public static CudaBackend open(int ordinal) {
        CudaPlatform.Status status = CudaPlatform.shared();
        Availability a = CudaProbe.probe(status, ordinal);
        if (!a.available()) throw new CudaException("CUDA backend unavailable: " + a.detail());
        return new CudaBackend(status.platform(), ordinal);
    }

    private CudaBackend(CudaPlatform platform, int ordinal) {
        this.cu = platform.driver;
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
            alloc = new DeviceAllocator(cu, () -> cu.check(cu.streamSynchronize(s), "cuStreamSynchronize"));
            kern = new CudaKernels(cu);
            long ws = alloc.allocate(CublasLtMatmul.WORKSPACE_BYTES);
            this.matmul = new CublasLtMatmul(platform.cublasLt, ws);
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
    }

    @Override public String name() { return "cuda"; }

    /** "CUDA, NVIDIA H200 (sm_90), 139.8 GiB, driver 13.0". */
    @Override public String description() { return "CUDA, " + device.summary(); }

    @Override public DType activationType() { return DType.F32; }

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
        allocator.close();
        cu.streamDestroy(stream);
        cu.devicePrimaryCtxRelease(device.handle());
        if (first != null) throw first;
    }

    void release(long address) {
        allocator.release(address);
    }

    // ---- forward ops --------------------------------------------------------------------------------------

    @Override
    public void embedding(Tensor table, int[] ids, Tensor out) {
        bind();
        CudaTensor tab = cuda(table), o = cuda(out);
        long d = table.dim(-1);
        long vocab = table.rows();
        requireF32(out, "embedding out");
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
        long idsOnDevice = uploadInts(ids);
        try {
            kernels.launch(CudaKernels.embedding(table.dtype()), CudaKernels.gridFor((long) ids.length * d),
                    CudaKernels.ELEMENTWISE_THREADS, 0, stream,
                    KernelArgs.start().ptr(tab.address()).ptr(idsOnDevice).ptr(o.address()).i32(ids.length).i64(d));
        } finally {
            allocator.release(idsOnDevice);
        }
        opDone("embedding");
    }

    @Override
    public void rmsNorm(Tensor x, Tensor weight, float eps, Tensor out) {
        bind();
        requireF32(x, "rmsNorm x");
        requireF32(out, "rmsNorm out");
        requireSameCount(x, out);
        requireKernelType(weight, "rmsNorm weight");
        long d = x.dim(-1);
        if (weight.numel() != d) throw new IllegalArgumentException("rmsNorm weight " + weight + " does not match rows of " + x);
        if (d > Integer.MAX_VALUE) throw new IllegalArgumentException("rmsNorm rows of " + d + " elements are too long");
        long rows = x.rows();
        if (rows == 0 || d == 0) return;
        int threads = (int) Math.min(1024, Math.max(32, Math.ceilDiv(d, 32) * 32));
        kernels.launch(CudaKernels.rmsNorm(weight.dtype()), rows, threads, 0, stream,
                KernelArgs.start().ptr(cuda(x).address()).ptr(cuda(weight).address()).f32(eps)
                        .ptr(cuda(out).address()).i32((int) d));
        opDone("rmsNorm");
    }

    @Override
    public void matmul(Tensor x, Tensor w, Tensor out, boolean accumulate) {
        bind();
        requireF32(x, "matmul x");
        requireF32(out, "matmul out");
        long n = x.rows(), k = x.dim(-1), m = w.rows();
        if (w.dim(-1) != k || out.rows() != n || out.dim(-1) != m) {
            throw new IllegalArgumentException("matmul shapes: x " + x + ", w " + w + ", out " + out);
        }
        DType wt = w.dtype();
        CublasLtMatmul.dataType(wt); // rejects weight types cuBLASLt is not asked to handle
        CudaTensor xs = cuda(x), ws = cuda(w), os = cuda(out);
        if (n == 0 || m == 0) return;
        if (k == 0) {
            if (!accumulate) cu.check(cu.memsetD8Async(os.address(), (byte) 0, os.byteSize(), stream), "cuMemsetD8Async");
            return;
        }
        if (wt == DType.F32) {
            matmul.multiply(wt, ws.address(), xs.address(), os.address(), n, m, k, accumulate, stream);
        } else {
            // The tensor cores multiply two 16-bit operands: round x to the weight's type (nearest even) first.
            long converted = allocator.allocate(wt.bytesFor(n * k));
            try {
                convert(xs.address(), DType.F32, converted, wt, n * k);
                matmul.multiply(wt, ws.address(), converted, os.address(), n, m, k, accumulate, stream);
            } finally {
                allocator.release(converted);
            }
        }
        opDone("matmul");
    }

    @Override
    public void addBias(Tensor x, Tensor bias) {
        bind();
        requireF32(x, "addBias x");
        requireKernelType(bias, "addBias bias");
        long d = x.dim(-1);
        if (bias.numel() != d) throw new IllegalArgumentException("bias " + bias + " does not match rows of " + x);
        if (x.numel() == 0) return;
        if (d > Integer.MAX_VALUE) throw new IllegalArgumentException("addBias rows of " + d + " elements are too long");
        kernels.launch(CudaKernels.addBias(bias.dtype()), CudaKernels.gridFor(x.numel()), CudaKernels.ELEMENTWISE_THREADS,
                0, stream, KernelArgs.start().ptr(cuda(x).address()).ptr(cuda(bias).address()).i64(x.numel()).i32((int) d));
        opDone("addBias");
    }

    @Override
    public void rope(Tensor x, int headDim, int[] positions, Tensor invFreq) {
        bind();
        requireF32(x, "rope x");
        long width = x.dim(-1);
        if (headDim <= 0 || width % headDim != 0 || headDim % 2 != 0) {
            throw new IllegalArgumentException("rope: row width " + width + " is not a multiple of an even headDim " + headDim);
        }
        if (positions.length != x.rows()) {
            throw new IllegalArgumentException("rope: " + positions.length + " positions for " + x.rows() + " rows");
        }
        if (invFreq.numel() != headDim / 2) throw new IllegalArgumentException("rope: invFreq must have headDim/2 entries");
        if (width > Integer.MAX_VALUE) throw new IllegalArgumentException("rope: rows of " + width + " elements are too long");
        CudaTensor xs = cuda(x), inv = cuda(invFreq);
        if (positions.length == 0) return;
        long invAddress = inv.address();
        long invF32 = 0;
        if (inv.dtype() != DType.F32) { // the kernel reads F32 frequencies; others are converted as the CPU reads them
            if (!convertible(inv.dtype(), DType.F32)) throw new IllegalArgumentException("rope: invFreq must be a float tensor, got " + invFreq);
            invF32 = allocator.allocate(4L * inv.numel());
            convert(invAddress, inv.dtype(), invF32, DType.F32, inv.numel());
            invAddress = invF32;
        }
        long pos = uploadInts(positions);
        try {
            kernels.launch(CudaKernels.ROPE, CudaKernels.gridFor((long) positions.length * (headDim / 2)),
                    CudaKernels.ELEMENTWISE_THREADS, 0, stream,
                    KernelArgs.start().ptr(xs.address()).ptr(pos).ptr(invAddress).i32(positions.length).i32((int) width)
                            .i32(headDim));
        } finally {
            allocator.release(pos);
            if (invF32 != 0) allocator.release(invF32);
        }
        opDone("rope");
    }

    @Override
    public void attention(Tensor q, Tensor k, Tensor v, int startPos, int nHeads, int nKvHeads, int headDim,
                          int slidingWindow, Tensor out) {
        bind();
        requireF32(q, "attention q");
        requireF32(out, "attention out");
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
        kernels.launch(CudaKernels.attention(k.dtype()), blocks, CudaKernels.ATTENTION_THREADS, shared, stream,
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
        requireF32(gate, "swiglu gate");
        requireF32(up, "swiglu up");
        requireF32(out, "swiglu out");
        if (gate.numel() == 0) return;
        kernels.launch(CudaKernels.SWIGLU, CudaKernels.gridFor(gate.numel()), CudaKernels.ELEMENTWISE_THREADS, 0, stream,
                KernelArgs.start().ptr(cuda(gate).address()).ptr(cuda(up).address()).ptr(cuda(out).address())
                        .i64(gate.numel()));
        opDone("swiglu");
    }

    @Override
    public void add(Tensor x, Tensor y) {
        bind();
        requireSameCount(x, y);
        requireF32(x, "add x");
        requireF32(y, "add y");
        if (x.numel() == 0) return;
        kernels.launch(CudaKernels.ADD, CudaKernels.gridFor(x.numel()), CudaKernels.ELEMENTWISE_THREADS, 0, stream,
                KernelArgs.start().ptr(cuda(x).address()).ptr(cuda(y).address()).i64(x.numel()));
        opDone("add");
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
        kernels.launch(CudaKernels.convert(from, to), CudaKernels.gridFor(count), CudaKernels.ELEMENTWISE_THREADS, 0,
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

    private void opDone(String op) {
        if (syncEachOp) waitForStream("after " + op);
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

    private static void requireKernelType(Tensor t, String what) {
        DType d = t.dtype();
        if (d != DType.F32 && d != DType.BF16 && d != DType.F16) {
            throw new IllegalArgumentException(what + " must be F32, BF16 or F16, got " + t);
        }
    }

    private static void requireSameCount(Tensor a, Tensor b) {
        if (a.numel() != b.numel()) throw new IllegalArgumentException("element counts differ: " + a + " vs " + b);
    }
}
