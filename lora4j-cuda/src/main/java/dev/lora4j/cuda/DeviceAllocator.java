package dev.lora4j.cuda;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayDeque;
import java.util.HashMap;
import java.util.Locale;
import java.util.Map;

import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * Device memory for one backend: blocks from cuMemAlloc, kept in per-size free lists when released so that the
 * next allocation of that size reuses them without a driver call (cuMemFree also waits for the whole device).
 * All work runs on one stream, so a block released while kernels that use it are still queued can be handed out
 * again at once: whatever the next owner queues runs after them.
 *
 * <p>Sizes are rounded (to 512 bytes up to 1 MiB, to 2 MiB above) so that repeated shapes find their blocks.
 * When the device is out of memory, the free lists are given back to the driver and the allocation is retried.
 */
final class DeviceAllocator {
    private static final long SMALL_LIMIT = 1L << 20;
    private static final long SMALL_GRANULE = 512;
    private static final long LARGE_GRANULE = 2L << 20;

    private final CudaDriver cu;
    private final Runnable waitForDevice;
    private final Arena arena = Arena.ofShared();
    private final MemorySegment out = arena.allocate(JAVA_LONG);
    private final MemorySegment out2 = arena.allocate(JAVA_LONG);
    private final Map<Long, ArrayDeque<Long>> freeBlocks = new HashMap<>();
    private final Map<Long, Long> liveBlocks = new HashMap<>();
    private long inUse;
    private long peak;
    private long cached;
    private boolean closed;

    /** {@code waitForDevice} must wait until every queued op is done: it runs before memory goes back to the driver. */
    DeviceAllocator(CudaDriver cu, Runnable waitForDevice) {
        this.cu = cu;
        this.waitForDevice = waitForDevice;
    }

    static long roundedSize(long bytes) {
        long b = Math.max(bytes, 1);
        long granule = b <= SMALL_LIMIT ? SMALL_GRANULE : LARGE_GRANULE;
        return Math.multiplyExact(Math.ceilDiv(b, granule), granule);
    }

    /** A device address of at least {@code bytes} bytes, aligned to 256 bytes; its contents are undefined. */
    synchronized long allocate(long bytes) {
        if (closed) throw new IllegalStateException("the CUDA backend is closed");
        long size = roundedSize(bytes);
        ArrayDeque<Long> list = freeBlocks.get(size);
        long ptr;
        if (list != null && !list.isEmpty()) {
            ptr = list.pop();
            cached -= size;
        } else {
            ptr = allocateFromDriver(size);
        }
        liveBlocks.put(ptr, size);
        inUse += size;
        peak = Math.max(peak, inUse);
        return ptr;
    }

    /** Returns a block from {@link #allocate} to the free lists. */
    synchronized void release(long ptr) {
        if (closed) return; // everything was freed with the backend
        Long size = liveBlocks.remove(ptr);
        if (size == null) throw new IllegalStateException("device block 0x" + Long.toHexString(ptr) + " released twice");
        inUse -= size;
        freeBlocks.computeIfAbsent(size, s -> new ArrayDeque<>()).push(ptr);
        cached += size;
    }

    /**
     * Counts {@code bytes} of device memory that does not come from here (managed memory of {@link PagedMemory};
     * negative when it is given back) in {@link #inUse} and {@link #peak}.
     */
    synchronized void account(long bytes) {
        inUse += bytes;
        peak = Math.max(peak, inUse);
    }

    synchronized long inUse() { return inUse; }

    synchronized long peak() { return peak; }

    /** Bytes held in the free lists, ready for reuse. */
    synchronized long cached() { return cached; }

    /** Gives the free lists back to the driver. */
    synchronized void trim() {
        if (cached == 0) return;
        waitForDevice.run();
        for (ArrayDeque<Long> list : freeBlocks.values()) {
            for (long ptr : list) cu.check(cu.memFree(ptr), "cuMemFree_v2");
        }
        freeBlocks.clear();
        cached = 0;
    }

    /** Frees every block, live or not; called when the backend closes. */
    synchronized void close() {
        if (closed) return;
        try {
            trim();
            for (long ptr : liveBlocks.keySet()) cu.memFree(ptr); // best effort: the context goes away next
        } finally {
            liveBlocks.clear();
            inUse = 0;
            closed = true;
            arena.close();
        }
    }

    private long allocateFromDriver(long size) {
        int r = cu.memAlloc(out, size);
        if (r == CudaException.OUT_OF_MEMORY && cached > 0) {
            trim();
            r = cu.memAlloc(out, size);
        }
        if (r == CudaException.OUT_OF_MEMORY) {
            throw new CudaException(String.format(Locale.ROOT,
                    "out of GPU memory: cannot allocate %s (lora4j holds %s in tensors and workspace; %s)",
                    mib(size), mib(inUse), deviceMemory()), r, cu.errorName(r));
        }
        cu.check(r, "cuMemAlloc_v2(" + size + " bytes)");
        return out.get(JAVA_LONG, 0);
    }

    private String deviceMemory() {
        if (cu.memGetInfo(out, out2) != CudaDriver.SUCCESS) return "free device memory unknown";
        return "the device has " + mib(out.get(JAVA_LONG, 0)) + " free of " + mib(out2.get(JAVA_LONG, 0));
    }

    private static String mib(long bytes) {
        return String.format(Locale.ROOT, "%.1f MiB", bytes / (1024.0 * 1024));
    }
}
