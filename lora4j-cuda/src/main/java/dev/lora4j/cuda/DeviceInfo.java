package dev.lora4j.cuda;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Locale;

import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * What lora4j needs to know about one GPU, read through the driver without creating a context.
 *
 * @param driverVersion as cuDriverGetVersion reports it: 1000 * major + 10 * minor (13000 for CUDA 13.0)
 * @param maxSharedPerBlock the most shared memory one block may ask for (after opting in), in bytes
 */
record DeviceInfo(int ordinal, int handle, String name, int ccMajor, int ccMinor, long totalMemory,
                  int multiprocessors, int driverVersion, int maxSharedPerBlock) {

    /** Lowest compute capability the kernels and the BF16 matmuls are built for. */
    static final int MIN_COMPUTE_CAPABILITY = 80;

    static DeviceInfo query(CudaDriver cu, int ordinal) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment i = arena.allocate(JAVA_INT);
            cu.check(cu.deviceGet(i, ordinal), "cuDeviceGet(" + ordinal + ")");
            int dev = i.get(JAVA_INT, 0);
            MemorySegment nameBuf = arena.allocate(256);
            cu.check(cu.deviceGetName(nameBuf, 256, dev), "cuDeviceGetName");
            String name = nameBuf.getString(0).trim();
            int major = attribute(cu, arena, dev, CudaDriver.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
            int minor = attribute(cu, arena, dev, CudaDriver.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
            int sms = attribute(cu, arena, dev, CudaDriver.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
            int shared = attribute(cu, arena, dev, CudaDriver.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN);
            MemorySegment bytes = arena.allocate(JAVA_LONG);
            cu.check(cu.deviceTotalMem(bytes, dev), "cuDeviceTotalMem_v2");
            cu.check(cu.driverGetVersion(i), "cuDriverGetVersion");
            return new DeviceInfo(ordinal, dev, name, major, minor, bytes.get(JAVA_LONG, 0), sms, i.get(JAVA_INT, 0),
                    shared);
        }
    }

    private static int attribute(CudaDriver cu, Arena arena, int dev, int attribute) {
        MemorySegment v = arena.allocate(JAVA_INT);
        cu.check(cu.deviceGetAttribute(v, attribute, dev), "cuDeviceGetAttribute(" + attribute + ")");
        return v.get(JAVA_INT, 0);
    }

    int computeCapability() { return ccMajor * 10 + ccMinor; }

    /** "NVIDIA H200 (sm_90), 139.8 GiB, driver 13.0". */
    String summary() {
        return String.format(Locale.ROOT, "%s (sm_%d%d), %.1f GiB, driver %d.%d", name, ccMajor, ccMinor,
                totalMemory / (1024.0 * 1024 * 1024), driverVersion / 1000, driverVersion % 1000 / 10);
    }
}
