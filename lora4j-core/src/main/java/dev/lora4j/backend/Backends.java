package dev.lora4j.backend;

import dev.lora4j.backend.cpu.CpuBackend;
import dev.lora4j.tensor.DType;

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
        return open(device, null, notices);
    }

    /**
     * As {@link #open(String, Consumer)}, with activations of dtype {@code activations} (null: the backend's default,
     * F32): BF16 halves the activations' memory on the GPU (training arguments' {@code bf16: true}). The CPU keeps F32
     * activations; asked for BF16 it says so in a notice.
     */
    public static Backend open(String device, DType activations, Consumer<String> notices) {
        String name = device == null ? "auto" : device.trim().toLowerCase(Locale.ROOT);
        if (name.equals("cpu")) return cpu(activations, notices);
        if (!name.equals("auto") && !name.equals("cuda") && !name.equals("gpu")) {
            throw new IllegalArgumentException("unknown device '" + device + "': use cpu, cuda or auto");
        }
        BackendProvider cuda = providers().stream().filter(p -> p.name().equals("cuda")).findFirst().orElse(null);
        if (cuda == null) {
            if (!name.equals("auto")) notices.accept("CUDA backend unavailable: the lora4j-cuda module is not on the class path; running on the CPU.");
            return cpu(activations, notices);
        }
        BackendProvider.Availability a = cuda.probe();
        if (!a.available()) {
            if (!name.equals("auto")) notices.accept("CUDA backend unavailable: " + a.detail() + "; running on the CPU.");
            return cpu(activations, notices);
        }
        return cuda.open(activations);
    }

    private static Backend cpu(DType activations, Consumer<String> notices) {
        if (activations != null && activations != DType.F32) {
            notices.accept("The CPU backend keeps activations in F32; " + activations + " activations apply on CUDA.");
        }
        return new CpuBackend();
    }
}
