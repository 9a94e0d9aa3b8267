package dev.lora4j.backend.cpu;

import dev.lora4j.backend.Backend;
import dev.lora4j.backend.HostConversions;
import dev.lora4j.quant.QuantSpec;
import dev.lora4j.quant.QuantizedTensor;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The CPU backend: off-heap tensors, F32 activations, F32/BF16/F16 weights, kernels written with the Vector API
 * and run on a fork-join pool of {@link #threads()} workers. It is the reference every other backend is tested
 * against: each kernel is checked against a double-precision scalar reference (see the tests), and only then
 * made fast.
 */
public final class CpuBackend implements Backend {
    private static final ValueLayout.OfFloat F = ValueLayout.JAVA_FLOAT_UNALIGNED;

    private final int threads;
    private final ForkJoinPool pool;
    private final Parallel parallel;
    private final AtomicLong inUse = new AtomicLong();
    private final AtomicLong peak = new AtomicLong();

    public CpuBackend() {
        this(Runtime.getRuntime().availableProcessors());
    }

    public CpuBackend(int threads) {
        if (threads < 1) throw new IllegalArgumentException("threads must be >= 1, got " + threads);
        this.threads = threads;
        this.pool = new ForkJoinPool(threads);
        this.parallel = new Parallel(pool, threads);
    }

    @Override public String name() { return "cpu"; }

    @Override
    public String description() {
        return "CPU, " + threads + " threads, " + CpuKernels.vectorDescription();
    }

    @Override public DType activationType() { return DType.F32; }

    public int threads() { return threads; }

    // ---- memory -------------------------------------------------------------------------------------------

    @Override
    public Tensor allocate(DType dtype, long... shape) {
        CpuTensor probe = new CpuTensor(this, MemorySegment.NULL, null, dtype, shape);
        long bytes = Math.max(1, probe.byteSize());
        Arena arena = Arena.ofShared();
        MemorySegment seg = arena.allocate(bytes, 64); // zero-filled by the arena
        acquired(bytes);
        return new CpuTensor(this, seg.asSlice(0, probe.byteSize()), arena, dtype, shape);
    }

    @Override
    public Tensor upload(MemorySegment host, DType src, DType dst, long... shape) {
        Tensor t = allocate(dst, shape);
        // On this thread: the caller's memory may be confined to it.
        if (host.isNative()) FloatConversions.convert(host, src, 0, seg(t), dst, 0, t.numel());
        else HostConversions.convert(host, src, seg(t), dst, t.numel());
        return t;
    }

    @Override
    public void copyToHost(Tensor t, MemorySegment dst) {
        MemorySegment.copy(seg(t), 0, dst, 0, t.byteSize());
    }

    @Override
    public void copy(Tensor src, Tensor dst) {
        requireSameCount(src, dst);
        convertInParallel(seg(src), src.dtype(), seg(dst), dst.dtype(), src.numel());
    }

    private void convertInParallel(MemorySegment src, DType s, MemorySegment dst, DType d, long count) {
        if (s == d || !FloatConversions.isVectorized(s, d)) {
            FloatConversions.convert(src, s, 0, dst, d, 0, count);
            return;
        }
        forElements(count, (from, to) -> FloatConversions.convert(src, s, from, dst, d, from, to - from));
    }

    @Override public void synchronize() {}

    @Override public long memoryInUse() { return inUse.get(); }

    @Override public long peakMemoryInUse() { return peak.get(); }

    @Override public void close() { pool.shutdown(); }

    void released(long bytes) { inUse.addAndGet(-bytes); }

    private void acquired(long bytes) {
        long now = inUse.addAndGet(bytes);
        peak.accumulateAndGet(now, Math::max);
    }

    // ---- ops ----------------------------------------------------------------------------------------------

    @Override
    public void embedding(Tensor table, int[] ids, Tensor out) {
        long d = table.dim(-1);
        long vocab = table.rows();
        requireF32(out, "embedding out");
        requireFloat(table, "embedding table");
        if (out.rows() != ids.length || out.dim(-1) != d) {
            throw new IllegalArgumentException("embedding out must be [" + ids.length + ", " + d + "], got " + out);
        }
        for (int id : ids) {
            if (id < 0 || id >= vocab) {
                throw new IndexOutOfBoundsException("token id " + id + " outside the vocabulary [0, " + vocab + ")");
            }
        }
        MemorySegment t = seg(table), o = seg(out);
        DType tt = table.dtype();
        parallel.forRange(ids.length, grainRows(d), (from, to) -> {
            for (int i = from; i < to; i++) FloatConversions.convert(t, tt, ids[i] * d, o, DType.F32, i * d, d);
        });
    }

    @Override
    public void rmsNorm(Tensor x, Tensor weight, float eps, Tensor out) {
        requireF32(x, "rmsNorm x");
        requireF32(out, "rmsNorm out");
        requireSameCount(x, out);
        int d = rowLength(x, "rmsNorm x");
        if (weight.numel() != d) throw new IllegalArgumentException("rmsNorm weight " + weight + " must have " + d + " elements, as x's rows " + x);
        MemorySegment w = asF32(weight, "rmsNorm weight");
        MemorySegment xs = seg(x), os = seg(out);
        parallel.forRange(rowCount(x), grainRows(d), (from, to) -> {
            for (int r = from; r < to; r++) CpuKernels.rmsNormRow(xs, os, (long) r * d, d, w, eps);
        });
    }

    @Override
    public void matmul(Tensor x, Tensor w, Tensor out, boolean accumulate) {
        if (w instanceof QuantizedTensor q) {
            fourBit().matmul(x, q, out, accumulate);
            return;
        }
        requireF32(x, "matmul x");
        requireF32(out, "matmul out");
        if (w.dtype() != DType.F32 && w.dtype() != DType.BF16 && w.dtype() != DType.F16) {
            throw new IllegalArgumentException("matmul weights must be F32, BF16 or F16, got " + w);
        }
        long n = x.rows(), k = x.dim(-1), m = w.rows();
        if (w.dim(-1) != k || out.rows() != n || out.dim(-1) != m) {
            throw new IllegalArgumentException("matmul shapes: x " + x + ", w " + w + ", out " + out);
        }
        if (n > Integer.MAX_VALUE || k > Integer.MAX_VALUE || m > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("matmul dimensions must each be below 2^31: x " + x + ", w " + w);
        }
        if (n == 0 || m == 0) return;
        MemorySegment xs = seg(x), ws = seg(w), os = seg(out);
        DType wt = w.dtype();
        int rows = (int) n, depth = (int) k, features = (int) m;
        // Blocks of up to ROW_BLOCK rows and FEATURE_BLOCK output features keep what a block reuses in the core's
        // L2 cache; there are enough of them for every thread to get several.
        int rowBlock = rows < MatmulKernels.TILE ? rows : ROW_BLOCK;
        int rowBlocks = Parallel.ceilDiv(rows, rowBlock);
        int groups = Parallel.ceilDiv(features, MatmulKernels.TILE);
        int featureBlocks = Math.min(groups, Math.max(Parallel.ceilDiv(features, FEATURE_BLOCK), Parallel.ceilDiv(threads * 8, rowBlocks)));
        parallel.forEach(rowBlocks * featureBlocks, task -> {
            int rb = task / featureBlocks, fb = task % featureBlocks;
            int r0 = rb * rowBlock, r1 = Math.min(rows, r0 + rowBlock);
            int c0 = (int) ((long) groups * fb / featureBlocks) * MatmulKernels.TILE;
            int c1 = Math.min(features, (int) ((long) groups * (fb + 1) / featureBlocks) * MatmulKernels.TILE);
            MatmulKernels.block(xs, ws, wt, os, depth, features, r0, r1, c0, c1, accumulate);
        });
    }

    @Override
    public void addBias(Tensor x, Tensor bias) {
        requireF32(x, "addBias x");
        int d = rowLength(x, "addBias x");
        if (bias.numel() != d) throw new IllegalArgumentException("bias " + bias + " does not match rows of " + x);
        MemorySegment b = asF32(bias, "addBias bias");
        MemorySegment xs = seg(x);
        parallel.forRange(rowCount(x), grainRows(d), (from, to) -> {
            for (int r = from; r < to; r++) CpuKernels.addRow(xs, (long) r * d, b, d);
        });
    }

    @Override
    public void rope(Tensor x, int headDim, int[] positions, Tensor invFreq) {
        requireF32(x, "rope x");
        int width = rowLength(x, "rope x");
        if (headDim <= 0 || width % headDim != 0 || headDim % 2 != 0) {
            throw new IllegalArgumentException("rope: row width " + width + " is not a multiple of an even headDim " + headDim);
        }
        if (positions.length != x.rows()) {
            throw new IllegalArgumentException("rope: " + positions.length + " positions for " + x.rows() + " rows");
        }
        float[] inv = toFloats(invFreq);
        int half = headDim / 2;
        if (inv.length != half) throw new IllegalArgumentException("rope: invFreq must have headDim/2 = " + half + " entries, got " + invFreq);
        MemorySegment xs = seg(x);
        parallel.forRange(positions.length, grainRows(width), (from, to) -> {
            float[] cos = new float[half], sin = new float[half];
            for (int r = from; r < to; r++) {
                for (int j = 0; j < half; j++) {
                    float angle = positions[r] * inv[j]; // FP32 product, as torch computes it
                    cos[j] = (float) Math.cos(angle);
                    sin[j] = (float) Math.sin(angle);
                }
                CpuKernels.ropeRow(xs, (long) r * width, width, headDim, cos, sin);
            }
        });
    }

    @Override
    public void attention(Tensor q, Tensor k, Tensor v, int startPos, int nHeads, int nKvHeads, int headDim,
                          int slidingWindow, Tensor out) {
        requireF32(q, "attention q");
        requireF32(out, "attention out");
        requireFloat(k, "attention k");
        requireFloat(v, "attention v");
        if (nHeads <= 0 || nKvHeads <= 0 || headDim <= 0 || startPos < 0) {
            throw new IllegalArgumentException("attention: nHeads " + nHeads + ", nKvHeads " + nKvHeads + ", headDim "
                    + headDim + " must be positive and startPos " + startPos + " not negative");
        }
        if (nHeads % nKvHeads != 0) throw new IllegalArgumentException("nHeads " + nHeads + " not a multiple of nKvHeads " + nKvHeads);
        int n = rowCount(q);
        if (q.dim(-1) != (long) nHeads * headDim || k.dim(-1) != (long) nKvHeads * headDim
                || v.dim(-1) != (long) nKvHeads * headDim || k.rows() < (long) startPos + n || v.rows() < (long) startPos + n
                || out.rows() != n || out.dim(-1) != q.dim(-1)) {
            throw new IllegalArgumentException("attention shapes: q " + q + ", k " + k + ", v " + v + ", out " + out
                    + " at startPos " + startPos + " with " + nHeads + " heads, " + nKvHeads + " KV heads of " + headDim);
        }
        int kvWidth = nKvHeads * headDim;
        int positions = startPos + n;
        MemorySegment qs = seg(q), os = seg(out);
        MemorySegment ks = asF32Rows(k, positions, kvWidth), vs = asF32Rows(v, positions, kvWidth);
        int group = nHeads / nKvHeads;
        float scale = (float) (1.0 / Math.sqrt(headDim));
        long qRow = (long) nHeads * headDim * Float.BYTES, kvRow = (long) kvWidth * Float.BYTES;
        // A task is a block of query rows and one KV head: all the query heads it covers read each block of cache
        // rows together. Blocks of a few rows keep enough tasks for every thread.
        int rowBlock = Math.max(1, Math.min(ATTENTION_ROW_BLOCK, n * nKvHeads / (threads * 4)));
        int rowBlocks = Parallel.ceilDiv(n, rowBlock);
        parallel.forEach(rowBlocks * nKvHeads, task -> {
            int b = task / nKvHeads, kvh = task % nKvHeads;
            int i0 = b * rowBlock, i1 = Math.min(n, i0 + rowBlock);
            AttentionKernel.attendBlock(qs, ks, vs, os, i0, i1, startPos, kvh, group, headDim, slidingWindow, scale, qRow, kvRow);
        });
    }

    @Override
    public void swiglu(Tensor gate, Tensor up, Tensor out) {
        requireF32(gate, "swiglu gate");
        requireF32(up, "swiglu up");
        requireF32(out, "swiglu out");
        requireSameCount(gate, up);
        requireSameCount(gate, out);
        MemorySegment g = seg(gate), u = seg(up), o = seg(out);
        forElements(gate.numel(), (from, to) -> CpuKernels.swiglu(g, u, o, from, to));
    }

    @Override
    public void add(Tensor x, Tensor y) {
        requireF32(x, "add x");
        requireF32(y, "add y");
        requireSameCount(x, y);
        MemorySegment xs = seg(x), ys = seg(y);
        forElements(x.numel(), (from, to) -> CpuKernels.add(xs, ys, from, to));
    }

    // ---- helpers ------------------------------------------------------------------------------------------

    /**
     * Rows per matmul block: a slice of 128 x rows is 256 KiB, kept in a core's L2 cache. Each block widens and
     * packs its weights once, so longer blocks pack less often.
     */
    private static final int ROW_BLOCK = 128;
    /** Output features per matmul block, at most: a slice of 128 weight rows is 256 KiB in F32, also in L2. */
    private static final int FEATURE_BLOCK = 128;
    /** Query rows per attention task: the task reads each cache row once for rows × (heads per KV head) queries. */
    private static final int ATTENTION_ROW_BLOCK = 4;
    /** Element-wise work below this many elements runs on the calling thread: a fork-join round trip costs more. */
    private static final int ELEMENT_GRAIN = 1 << 15;

    @FunctionalInterface
    private interface ElementRange {
        void run(long from, long to);
    }

    private void forElements(long count, ElementRange body) {
        long chunks = (count + ELEMENT_GRAIN - 1) / ELEMENT_GRAIN;
        if (chunks > Integer.MAX_VALUE) throw new IllegalArgumentException("too many elements: " + count);
        parallel.forRange((int) chunks, 1, (from, to) ->
                body.run((long) from * ELEMENT_GRAIN, Math.min(count, (long) to * ELEMENT_GRAIN)));
    }

    /** Rows per parallel range so that each range has at least {@link #ELEMENT_GRAIN} elements. */
    private static int grainRows(long rowLength) {
        return (int) Math.max(1, ELEMENT_GRAIN / Math.max(1, rowLength));
    }

    private static int rowCount(Tensor t) {
        if (t.rows() > Integer.MAX_VALUE) throw new IllegalArgumentException("more than 2^31 rows: " + t);
        return (int) t.rows();
    }

    private static int rowLength(Tensor t, String what) {
        if (t.dim(-1) > Integer.MAX_VALUE) throw new IllegalArgumentException(what + " rows are longer than 2^31: " + t);
        return (int) t.dim(-1);
    }

    /** The tensor's elements as F32 native memory: its own segment if it is F32, else a converted copy in scratch. */
    private static MemorySegment asF32(Tensor t, String what) {
        requireFloat(t, what);
        if (t.dtype() == DType.F32) return seg(t);
        MemorySegment params = Scratch.get().params(t.numel());
        FloatConversions.convert(seg(t), t.dtype(), 0, params, DType.F32, 0, t.numel());
        return params;
    }

    /** The first {@code rows} rows of a K or V cache as F32: the cache itself if it is F32, else a converted copy. */
    private static MemorySegment asF32Rows(Tensor t, int rows, int width) {
        if (t.dtype() == DType.F32) return seg(t);
        long count = (long) rows * width;
        MemorySegment copy = Arena.ofAuto().allocate(count * Float.BYTES, 64);
        FloatConversions.convert(seg(t), t.dtype(), 0, copy, DType.F32, 0, count);
        return copy;
    }

    private static MemorySegment seg(Tensor t) {
        if (!(t instanceof CpuTensor c)) throw new IllegalArgumentException(t + " is not a CPU tensor");
        return c.segment();
    }

    private static void requireF32(Tensor t, String what) {
        if (t.dtype() != DType.F32) throw new IllegalArgumentException(what + " must be F32, got " + t);
    }

    private static void requireFloat(Tensor t, String what) {
        if (!t.dtype().isFloatingPoint() || t.dtype() == DType.F8_E4M3 || t.dtype() == DType.F8_E5M2) {
            throw new IllegalArgumentException(what + " must be F32, BF16, F16 or F64, got " + t);
        }
    }

    private static void requireSameCount(Tensor a, Tensor b) {
        if (a.numel() != b.numel()) throw new IllegalArgumentException("element counts differ: " + a + " vs " + b);
    }

    // ---- training ops: argument checks and kernels in CpuTrainingOps ---------------------------------------

    private volatile CpuTrainingOps training;

    private CpuTrainingOps training() {
        CpuTrainingOps t = training;
        if (t == null) training = t = new CpuTrainingOps(parallel, threads); // stateless: a racing second instance is harmless
        return t;
    }

    @Override
    public void matmulBackwardInput(Tensor dY, Tensor w, Tensor dX, boolean accumulate) {
        if (w instanceof QuantizedTensor q) fourBit().matmulBackwardInput(dY, q, dX, accumulate);
        else training().matmulBackwardInput(dY, w, dX, accumulate);
    }

    @Override
    public void matmulBackwardWeight(Tensor dY, Tensor x, Tensor dW, boolean accumulate) { training().matmulBackwardWeight(dY, x, dW, accumulate); }

    @Override
    public void sumRows(Tensor dY, Tensor dBias) { training().sumRows(dY, dBias); }

    @Override
    public void attentionForward(Tensor q, Tensor k, Tensor v, int nHeads, int nKvHeads, int headDim, int slidingWindow,
                                 Tensor out, Tensor lse) {
        training().attentionForward(q, k, v, nHeads, nKvHeads, headDim, slidingWindow, out, lse);
    }

    @Override
    public void attentionBackward(Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor dOut, int nHeads,
                                  int nKvHeads, int headDim, int slidingWindow, Tensor dq, Tensor dk, Tensor dv) {
        training().attentionBackward(q, k, v, out, lse, dOut, nHeads, nKvHeads, headDim, slidingWindow, dq, dk, dv);
    }

    @Override
    public void rmsNormBackward(Tensor x, Tensor weight, float eps, Tensor dOut, Tensor dX, Tensor dWeight) {
        training().rmsNormBackward(x, weight, eps, dOut, dX, dWeight, false);
    }

    @Override
    public void rmsNormBackward(Tensor x, Tensor weight, float eps, Tensor dOut, Tensor dX, Tensor dWeight,
                                boolean accumulate) {
        training().rmsNormBackward(x, weight, eps, dOut, dX, dWeight, accumulate);
    }

    @Override
    public void ropeBackward(Tensor dx, int headDim, int[] positions, Tensor invFreq) { training().ropeBackward(dx, headDim, positions, invFreq); }

    @Override
    public void swigluBackward(Tensor gate, Tensor up, Tensor dOut, Tensor dGate, Tensor dUp) { training().swigluBackward(gate, up, dOut, dGate, dUp); }

    @Override
    public void embeddingBackward(int[] ids, Tensor dOut, Tensor dTable) { training().embeddingBackward(ids, dOut, dTable); }

    @Override
    public void crossEntropy(Tensor logits, int[] targets, float gradScale, Tensor losses) { training().crossEntropy(logits, targets, gradScale, losses); }

    @Override
    public void adamw(Tensor param, Tensor grad, Tensor m, Tensor v, float lr, float beta1, float beta2, float eps,
                      float weightDecay, long step) {
        training().adamw(param, grad, m, v, lr, beta1, beta2, eps, weightDecay, step);
    }

    @Override
    public double sumOfSquares(Tensor t) { return training().sumOfSquares(t); }

    @Override
    public void scale(Tensor t, float s) { training().scale(t, s); }

    @Override
    public void zero(Tensor t) { training().zero(t); }

    @Override
    public void dropout(Tensor x, float p, long seed, Tensor out) { training().dropout(x, p, seed, out); }

    private volatile CpuLoraOps lora;

    private CpuLoraOps lora() {
        CpuLoraOps l = lora;
        if (l == null) lora = l = new CpuLoraOps(parallel); // stateless, as training()
        return l;
    }

    /** Fused (see {@link CpuLoraOps}) for an F32 adapter; other adapter dtypes take the composition of other ops. */
    @Override
    public void loraDown(Tensor x, Tensor a, float scaling, float p, long seed, Tensor hidden) {
        if (a.dtype() != DType.F32) Backend.super.loraDown(x, a, scaling, p, seed, hidden);
        else lora().down(x, a, scaling, p, seed, hidden);
    }

    @Override
    public void loraDownBackward(Tensor x, Tensor a, float scaling, float p, long seed, Tensor dHidden, Tensor gradA,
                                 Tensor dX, boolean accumulate) {
        if (a.dtype() != DType.F32) Backend.super.loraDownBackward(x, a, scaling, p, seed, dHidden, gradA, dX, accumulate);
        else lora().downBackward(x, a, scaling, p, seed, dHidden, gradA, dX, accumulate);
    }

    @Override
    public void adamw8bit(Tensor param, Tensor grad, Tensor m8, Tensor v8, Tensor absmaxM, Tensor absmaxV, Tensor codeSigned,
                          Tensor codeUnsigned, float lr, float beta1, float beta2, float eps, float weightDecay, long step) {
        BitsandbytesAdamKernels.adamw8bit(parallel, param, grad, m8, v8, absmaxM, absmaxV, codeSigned, codeUnsigned, lr,
                beta1, beta2, eps, weightDecay, step);
    }

    @Override
    public void adamw32bit(Tensor param, Tensor grad, Tensor m, Tensor v, float lr, float beta1, float beta2, float eps,
                           float weightDecay, long step) {
        BitsandbytesAdamKernels.adamw32bit(parallel, param, grad, m, v, lr, beta1, beta2, eps, weightDecay, step);
    }

    // ---- 4-bit weights: FourBitOps ------------------------------------------------------------------------

    private volatile FourBitOps fourBit;

    private FourBitOps fourBit() {
        FourBitOps f = fourBit;
        if (f == null) fourBit = f = new FourBitOps(this, parallel, threads); // stateless: a racing second instance is harmless
        return f;
    }

    @Override
    public QuantizedTensor quantize4bit(Tensor weight, QuantSpec spec) { return fourBit().quantize(weight, spec); }

    @Override
    public void dequantize4bit(QuantizedTensor q, Tensor out) { fourBit().dequantize(q, out); }
}
