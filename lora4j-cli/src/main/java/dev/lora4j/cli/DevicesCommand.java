package dev.lora4j.cli;

import dev.lora4j.backend.BackendProvider;
import dev.lora4j.backend.Backends;
import dev.lora4j.backend.cpu.CpuBackend;
import picocli.CommandLine.Command;

import java.util.concurrent.Callable;

@Command(name = "devices", description = "List the compute backends and whether each can run on this machine.")
final class DevicesCommand implements Callable<Integer> {
    @Override
    public Integer call() {
        try (CpuBackend cpu = new CpuBackend()) {
            System.out.println("cpu   available    " + cpu.description());
        }
        var providers = Backends.providers();
        if (providers.isEmpty()) System.out.println("cuda  unavailable  the lora4j-cuda module is not on the class path");
        for (BackendProvider p : providers) {
            BackendProvider.Availability a = p.probe();
            System.out.printf("%-5s %-12s %s%n", p.name(), a.available() ? "available" : "unavailable", a.detail());
        }
        return 0;
    }
}
