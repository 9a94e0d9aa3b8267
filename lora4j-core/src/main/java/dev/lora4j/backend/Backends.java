package dev.lora4j.backend;

import dev.lora4j.backend.cpu.CpuBackend;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.ServiceLoader;
import java.util.function.Consumer;

/**
 * Chooses and opens a backend by the name users give ({@code --device cpu|cuda|auto}). A GPU backend that cannot
 * run here is never fatal: the reason is reported in one line through {@code notices} and the CPU is used.
 */
public final class Backends {
    private Backends() {}

    /** The backend providers found on the class path (the CUDA module registers one). */
    public static List<BackendProvider> providers() {
        List<BackendProvider> found = new ArrayList<>();
        ServiceLoader.load(BackendProvider.class).forEach(found::add);
        return found;
    }

    /**
     * Opens the named device. "cpu" is always available; "cuda" falls back to the CPU with a notice when it
     * cannot run; "auto" takes the GPU when it can run and the CPU otherwise, without a notice.
     */
    public static Backend open(String device, Consumer<String> notices) {
        String name = device == null ? "auto" : device.trim().toLowerCase(Locale.ROOT);
        if (name.equals("cpu")) return new CpuBackend();
        if (!name.equals("auto") && !name.equals("cuda") && !name.equals("gpu")) {
            throw new IllegalArgumentException("unknown device '" + device + "': use cpu, cuda or auto");
        }
        BackendProvider cuda = providers().stream().filter(p -> p.name().equals("cuda")).findFirst().orElse(null);
        if (cuda == null) {
            if (!name.equals("auto")) notices.accept("CUDA backend unavailable: the lora4j-cuda module is not on the class path; running on the CPU.");
            return new CpuBackend();
        }
        BackendProvider.Availability a = cuda.probe();
        if (!a.available()) {
            if (!name.equals("auto")) notices.accept("CUDA backend unavailable: " + a.detail() + "; running on the CPU.");
            return new CpuBackend();
        }
        return cuda.open();
    }
}
