package dev.lora4j.backend.cpu;

import dev.lora4j.backend.Backend;
import dev.lora4j.backend.HostConversions;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.IntStream;

/**
 * The CPU backend: off-heap tensors, F32 activations, F32/BF16/F16 weights, multi-threaded kernels.
 * It is the reference every other backend is tested against, so each op is written to be obviously right first.
 */
public final class CpuBackend implements Backend {
    private static final ValueLayout.OfFloat F = ValueLayout.JAVA_FLOAT_UNALIGNED;

    private final int threads;
    private final ForkJoinPool pool;
    private final AtomicLong inUse = new AtomicLong();
    private final AtomicLong peak = new AtomicLong();

    public CpuBackend() {
        this(Runtime.getRuntime().availableProcessors());
    }

    public CpuBackend(int threads) {
        if (threads < 1) throw new IllegalArgumentException("threads must be >= 1, got " + threads);
        this.threads = threads;
        this.pool = new ForkJoinPool(threads);
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
        HostConversions.convert(host, src, seg(t), dst, t.numel());
        return t;
    }

    @Override
    public void copyToHost(Tensor t, MemorySegment dst) {
        MemorySegment.copy(seg(t), 0, dst, 0, t.byteSize());
    }

    @Override
    public void copy(Tensor src, Tensor dst) {
        requireSameCount(src, dst);
        HostConversions.convert(seg(src), src.dtype(), seg(dst), dst.dtype(), src.numel());
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
        if (out.rows() != ids.length || out.dim(-1) != d) {
            throw new IllegalArgumentException("embedding out must be [" + ids.length + ", " + d + "], got " + out);
        }
        MemorySegment t = seg(table), o = seg(out);
        for (int i = 0; i < ids.length; i++) {
            if (ids[i] < 0 || ids[i] >= vocab) {
                throw new IndexOutOfBoundsException("token id " + ids[i] + " outside the vocabulary [0, " + vocab + ")");
            }
            for (long j = 0; j < d; j++) {
                o.setAtIndex(F, i * d + j, HostConversions.getFloat(t, table.dtype(), ids[i] * d + j));
            }
        }
    }

    @Override
    public void rmsNorm(Tensor x, Tensor weight, float eps, Tensor out) {
        requireF32(x, "rmsNorm x");
        requireF32(out, "rmsNorm out");
        requireSameCount(x, out);
        int d = (int) x.dim(-1);
        float[] w = toFloats(weight);
        MemorySegment xs = seg(x), os = seg(out);
        parallelRows((int) x.rows(), r -> CpuKernels.rmsNormRow(xs, os, (long) r * d, d, w, eps));
    }

    @Override
    public void matmul(Tensor x, Tensor w, Tensor out, boolean accumulate) {
        requireF32(x, "matmul x");
        requireF32(out, "matmul out");
        long n = x.rows(), k = x.dim(-1), m = w.rows();
        if (w.dim(-1) != k || out.rows() != n || out.dim(-1) != m) {
            throw new IllegalArgumentException("matmul shapes: x " + x + ", w " + w + ", out " + out);
        }
        MemorySegment xs = seg(x), ws = seg(w), os = seg(out);
        DType wt = w.dtype();
        // Parallel over output features so each weight row is streamed from memory once per call.
        int blocks = (int) Math.min(m, threads * 8L);
        parallel(blocks, b -> {
            long m0 = m * b / blocks, m1 = m * (b + 1) / blocks;
            CpuKernels.matmulBlock(xs, ws, wt, os, n, k, m, m0, m1, accumulate);
        });
    }

    @Override
    public void addBias(Tensor x, Tensor bias) {
        requireF32(x, "addBias x");
        int d = (int) x.dim(-1);
        if (bias.numel() != d) throw new IllegalArgumentException("bias " + bias + " does not match rows of " + x);
        float[] b = toFloats(bias);
        MemorySegment xs = seg(x);
        for (long r = 0; r < x.rows(); r++) {
            for (int j = 0; j < d; j++) {
                long i = r * d + j;
                xs.setAtIndex(F, i, xs.getAtIndex(F, i) + b[j]);
            }
        }
    }

    @Override
    public void rope(Tensor x, int headDim, int[] positions, Tensor invFreq) {
        requireF32(x, "rope x");
        int width = (int) x.dim(-1);
        if (width % headDim != 0 || headDim % 2 != 0) {
            throw new IllegalArgumentException("rope: row width " + width + " is not a multiple of an even headDim " + headDim);
        }
        if (positions.length != x.rows()) {
            throw new IllegalArgumentException("rope: " + positions.length + " positions for " + x.rows() + " rows");
        }
        float[] inv = toFloats(invFreq);
        if (inv.length != headDim / 2) throw new IllegalArgumentException("rope: invFreq must have headDim/2 entries");
        MemorySegment xs = seg(x);
        int half = headDim / 2;
        parallelRows(positions.length, r -> {
            float[] cos = new float[half], sin = new float[half];
            for (int j = 0; j < half; j++) {
                float angle = positions[r] * inv[j]; // FP32 product, as torch computes it
                cos[j] = (float) Math.cos(angle);
                sin[j] = (float) Math.sin(angle);
            }
            for (int h = 0; h < width / headDim; h++) {
                long base = (long) r * width + (long) h * headDim;
                for (int j = 0; j < half; j++) {
                    float a = xs.getAtIndex(F, base + j), b = xs.getAtIndex(F, base + j + half);
                    xs.setAtIndex(F, base + j, a * cos[j] - b * sin[j]);
                    xs.setAtIndex(F, base + j + half, b * cos[j] + a * sin[j]);
                }
            }
        });
    }

    @Override
    public void attention(Tensor q, Tensor k, Tensor v, int startPos, int nHeads, int nKvHeads, int headDim,
                          int slidingWindow, Tensor out) {
        requireF32(q, "attention q");
        requireF32(out, "attention out");
        int n = (int) q.rows();
        if (nHeads % nKvHeads != 0) throw new IllegalArgumentException("nHeads " + nHeads + " not a multiple of nKvHeads " + nKvHeads);
        if (q.dim(-1) != (long) nHeads * headDim || k.dim(-1) != (long) nKvHeads * headDim
                || v.dim(-1) != (long) nKvHeads * headDim || k.rows() < startPos + n || v.rows() < startPos + n) {
            throw new IllegalArgumentException("attention shapes: q " + q + ", k " + k + ", v " + v + " at startPos " + startPos);
        }
        MemorySegment qs = seg(q), ks = seg(k), vs = seg(v), os = seg(out);
        DType kt = k.dtype(), vt = v.dtype();
        int group = nHeads / nKvHeads;
        float scale = (float) (1.0 / Math.sqrt(headDim));
        int qWidth = nHeads * headDim, kvWidth = nKvHeads * headDim;
        parallel(n * nHeads, task -> {
            int i = task / nHeads, h = task % nHeads, kvh = h / group;
            int pos = startPos + i;
            int first = slidingWindow > 0 ? Math.max(0, pos - slidingWindow + 1) : 0;
            float[] scores = new float[pos - first + 1];
            float max = Float.NEGATIVE_INFINITY;
            long qBase = (long) i * qWidth + (long) h * headDim;
            for (int t = first; t <= pos; t++) {
                long kBase = (long) t * kvWidth + (long) kvh * headDim;
                float dot = 0f;
                for (int j = 0; j < headDim; j++) {
                    dot += qs.getAtIndex(F, qBase + j) * HostConversions.getFloat(ks, kt, kBase + j);
                }
                scores[t - first] = dot * scale;
                max = Math.max(max, scores[t - first]);
            }
            float sum = 0f;
            for (int s = 0; s < scores.length; s++) {
                scores[s] = (float) Math.exp(scores[s] - max);
                sum += scores[s];
            }
            float[] acc = new float[headDim];
            for (int t = first; t <= pos; t++) {
                float p = scores[t - first] / sum;
                long vBase = (long) t * kvWidth + (long) kvh * headDim;
                for (int j = 0; j < headDim; j++) acc[j] += p * HostConversions.getFloat(vs, vt, vBase + j);
            }
            for (int j = 0; j < headDim; j++) os.setAtIndex(F, qBase + j, acc[j]);
        });
    }

    @Override
    public void swiglu(Tensor gate, Tensor up, Tensor out) {
        requireSameCount(gate, up);
        requireSameCount(gate, out);
        MemorySegment g = seg(gate), u = seg(up), o = seg(out);
        for (long i = 0; i < gate.numel(); i++) {
            float a = g.getAtIndex(F, i);
            o.setAtIndex(F, i, a / (1f + (float) Math.exp(-a)) * u.getAtIndex(F, i));
        }
    }

    @Override
    public void add(Tensor x, Tensor y) {
        requireSameCount(x, y);
        MemorySegment xs = seg(x), ys = seg(y);
        for (long i = 0; i < x.numel(); i++) xs.setAtIndex(F, i, xs.getAtIndex(F, i) + ys.getAtIndex(F, i));
    }

    // ---- helpers ------------------------------------------------------------------------------------------

    private void parallelRows(int rows, java.util.function.IntConsumer body) {
        parallel(rows, body);
    }

    private void parallel(int tasks, java.util.function.IntConsumer body) {
        if (tasks <= 1 || threads == 1) {
            for (int i = 0; i < tasks; i++) body.accept(i);
            return;
        }
        pool.submit(() -> IntStream.range(0, tasks).parallel().forEach(body)).join();
    }

    private static MemorySegment seg(Tensor t) {
        if (!(t instanceof CpuTensor c)) throw new IllegalArgumentException(t + " is not a CPU tensor");
        return c.segment();
    }

    private static void requireF32(Tensor t, String what) {
        if (t.dtype() != DType.F32) throw new IllegalArgumentException(what + " must be F32, got " + t);
    }

    private static void requireSameCount(Tensor a, Tensor b) {
        if (a.numel() != b.numel()) throw new IllegalArgumentException("element counts differ: " + a + " vs " + b);
    }
}
