package dev.lora4j.cuda;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * A program from src/test/cuda built with the machine's C++ compiler against the kernels' headers, so that the
 * device functions that also compile for the host can be checked without a GPU. Tests skip (through assumptions)
 * where the sources or a compiler are missing.
 */
final class HostHarness {
    private final Path executable;

    private HostHarness(Path executable) {
        this.executable = executable;
    }

    /** Builds src/test/cuda/{name}.cpp with {@code -O2 -std=c++17}, the given flags and src/main/cuda on the include path. */
    static HostHarness build(String name, String... flags) throws IOException, InterruptedException {
        Path cudaSources = Path.of("src", "main", "cuda").toAbsolutePath();
        Path source = Path.of("src", "test", "cuda", name + ".cpp").toAbsolutePath();
        assumeTrue(Files.isRegularFile(cudaSources.resolve("common.cuh")) && Files.isRegularFile(source),
                "the CUDA sources are not here (run from the lora4j-cuda module folder)");
        String compiler = findCompiler();
        assumeTrue(compiler != null, "no C++ compiler (c++, g++ or clang++) on the PATH to build " + name);
        Path out = Files.createDirectories(Path.of("target", "host-harness")).resolve(name);
        List<String> command = new ArrayList<>(List.of(compiler, "-O2", "-std=c++17"));
        command.addAll(List.of(flags));
        command.addAll(List.of("-I" + cudaSources, source.toString(), "-o", out.toString()));
        Process p = new ProcessBuilder(command).redirectErrorStream(true).start();
        String log = new String(p.getInputStream().readAllBytes());
        assertThat(p.waitFor()).as("compiling " + name + ":\n" + log).isZero();
        return new HostHarness(out);
    }

    /** Runs the program with {@code args}, feeding it {@code input}; its standard output, little-endian. */
    ByteBuffer run(byte[] input, String... args) throws Exception {
        List<String> command = new ArrayList<>(List.of(executable.toString()));
        command.addAll(List.of(args));
        Process p = new ProcessBuilder(command).redirectError(ProcessBuilder.Redirect.INHERIT).start();
        CompletableFuture<Void> writer = CompletableFuture.runAsync(() -> {
            try (OutputStream in = p.getOutputStream()) {
                in.write(input);
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        });
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        try (InputStream out = p.getInputStream()) {
            out.transferTo(bytes);
        }
        writer.get(60, TimeUnit.SECONDS);
        assertThat(p.waitFor(60, TimeUnit.SECONDS)).isTrue();
        assertThat(p.exitValue()).as(executable.getFileName() + " exit status").isZero();
        return ByteBuffer.wrap(bytes.toByteArray()).order(ByteOrder.LITTLE_ENDIAN);
    }

    static ByteBuffer littleEndian(int bytes) {
        return ByteBuffer.allocate(bytes).order(ByteOrder.LITTLE_ENDIAN);
    }

    private static String findCompiler() {
        String path = System.getenv().getOrDefault("PATH", "");
        for (String name : List.of("c++", "g++", "clang++")) {
            for (String dir : path.split(":")) {
                if (!dir.isEmpty() && Files.isExecutable(Path.of(dir, name))) return Path.of(dir, name).toString();
            }
        }
        return null;
    }
}
