package dev.lora4j.cli;

import dev.lora4j.api.Device;
import picocli.CommandLine.Option;

import java.util.Locale;

/** The {@code --device} option shared by the commands that compute. */
final class DeviceOption {
    @Option(names = "--device", defaultValue = "auto",
            description = "cpu, cuda or auto (default: ${DEFAULT-VALUE}: the GPU when one can run, else the CPU).")
    String device;

    Device device() {
        return switch (device.toLowerCase(Locale.ROOT)) {
            case "cpu" -> Device.CPU;
            case "cuda", "gpu" -> Device.CUDA;
            case "auto" -> Device.AUTO;
            default -> throw new IllegalArgumentException("unknown --device '" + device + "': use cpu, cuda or auto");
        };
    }
}
