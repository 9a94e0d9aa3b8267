package dev.lora4j.cuda;

import dev.lora4j.backend.Backend;
import dev.lora4j.backend.BitsandbytesAdam;
import dev.lora4j.backend.MemoryPlacement;
import dev.lora4j.backend.cpu.CpuBackend;
import dev.lora4j.quant.DynamicMap;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Random;
import java.util.function.Function;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * bitsandbytes' AdamW on the CUDA backend: the 8-bit and 32-bit updates give the CPU backend's bytes step after step
 * (both follow docs/optimizers.md operation for operation), and paged tensors land in managed memory while the
 * device has room and in mapped host memory once it has not, and work there. Skips, with the probe's reason, where
 * the CUDA backend cannot run; on the device emulator a fuller device is simulated by lowering its memory.
 */
class CudaBitsandbytesAdamTest {
    private static CudaBackend gpu;
    private static CpuBackend cpu;

    @RegisterExtension
    static final GpuAndCpu backends = GpuAndCpu.assigning((g, c) -> { gpu = g; cpu = c; });

    private static boolean emulated() {
        return gpu.description().contains("device emulator");
    }

    /** One parameter's 8-bit state on a backend; {@code paged}: its codes in paged memory. */
    private record State8(Backend b, Tensor p, Tensor m8, Tensor v8, Tensor am, Tensor av, Tensor qs, Tensor qu)
            implements AutoCloseable {
        static State8 of(Backend b, float[] param, boolean paged) {
            int n = param.length;
            long blocks = BitsandbytesAdam.blocks(n);
            Function<Long, Tensor> codes = count -> paged ? b.allocatePaged(DType.U8, count) : b.allocate(DType.U8, count);
            return new State8(b, b.fromFloats(param, DType.F32, n), codes.apply((long) n), codes.apply((long) n),
                    b.allocate(DType.F32, blocks), b.allocate(DType.F32, blocks),
                    b.fromFloats(DynamicMap.signed(), DType.F32, 256), b.fromFloats(DynamicMap.unsigned(), DType.F32, 256));
        }

        void step(float[] grad, float lr, float wd, long step) {
            try (Tensor g = b.fromFloats(grad, DType.F32, grad.length)) {
                b.adamw8bit(p, g, m8, v8, am, av, qs, qu, lr, 0.9f, 0.999f, 1e-8f, wd, step);
            }
        }

        @Override
        public void close() {
            for (Tensor t : new Tensor[] {p, m8, v8, am, av, qs, qu}) t.close();
        }
    }

    private static void assertSameBytes(State8 g, State8 c, String what) {
        String[] names = {"parameters", "m codes", "v codes", "absmax of m", "absmax of v"};
        Tensor[] gs = {g.p, g.m8, g.v8, g.am, g.av}, cs = {c.p, c.m8, c.v8, c.am, c.av};
        for (int k = 0; k < gs.length; k++) assertSameBytes(gs[k], cs[k], what + ": " + names[k]);
    }

    private static void assertSameBytes(Tensor g, Tensor c, String what) {
        byte[] got = bytes(gpu, g), want = bytes(cpu, c);
        assertThat(got.length).as(what).isEqualTo(want.length);
        int first = Arrays.mismatch(got, want);
        if (first >= 0) throw new AssertionError(what + ": GPU and CPU differ first at byte " + first + " of " + want.length);
    }

    private static byte[] bytes(Backend b, Tensor t) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment s = arena.allocate(Math.max(1, t.byteSize()));
            b.copyToHost(t, s);
            return s.asSlice(0, t.byteSize()).toArray(ValueLayout.JAVA_BYTE);
        }
    }

    private static float[] gaussian(int n, long seed, float scale) {
        Random r = new Random(seed);
        float[] v = new float[n];
        for (int i = 0; i < n; i++) v[i] = (float) (r.nextGaussian() * scale);
        return v;
    }

    /** Gradients of step {@code step}: tiny, huge, with zeros, a zero block, NaN and infinities. */
    private static float[] gradient(int n, int step) {
        float scale = step == 3 ? 1e-6f : step == 5 ? 40f : 0.05f;
        float[] g = gaussian(n, 100 + step, scale);
        for (int i = 0; i < n; i += 101) g[i] = 0f;
        if (step == 1) Arrays.fill(g, 0, Math.min(n, 512), 0f); // whole blocks of zeros: absmax 0
        if (step == 4 && n > 300) {
            g[7] = Float.NaN;
            g[290] = Float.POSITIVE_INFINITY;
            g[n - 1] = Float.NEGATIVE_INFINITY;
        }
        return g;
    }

    private static void eightBitSteps(int n, boolean paged) {
        float[] param = gaussian(n, 7, 0.5f);
        try (State8 g = State8.of(gpu, param, paged); State8 c = State8.of(cpu, param, false)) {
            for (int step = 1; step <= 6; step++) {
                float[] grad = gradient(n, step);
                float lr = 1e-3f * step, wd = step % 2 == 0 ? 0.01f : 0f;
                g.step(grad, lr, wd, step);
                c.step(grad, lr, wd, step);
                assertSameBytes(g, c, "n=" + n + (paged ? " paged" : "") + " after step " + step);
            }
        }
    }

    @Test
    void eightBitStepsAreTheCpusByteForByte() {
        for (int n : new int[] {1, 255, 257, 4113, emulated() ? 40_001 : 3_000_017}) eightBitSteps(n, false);
    }

    @Test
    void lanesPastTheEndOfAPartialLastBlockCountTowardItsAbsmaxAsOnTheCpu() {
        // The one element of the second block gets a zero moment (code 127): the lanes past the end, which load m
        // code 128, are then all that sets that block's absmax.
        int n = 257;
        float[] ones = new float[n], zeros = new float[n];
        Arrays.fill(ones, 1f);
        try (State8 g = State8.of(gpu, new float[n], false); State8 c = State8.of(cpu, new float[n], false)) {
            for (State8 s : new State8[] {g, c}) {
                s.step(ones, 1e-3f, 0f, 1);
                s.step(zeros, 1e-3f, 0f, 2);
                try (Tensor zeroCode = s.b().upload(MemorySegment.ofArray(new byte[] {127}), DType.U8, DType.U8, 1);
                     Tensor last = s.m8().view(256, 1)) {
                    s.b().copy(zeroCode, last);
                }
                s.step(zeros, 1e-3f, 0f, 3);
            }
            assertSameBytes(g, c, "a partial last block whose element has a zero moment");
            assertThat(gpu.toFloats(g.am())[1]).as("its absmax, from the lanes past the end").isPositive();
        }
    }

    @Test
    void thirtyTwoBitStepsAreTheCpusByteForByte() {
        int n = emulated() ? 100_003 : 2_000_003;
        float[] param = gaussian(n, 8, 0.5f);
        try (Tensor gp = gpu.fromFloats(param, DType.F32, n); Tensor gm = gpu.allocate(DType.F32, n); Tensor gv = gpu.allocate(DType.F32, n);
             Tensor cp = cpu.fromFloats(param, DType.F32, n); Tensor cm = cpu.allocate(DType.F32, n); Tensor cv = cpu.allocate(DType.F32, n)) {
            for (int step = 1; step <= 5; step++) {
                float[] grad = gradient(n, step == 4 ? 2 : step); // no NaN: the 32-bit kernel has no guard for it
                float wd = step % 2 == 1 ? 0.1f : 0f;
                try (Tensor gg = gpu.fromFloats(grad, DType.F32, n); Tensor cg = cpu.fromFloats(grad, DType.F32, n)) {
                    gpu.adamw32bit(gp, gg, gm, gv, 2e-3f, 0.9f, 0.999f, 1e-8f, wd, step);
                    cpu.adamw32bit(cp, cg, cm, cv, 2e-3f, 0.9f, 0.999f, 1e-8f, wd, step);
                }
                assertSameBytes(gp, cp, "32-bit parameters after step " + step);
                assertSameBytes(gm, cm, "32-bit m after step " + step);
                assertSameBytes(gv, cv, "32-bit v after step " + step);
            }
        }
    }

    // ---- paged memory -------------------------------------------------------------------------------------

    @Test
    void pagedStateIsManagedMemoryWhileTheDeviceHasRoomAndCountsAsDeviceMemory() {
        int n = 300_001;
        long before = gpu.memoryInUse();
        try (Tensor t = gpu.allocatePaged(DType.U8, n)) {
            assertThat(gpu.placement(t)).isEqualTo(MemoryPlacement.MANAGED);
            assertThat(gpu.placement(t.view(1000, 10))).as("a view of it").isEqualTo(MemoryPlacement.MANAGED);
            assertThat(bytes(gpu, t)).as("zero-filled").containsOnly(0);
            assertThat(gpu.memoryInUse() - before).isGreaterThanOrEqualTo(n);
        }
        assertThat(gpu.memoryInUse()).as("given back").isEqualTo(before);
        try (Tensor plain = gpu.allocate(DType.F32, 10)) {
            assertThat(gpu.placement(plain)).isEqualTo(MemoryPlacement.DEVICE);
        }
        eightBitSteps(emulated() ? 20_000 : 1_000_000, true);
    }

    @Test
    void pagedStateGoesToMappedHostMemoryWhenTheDeviceIsFullAndTheOptimizerWorksOnIt() {
        // Less free memory than the headroom a managed allocation must leave: no paged tensor fits on the device.
        try (DeviceFull full = DeviceFull.leaving(PagedMemory.HEADROOM / 2)) {
            int n = emulated() ? 100_000 : 10_000_000;
            long before = gpu.memoryInUse();
            try (Tensor t = gpu.allocatePaged(DType.U8, n)) {
                assertThat(gpu.placement(t)).isEqualTo(MemoryPlacement.MAPPED_HOST);
                assertThat(gpu.memoryInUse()).as("mapped host memory is not device memory").isEqualTo(before);
                assertThat(bytes(gpu, t)).as("zero-filled").containsOnly(0);
                gpu.zero(t);
            }
            // The optimizer's codes in mapped host memory: the kernel reads and writes them over the bus.
            int m = emulated() ? 10_000 : 1_000_000;
            float[] param = gaussian(m, 9, 0.5f);
            try (State8 g = State8.of(gpu, param, true); State8 c = State8.of(cpu, param, false)) {
                assertThat(gpu.placement(g.m8)).isEqualTo(MemoryPlacement.MAPPED_HOST);
                for (int step = 1; step <= 3; step++) {
                    float[] grad = gradient(m, step);
                    g.step(grad, 1e-3f, 0.01f, step);
                    c.step(grad, 1e-3f, 0.01f, step);
                    assertSameBytes(g, c, "8-bit state in mapped host memory, step " + step);
                }
            }
        }
    }

    /**
     * Leaves the device with only {@code bytes} free while open: the emulator's memory is lowered; a GPU is filled
     * with one allocation.
     */
    private record DeviceFull(Tensor filler, MethodHandle limit) implements AutoCloseable {
        static DeviceFull leaving(long bytes) {
            long free = freeDeviceMemory();
            if (emulated()) {
                MethodHandle limit = emulatorLimit();
                long allocated = (16L << 30) - free;
                invoke(limit, allocated + bytes);
                return new DeviceFull(null, limit);
            }
            assumeTrue(free > bytes + (64L << 20), "the GPU has too little free memory to fill");
            return new DeviceFull(gpu.allocate(DType.U8, free - bytes), null);
        }

        @Override
        public void close() {
            if (filler != null) filler.close();
            if (limit != null) invoke(limit, 0);
            gpu.trimMemory();
        }

        private static void invoke(MethodHandle h, long bytes) {
            try {
                h.invokeExact(bytes);
            } catch (Throwable t) {
                throw new IllegalStateException(t);
            }
        }
    }

    private static long freeDeviceMemory() {
        CudaDriver cu = CudaPlatform.shared().platform().driver;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment free = arena.allocate(ValueLayout.JAVA_LONG), total = arena.allocate(ValueLayout.JAVA_LONG);
            cu.check(cu.memGetInfo(free, total), "cuMemGetInfo_v2");
            return free.get(ValueLayout.JAVA_LONG, 0);
        }
    }

    /** The emulator's test hook: limits the device memory allocations may take (0 restores it). */
    private static MethodHandle emulatorLimit() {
        String library = System.getProperty("lora4j.cuda.libcuda");
        assumeTrue(library != null, "the device emulator's library is not named");
        SymbolLookup lookup = SymbolLookup.libraryLookup(Path.of(library), Arena.global());
        MemorySegment symbol = lookup.find("lora4j_emulator_limit_memory").orElseThrow();
        return Linker.nativeLinker().downcallHandle(symbol, FunctionDescriptor.ofVoid(ValueLayout.JAVA_LONG));
    }
}
