package dev.lora4j.cuda;

import dev.lora4j.backend.MemoryPlacement;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * The memory of paged optimizer states ({@code Backend.allocatePaged}) on one device. bitsandbytes keeps such state
 * in CUDA managed memory, which the driver migrates to host memory when the GPU runs short, but asking for more
 * managed memory than the GPU has free can stall it. So a buffer here is
 * <ul>
 *   <li>managed memory, preferring the device, when it fits in the device's free memory with {@link #HEADROOM} to
 *       spare (and the device supports concurrent managed access, as on Linux); the driver may still evict it to
 *       host memory later, when other allocations need the room;</li>
 *   <li>ordinary device memory when it fits but the device cannot page managed memory (it could not evict it
 *       either, as on Windows);</li>
 *   <li>otherwise pinned host memory mapped into the device's address space: the kernels read and write it over
 *       the bus, and it takes no device memory.</li>
 * </ul>
 * Managed bytes count in the backend's memory in use (they live on the device while they can); mapped host bytes
 * do not.
 */
final class PagedMemory {
    /** Device memory left free after a managed allocation, for the context, cuBLASLt and the next activations. */
    static final long HEADROOM = 256L << 20;

    private record Block(long address, long bytes, MemoryPlacement placement, MemorySegment host) {}

    private final CudaDriver cu;
    private final int device; // the ordinal, as CUmemLocation names a device
    private final DeviceAllocator allocator;
    private final Runnable waitForDevice;
    private final boolean managed, mapped, hints;
    private final TreeMap<Long, Block> blocks = new TreeMap<>();
    private final Arena arena = Arena.ofShared();
    private final MemorySegment out = arena.allocate(JAVA_LONG), out2 = arena.allocate(JAVA_LONG);
    private boolean closed;

    /** {@code waitForDevice} must wait until every queued op is done: it runs before memory goes back to the driver. */
    PagedMemory(CudaDriver cu, DeviceInfo info, DeviceAllocator allocator, Runnable waitForDevice) {
        this.cu = cu;
        this.device = info.ordinal();
        this.allocator = allocator;
        this.waitForDevice = waitForDevice;
        this.managed = attribute(info.handle(), CudaDriver.CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY) != 0
                && attribute(info.handle(), CudaDriver.CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS) != 0;
        this.mapped = attribute(info.handle(), CudaDriver.CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY) != 0;
        this.hints = cu.hasManagedMemoryHints();
    }

    /**
     * Where a buffer of {@code bytes} goes when the device has {@code freeBytes} free: see the class comment. Throws
     * when no kind of memory can take it.
     */
    static MemoryPlacement choose(long bytes, long freeBytes, boolean managedSupported, boolean mappedSupported) {
        boolean fits = bytes <= freeBytes - HEADROOM;
        if (fits) return managedSupported ? MemoryPlacement.MANAGED : MemoryPlacement.DEVICE;
        if (mappedSupported) return MemoryPlacement.MAPPED_HOST;
        throw new CudaException(String.format(Locale.ROOT, "cannot allocate %s of paged optimizer state: the device has"
                + " %s free and supports neither managed memory nor mapped host memory", mib(bytes), mib(freeBytes)),
                CudaException.OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY");
    }

    /**
     * A zeroed buffer of at least {@code bytes} bytes (its zeroing queued on {@code stream}); its device address, and
     * where it went. {@link MemoryPlacement#DEVICE} means the caller allocates ordinary device memory instead.
     */
    synchronized Placed allocate(long bytes, MemorySegment stream) {
        if (closed) throw new IllegalStateException("the CUDA backend is closed");
        long size = Math.max(bytes, 1);
        long free = freeMemory();
        if (managed && size > free - HEADROOM && allocator.cached() > 0) {
            allocator.trim(); // blocks kept for reuse count as used to the driver
            free = freeMemory();
        }
        MemoryPlacement where = choose(size, free, managed, mapped);
        switch (where) {
            case MANAGED -> {
                cu.check(cu.memAllocManaged(out, size, CudaDriver.CU_MEM_ATTACH_GLOBAL), "cuMemAllocManaged(" + size + " bytes)");
                long address = out.get(JAVA_LONG, 0);
                blocks.put(address, new Block(address, size, where, null));
                allocator.account(size);
                if (hints) {
                    cu.check(cu.memAdviseDevice(address, size, CudaDriver.CU_MEM_ADVISE_SET_PREFERRED_LOCATION, device),
                            "cuMemAdvise(SET_PREFERRED_LOCATION)");
                    cu.check(cu.memAdviseDevice(address, size, CudaDriver.CU_MEM_ADVISE_SET_ACCESSED_BY, device),
                            "cuMemAdvise(SET_ACCESSED_BY)");
                    cu.check(cu.memPrefetchToDevice(address, size, device, stream), "cuMemPrefetchAsync");
                }
                cu.check(cu.memsetD8Async(address, (byte) 0, size, stream), "cuMemsetD8Async");
                return new Placed(address, where);
            }
            case MAPPED_HOST -> {
                cu.check(cu.memHostAlloc(out, size, CudaDriver.CU_MEMHOSTALLOC_DEVICEMAP | CudaDriver.CU_MEMHOSTALLOC_PORTABLE),
                        "cuMemHostAlloc(" + size + " bytes, DEVICEMAP)");
                MemorySegment host = out.get(ADDRESS, 0).reinterpret(size);
                int r = cu.memHostGetDevicePointer(out2, host, 0);
                if (r != CudaDriver.SUCCESS) {
                    cu.memFreeHost(host);
                    throw cu.error(r, "cuMemHostGetDevicePointer_v2");
                }
                long address = out2.get(JAVA_LONG, 0);
                host.fill((byte) 0); // fresh memory: no kernel uses it yet
                blocks.put(address, new Block(address, size, where, host));
                return new Placed(address, where);
            }
            default -> {
                return new Placed(0, where);
            }
        }
    }

    /** A device address from {@link #allocate} and where it lives (address 0: the caller allocates device memory). */
    record Placed(long address, MemoryPlacement placement) {}

    /** Where the block holding device address {@code address} lives, or null if it is not one of these blocks. */
    synchronized MemoryPlacement placement(long address) {
        Block b = blockAt(address);
        return b == null ? null : b.placement();
    }

    /**
     * Asks the driver to bring the managed block holding [address, address + bytes) to the device before the next op
     * on {@code stream}. Only a hint: when the device has no room for it the call fails, and the kernel then reaches
     * the pages where the driver keeps them, so its result is not checked.
     */
    synchronized void prefetch(long address, long bytes, MemorySegment stream) {
        Block b = blockAt(address);
        if (b == null || b.placement() != MemoryPlacement.MANAGED || !hints || bytes == 0) return;
        cu.memPrefetchToDevice(address, bytes, device, stream);
    }

    /** Frees the block at {@code address}; false if it is not one of these blocks. */
    synchronized boolean release(long address) {
        if (closed) return true; // everything was freed with the backend
        Block b = blocks.get(address);
        if (b == null) return false;
        waitForDevice.run(); // queued kernels may still use it
        blocks.remove(address);
        free(b);
        return true;
    }

    /** Bytes by placement, of the blocks held now. */
    synchronized Map<MemoryPlacement, Long> bytesByPlacement() {
        Map<MemoryPlacement, Long> m = new TreeMap<>();
        for (Block b : blocks.values()) m.merge(b.placement(), b.bytes(), Long::sum);
        return m;
    }

    /** Frees every block; called when the backend closes, after its stream has finished. */
    synchronized void close() {
        if (closed) return;
        closed = true;
        List<Block> all = new ArrayList<>(blocks.values());
        blocks.clear();
        for (Block b : all) {
            try {
                free(b);
            } catch (RuntimeException e) {
                // best effort: the context goes away next
            }
        }
        arena.close();
    }

    private void free(Block b) {
        if (b.placement() == MemoryPlacement.MANAGED) {
            allocator.account(-b.bytes());
            cu.check(cu.memFree(b.address()), "cuMemFree_v2 (managed)");
        } else {
            cu.check(cu.memFreeHost(b.host()), "cuMemFreeHost");
        }
    }

    private Block blockAt(long address) {
        Map.Entry<Long, Block> e = blocks.floorEntry(address);
        if (e == null) return null;
        Block b = e.getValue();
        return address < b.address() + b.bytes() ? b : null;
    }

    private long freeMemory() {
        cu.check(cu.memGetInfo(out, out2), "cuMemGetInfo_v2");
        return out.get(JAVA_LONG, 0);
    }

    private int attribute(int handle, int attribute) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment v = a.allocate(JAVA_INT);
            cu.check(cu.deviceGetAttribute(v, attribute, handle), "cuDeviceGetAttribute(" + attribute + ")");
            return v.get(JAVA_INT, 0);
        }
    }

    private static String mib(long bytes) {
        return String.format(Locale.ROOT, "%.1f MiB", bytes / (1024.0 * 1024));
    }
}
