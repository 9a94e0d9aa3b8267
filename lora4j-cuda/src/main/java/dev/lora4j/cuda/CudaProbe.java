package dev.lora4j.cuda;

import dev.lora4j.backend.BackendProvider.Availability;

/** Decides whether the CUDA backend can run on one device, and says why not in one line. Never throws. */
final class CudaProbe {
    /** System property choosing the GPU (an ordinal as the driver counts them; CUDA_VISIBLE_DEVICES applies). */
    static final String DEVICE_PROPERTY = "lora4j.cuda.device";

    private static volatile FatbinContents fatbin;

    private CudaProbe() {}

    /** The device ordinal the user chose with -Dlora4j.cuda.device, 0 by default. */
    static int deviceOrdinal() {
        String v = System.getProperty(DEVICE_PROPERTY, "0").trim();
        try {
            int ordinal = Integer.parseInt(v);
            if (ordinal >= 0) return ordinal;
        } catch (NumberFormatException e) {
            // reported below
        }
        throw new IllegalArgumentException("-D" + DEVICE_PROPERTY + "=" + v + " is not a device number (0, 1, ...)");
    }

    static Availability probe(CudaPlatform.Status status, int ordinal) {
        try {
            if (!status.usable()) return Availability.unavailable(status.problem());
            CudaPlatform platform = status.platform();
            if (ordinal >= platform.deviceCount) {
                return Availability.unavailable("CUDA device " + ordinal + " was asked for (-D" + DEVICE_PROPERTY
                        + ") but the driver sees " + platform.deviceCount);
            }
            DeviceInfo info = DeviceInfo.query(platform.driver, ordinal);
            if (info.computeCapability() < DeviceInfo.MIN_COMPUTE_CAPABILITY) {
                return Availability.unavailable(info.name() + " is sm_" + info.computeCapability()
                        + "; lora4j's CUDA backend needs compute capability 8.0 (Ampere) or newer");
            }
            String imageProblem = KernelImage.missingReason();
            if (imageProblem != null) return Availability.unavailable(imageProblem);
            FatbinContents contents = fatbin();
            if (!contents.runsOn(info.computeCapability())) {
                return Availability.unavailable("kernel image has no code for sm_" + info.computeCapability()
                        + " (it holds " + String.join(", ", contents.targets()) + ")");
            }
            return Availability.available(info.summary() + ", cuBLASLt " + platform.cublasLt.versionString());
        } catch (Throwable t) {
            return Availability.unavailable("CUDA probe failed: " + LibrarySearch.oneLine(t));
        }
    }

    private static FatbinContents fatbin() {
        FatbinContents f = fatbin;
        if (f == null) fatbin = f = FatbinContents.parse(KernelImage.bytes());
        return f;
    }
}
