package dev.lora4j.cuda;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.util.Properties;

/**
 * The fatbin of lora4j's CUDA kernels, built by nvcc when lora4j was built (scripts/build-kernels.sh) and carried
 * as a class-path resource, with the properties file that says how it was made or why it is missing.
 */
final class KernelImage {
    static final String FATBIN_RESOURCE = "lora4j_kernels.fatbin";
    static final String PROPERTIES_RESOURCE = "lora4j_kernels.properties";
    /** Where users find the resources, for messages. */
    static final String RESOURCE_FOLDER = "dev/lora4j/cuda/";

    private KernelImage() {}

    /** How the image was built: the properties written by the build script, empty when there are none. */
    static Properties buildProperties() {
        Properties p = new Properties();
        try (InputStream in = KernelImage.class.getResourceAsStream(PROPERTIES_RESOURCE)) {
            if (in != null) p.load(in);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + RESOURCE_FOLDER + PROPERTIES_RESOURCE, e);
        }
        return p;
    }

    /** Whether the fatbin is on the class path. */
    static boolean present() {
        return KernelImage.class.getResource(FATBIN_RESOURCE) != null;
    }

    /** Why the image cannot be used, in one line; null when it is present. */
    static String missingReason() {
        return missingReason(present(), buildProperties());
    }

    /** Why an image cannot be used, given whether it is present and its build record; null when present. */
    static String missingReason(boolean present, Properties p) {
        if (present) return null;
        String status = p.getProperty("status", "");
        String detail = p.getProperty("detail", "");
        if (status.equals("nvcc-missing")) return "kernel image not built: nvcc was not found when lora4j was built";
        if (!detail.isBlank() && !status.equals("built")) return "kernel image not built: " + detail;
        return "kernel image missing: " + RESOURCE_FOLDER + FATBIN_RESOURCE + " is not on the class path"
                + " (rebuild lora4j-cuda on a machine with nvcc)";
    }

    /** The fatbin's bytes; an error naming the resource when it is absent. */
    static byte[] bytes() {
        try (InputStream in = KernelImage.class.getResourceAsStream(FATBIN_RESOURCE)) {
            if (in == null) throw new CudaException(missingReason());
            return in.readAllBytes();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + RESOURCE_FOLDER + FATBIN_RESOURCE, e);
        }
    }
}
