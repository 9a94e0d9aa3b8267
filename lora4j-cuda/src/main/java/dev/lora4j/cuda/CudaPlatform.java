package dev.lora4j.cuda;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

import static java.lang.foreign.ValueLayout.JAVA_INT;

/**
 * The CUDA libraries of this process, loaded and initialised once: the driver (cuInit done) and cuBLASLt.
 * {@link #check} reports, in one line, the first thing that keeps the CUDA backend from running here, in the order
 * a user would fix them: the driver library, a device, cuBLASLt, the kernel image.
 */
final class CudaPlatform {
    private static final Object LOCK = new Object();
    private static Status shared;

    final CudaDriver driver;
    final CublasLt cublasLt;
    final int deviceCount;

    private CudaPlatform(CudaDriver driver, CublasLt cublasLt, int deviceCount) {
        this.driver = driver;
        this.cublasLt = cublasLt;
        this.deviceCount = deviceCount;
    }

    /** Either a usable platform or the reason there is none. */
    record Status(CudaPlatform platform, String problem) {
        boolean usable() { return platform != null; }
    }

    /** The platform found with the process's environment, loaded on first use and then kept. */
    static Status shared() {
        synchronized (LOCK) {
            if (shared == null) shared = load(LibrarySearch.driver(), LibrarySearch.cublasLt());
            return shared;
        }
    }

    /** Loads the libraries the searches find and initialises the driver; never throws. */
    static Status load(LibrarySearch driverSearch, LibrarySearch cublasSearch) {
        try {
            // The libraries stay loaded for the life of the process, as the driver expects.
            Arena forever = Arena.global();
            CudaDriver cu;
            switch (driverSearch.load(forever)) {
                case LibrarySearch.Missing m -> { return new Status(null, m.reason()); }
                case LibrarySearch.Loaded l -> {
                    try {
                        cu = new CudaDriver(l.symbols(), l.origin());
                    } catch (CudaException e) {
                        return new Status(null, e.getMessage() + " (" + l.origin() + ")");
                    }
                }
            }
            int r = cu.init(0);
            if (r != CudaDriver.SUCCESS) {
                return new Status(null, "no usable CUDA device: cuInit failed with " + cu.errorName(r)
                        + " (" + cu.errorString(r) + ")");
            }
            int count;
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment c = arena.allocate(JAVA_INT);
                r = cu.deviceGetCount(c);
                if (r != CudaDriver.SUCCESS) {
                    return new Status(null, "no usable CUDA device: cuDeviceGetCount failed with " + cu.errorName(r));
                }
                count = c.get(JAVA_INT, 0);
            }
            if (count == 0) return new Status(null, "no CUDA device: the driver sees none");
            CublasLt lt;
            switch (cublasSearch.load(forever)) {
                case LibrarySearch.Missing m -> { return new Status(null, "cuBLASLt not usable: " + m.reason()); }
                case LibrarySearch.Loaded l -> {
                    try {
                        lt = new CublasLt(l.symbols(), l.origin());
                    } catch (CudaException e) {
                        return new Status(null, e.getMessage() + " (" + l.origin() + ")");
                    }
                }
            }
            return new Status(new CudaPlatform(cu, lt, count), null);
        } catch (IllegalCallerException e) {
            return new Status(null, "native access is disabled: run java with --enable-native-access=ALL-UNNAMED"
                    + " (or name lora4j's module)");
        } catch (Throwable t) {
            return new Status(null, "CUDA could not be initialised: " + LibrarySearch.oneLine(t));
        }
    }
}
