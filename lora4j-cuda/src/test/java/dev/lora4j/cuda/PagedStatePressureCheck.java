package dev.lora4j.cuda;

import dev.lora4j.backend.BitsandbytesAdam;
import dev.lora4j.backend.MemoryPlacement;
import dev.lora4j.quant.DynamicMap;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Random;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * What only a real GPU can show about paged optimizer state (docs/optimizers.md), run by hand on the GPU machine:
 * <pre>scripts/device-run.sh java dev.lora4j.cuda.PagedStatePressureCheck [elements]</pre>
 * <ol>
 *   <li>8-bit AdamW steps with the codes in managed memory give the bytes of the same steps with them in device
 *       memory, and the time of a step in each;</li>
 *   <li>the device is then filled with ordinary allocations, 1 GiB at a time until the driver refuses, which should
 *       take the managed state's room too (the driver evicting it to host memory) rather than fail at the free
 *       memory measured before;</li>
 *   <li>with the device still full, more steps on the evicted state must finish (within a time limit, not hang) and
 *       still give the device-memory run's bytes;</li>
 *   <li>a paged allocation made now lands in mapped host memory, and steps on it give the bytes of the same steps
 *       in device memory.</li>
 * </ol>
 * Prints one line per finding and exits 1 if any check fails.
 */
public final class PagedStatePressureCheck {
    private static final long GIB = 1L << 30;
    /** Elements of the state checked in mapped host memory. */
    private static final int SMALL = 1 << 20;
    private static int failures;

    private PagedStatePressureCheck() {}

    public static void main(String[] args) throws Exception {
        int n = args.length > 0 ? Integer.parseInt(args[0]) : 1 << 28; // codes of 256 MiB each
        ExecutorService watchdog = Executors.newSingleThreadExecutor(r -> {
            Thread t = new Thread(r, "paged-state-check");
            t.setDaemon(true);
            return t;
        });
        try (CudaBackend gpu = CudaBackend.open()) {
            say("%s; %.1f GiB free; %d elements per state", gpu.description(), free() / (double) GIB, n);
            float[] param = gaussian(n, 1, 0.5f);
            try (State paged = new State(gpu, param, true); State plain = new State(gpu, param, false)) {
                check(gpu.placement(paged.m8) == MemoryPlacement.MANAGED, "paged codes are managed memory: " + gpu.placement(paged.m8));
                for (int step = 1; step <= 2; step++) {
                    final int s = step;
                    try (Tensor g = gpu.fromFloats(gaussian(n, 10 + step, 0.05f), DType.F32, n)) {
                        double tPlain = timed(gpu, () -> plain.step(g, s));
                        double tPaged = timed(gpu, () -> paged.step(g, s));
                        say("step %d: device memory %.1f ms, managed %.1f ms", step, tPlain * 1e3, tPaged * 1e3);
                    }
                }
                compare(gpu, paged, plain, "managed state after 2 steps");
                // The gradients of the steps to come, uploaded while there is room for them.
                List<Tensor> grads = new ArrayList<>();
                for (int step = 3; step <= 4; step++) grads.add(gpu.fromFloats(gaussian(n, 10 + step, 0.05f), DType.F32, n));
                float[] small = Arrays.copyOf(param, SMALL);
                List<Tensor> smallGrads = new ArrayList<>();
                for (int step = 1; step <= 3; step++) smallGrads.add(gpu.fromFloats(gaussian(SMALL, 20 + step, 0.05f), DType.F32, SMALL));
                try (State reference = new State(gpu, small, false)) {
                    long freeBefore = free();
                    List<Tensor> filler = new ArrayList<>();
                    long filled = fill(gpu, filler, GIB) + fill(gpu, filler, 64L << 20);
                    say("filled %.2f GiB of ordinary device memory (free before: %.2f GiB; managed state %.0f MiB)",
                            filled / (double) GIB, freeBefore / (double) GIB, 2.0 * n / (1 << 20));
                    check(filled + (64L << 20) >= freeBefore, "the filling reached the free memory measured before it");
                    say("the filling %s the managed state's room", filled > freeBefore ? "took (part of)" : "did not take");
                    for (int step = 3; step <= 4; step++) {
                        final int s = step;
                        Tensor g = grads.get(step - 3);
                        Future<Double> f = watchdog.submit(() -> timed(gpu, () -> paged.step(g, s)));
                        try {
                            say("step %d on the state with the device full: %.1f ms", step, f.get(300, TimeUnit.SECONDS) * 1e3);
                        } catch (TimeoutException e) {
                            check(false, "step " + step + " on the evicted state finished within 300 s");
                            say("giving up: the GPU may be stuck");
                            System.exit(2);
                        }
                        plain.step(g, s);
                    }
                    compare(gpu, paged, plain, "managed state after 2 steps with the device full");
                    // Room for a few small tensors, less than a paged allocation must leave free.
                    for (int i = 0; i < 2 && !filler.isEmpty(); i++) filler.removeLast().close();
                    gpu.trimMemory();
                    say("%.0f MiB free for the mapped-memory check", free() / (double) (1 << 20));
                    try (State mapped = new State(gpu, small, true)) {
                        check(gpu.placement(mapped.m8) == MemoryPlacement.MAPPED_HOST,
                                "a paged allocation on a full device is mapped host memory: " + gpu.placement(mapped.m8));
                        for (int step = 1; step <= 3; step++) {
                            final int s = step;
                            Tensor g = smallGrads.get(step - 1);
                            double tRef = timed(gpu, () -> reference.step(g, s));
                            double tMapped = timed(gpu, () -> mapped.step(g, s));
                            say("mapped host state, step %d: %.2f ms (device memory: %.2f ms)", step, tMapped * 1e3, tRef * 1e3);
                        }
                        compare(gpu, mapped, reference, "mapped host state after 3 steps");
                    }
                    for (Tensor t : filler) t.close();
                }
                for (Tensor t : grads) t.close();
                for (Tensor t : smallGrads) t.close();
            }
        } finally {
            watchdog.shutdownNow();
        }
        say(failures == 0 ? "all checks passed" : failures + " check(s) failed");
        System.exit(failures == 0 ? 0 : 1);
    }

    /** Allocates chunks of {@code chunk} bytes until the device refuses one; returns the bytes allocated. */
    private static long fill(CudaBackend gpu, List<Tensor> filler, long chunk) {
        long filled = 0;
        try {
            while (true) {
                filler.add(gpu.allocate(DType.U8, chunk));
                filled += chunk;
            }
        } catch (CudaException e) {
            return filled;
        }
    }

    /** 8-bit state over n parameters; codes paged or not. */
    private static final class State implements AutoCloseable {
        final CudaBackend b;
        final Tensor p, m8, v8, am, av, qs, qu;

        State(CudaBackend b, float[] param, boolean paged) {
            this.b = b;
            int n = param.length;
            p = b.fromFloats(param, DType.F32, n);
            m8 = paged ? b.allocatePaged(DType.U8, n) : b.allocate(DType.U8, n);
            v8 = paged ? b.allocatePaged(DType.U8, n) : b.allocate(DType.U8, n);
            am = b.allocate(DType.F32, BitsandbytesAdam.blocks(n));
            av = b.allocate(DType.F32, BitsandbytesAdam.blocks(n));
            qs = b.fromFloats(DynamicMap.signed(), DType.F32, 256);
            qu = b.fromFloats(DynamicMap.unsigned(), DType.F32, 256);
        }

        void step(Tensor g, long step) {
            b.adamw8bit(p, g, m8, v8, am, av, qs, qu, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, step);
        }

        @Override
        public void close() {
            for (Tensor t : new Tensor[] {p, m8, v8, am, av, qs, qu}) t.close();
        }
    }

    private static void compare(CudaBackend gpu, State a, State b, String what) {
        boolean same = Arrays.equals(bytes(gpu, a.p), bytes(gpu, b.p)) && Arrays.equals(bytes(gpu, a.m8), bytes(gpu, b.m8))
                && Arrays.equals(bytes(gpu, a.v8), bytes(gpu, b.v8)) && Arrays.equals(bytes(gpu, a.am), bytes(gpu, b.am))
                && Arrays.equals(bytes(gpu, a.av), bytes(gpu, b.av));
        check(same, what + ": the same bytes as the state in device memory");
    }

    private static byte[] bytes(CudaBackend gpu, Tensor t) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment s = arena.allocate(t.byteSize());
            gpu.copyToHost(t, s);
            return s.toArray(ValueLayout.JAVA_BYTE);
        }
    }

    private static double timed(CudaBackend gpu, Runnable r) {
        gpu.synchronize();
        long t0 = System.nanoTime();
        r.run();
        gpu.synchronize();
        return (System.nanoTime() - t0) / 1e9;
    }

    private static long free() {
        CudaDriver cu = CudaPlatform.shared().platform().driver;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment free = arena.allocate(ValueLayout.JAVA_LONG), total = arena.allocate(ValueLayout.JAVA_LONG);
            cu.check(cu.memGetInfo(free, total), "cuMemGetInfo_v2");
            return free.get(ValueLayout.JAVA_LONG, 0);
        }
    }

    private static float[] gaussian(int n, long seed, float scale) {
        Random r = new Random(seed);
        float[] v = new float[n];
        for (int i = 0; i < n; i++) v[i] = (float) (r.nextGaussian() * scale);
        return v;
    }

    private static void check(boolean ok, String what) {
        if (!ok) failures++;
        say("%s: %s", ok ? "ok" : "FAILED", what);
    }

    private static void say(String format, Object... args) {
        System.out.println(String.format(Locale.ROOT, format, args));
    }
}
