package dev.lora4j.train;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * TensorBoard's own reader (EventAccumulator, through tools/read_tensorboard.py) reads the event files of a run and
 * finds every scalar of metrics.jsonl in them. Skipped where python3 with the tensorboard package is missing (it
 * is installed on the GPU machine).
 */
class TensorBoardInteropTest {
    @TempDir
    Path dir;

    @Test
    void tensorBoardReadsTheRunsEventFile() throws IOException, InterruptedException {
        Path script = tools().resolve("read_tensorboard.py");
        assumeTrue(Files.isRegularFile(script), "tools/read_tensorboard.py not found beside the module");
        assumeTrue(run(List.of("python3", "-c", "import tensorboard")).exit == 0, "python3 with the tensorboard package is not installed");
        TinyModel tiny = TinyModel.write(dir);
        Path out = dir.resolve("out");
        try (SftTrainer t = tiny.trainer(TinyModel.config(out).maxSteps(4).loggingSteps(2).evalSteps(2.0).build(), true)) {
            t.train();
        }
        Result r = run(List.of("python3", script.toString(), out.toString()));
        assertThat(r.exit).as(r.output).isZero();
        assertThat(r.output).contains("train/loss: 2 points").contains("eval/loss: 2 points").contains("0 problem(s)");
    }

    private static Path tools() {
        for (Path p = Path.of("").toAbsolutePath(); p != null; p = p.getParent()) {
            if (Files.isDirectory(p.resolve("tools")) && Files.isRegularFile(p.resolve("pom.xml"))) return p.resolve("tools");
        }
        return Path.of("tools");
    }

    private record Result(int exit, String output) {}

    private static Result run(List<String> command) throws IOException, InterruptedException {
        Process p;
        try {
            p = new ProcessBuilder(command).redirectErrorStream(true).start();
        } catch (IOException e) {
            return new Result(-1, e.getMessage());
        }
        String output = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        if (!p.waitFor(60, TimeUnit.SECONDS)) {
            p.destroy();
            return new Result(-1, "timed out\n" + output);
        }
        return new Result(p.exitValue(), output);
    }
}
