package dev.lora4j.train.metrics;

import dev.lora4j.train.TrainingListener.StepReport;
import dev.lora4j.train.TrainingPlan;
import org.junit.jupiter.api.Test;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;

class ConsoleProgressTest {
    private static final TrainingPlan PLAN = new TrainingPlan(100, 13, 13, 40, 3.0, 0, 10, 0, 20);

    private static Map<String, Object> trainLog() {
        Map<String, Object> r = new LinkedHashMap<>();
        r.put("step", 10L);
        r.put("loss", 2.31044);
        r.put("grad_norm", 0.5121);
        r.put("learning_rate", 1e-4);
        r.put("epoch", 0.7692);
        r.put("num_tokens", 12345L);
        r.put("tokens_per_second", 1234.4);
        r.put("peak_memory_bytes", 1L << 20);
        return r;
    }

    @Test
    void withoutATerminalOnlyLoggedRecordsArePrintedOneLineEach() {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        ConsoleProgress p = new ConsoleProgress(new PrintStream(bytes, true, StandardCharsets.UTF_8), false);
        p.onStart(PLAN, 0);
        p.onStep(new StepReport(10, 40, 0.77, 2.3, 0.5, 1e-4, 1000, 300, 0.5, 1 << 20));
        p.onLog(trainLog());
        p.onCheckpoint(20, Path.of("out/checkpoint-20"));
        assertThat(bytes.toString(StandardCharsets.UTF_8)).isEqualTo(
                "step 10/40  loss 2.3104  grad_norm 0.5121  lr 1.00e-04  epoch 0.77  1,234 tok/s\nsaved out/checkpoint-20\n");
    }

    @Test
    void onATerminalABarIsRedrawnInPlaceAndClearedBeforeLines() {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        ConsoleProgress p = new ConsoleProgress(new PrintStream(bytes, true, StandardCharsets.UTF_8), true);
        p.onStart(PLAN, 0);
        p.onStep(new StepReport(10, 40, 0.77, 2.3, 0.5, 1e-4, 1000, 300, 0.5, 3L << 20));
        String out = bytes.toString(StandardCharsets.UTF_8);
        assertThat(out).startsWith("\r[######------------------] 10/40 | loss 2.3000 | lr 1.00e-04 | 2,000 tok/s | ETA ")
                .contains("| mem 3 MiB");
        p.onLog(trainLog());
        assertThat(bytes.toString(StandardCharsets.UTF_8)).contains("\r\033[Kstep 10/40  loss 2.3104");
    }

    @Test
    void durationsReadAsAPersonWouldWriteThem() {
        assertThat(ConsoleProgress.duration(42.4)).isEqualTo("42s");
        assertThat(ConsoleProgress.duration(125)).isEqualTo("2m05s");
        assertThat(ConsoleProgress.duration(3 * 3600 + 7 * 60)).isEqualTo("3h07m");
        assertThat(ConsoleProgress.duration(Double.NaN)).isEqualTo("?");
    }
}
