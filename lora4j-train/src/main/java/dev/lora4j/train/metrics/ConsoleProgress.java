package dev.lora4j.train.metrics;

import dev.lora4j.train.TrainResult;
import dev.lora4j.train.TrainingListener;
import dev.lora4j.train.TrainingPlan;

import java.io.PrintStream;
import java.nio.file.Path;
import java.util.Locale;
import java.util.Map;

/**
 * Progress on a console: on a terminal, a bar redrawn in place after every step (step/total, loss, learning rate,
 * tokens per second, time left, peak memory) with the logged records printed above it; elsewhere (a log file, CI)
 * only the logged records, one line each.
 */
public final class ConsoleProgress implements TrainingListener {
    private static final int BAR_WIDTH = 24;

    private final PrintStream out;
    private final boolean interactive;
    private long totalSteps;
    private long startStep;
    private long startNanos;
    private boolean barShown;
    private double smoothedTokensPerSecond;

    /** @param interactive redraw a bar in place (a terminal), or print logged lines only */
    public ConsoleProgress(PrintStream out, boolean interactive) {
        this.out = out;
        this.interactive = interactive;
    }

    @Override
    public void onStart(TrainingPlan plan, long startStep) {
        this.totalSteps = plan.totalSteps();
        this.startStep = startStep;
        this.startNanos = System.nanoTime();
    }

    @Override
    public void onStep(StepReport s) {
        if (s.seconds() > 0) {
            double rate = s.tokens() / s.seconds();
            smoothedTokensPerSecond = smoothedTokensPerSecond == 0 ? rate : 0.8 * smoothedTokensPerSecond + 0.2 * rate;
        }
        if (!interactive) return;
        out.print("\r" + bar(s) + "\033[K");
        out.flush();
        barShown = true;
    }

    String bar(StepReport s) {
        int filled = (int) (BAR_WIDTH * s.step() / Math.max(1, s.totalSteps()));
        String bar = "#".repeat(filled) + "-".repeat(BAR_WIDTH - filled);
        double elapsed = (System.nanoTime() - startNanos) / 1e9;
        long done = s.step() - startStep;
        double eta = done > 0 ? elapsed / done * (s.totalSteps() - s.step()) : Double.NaN;
        return String.format(Locale.ROOT, "[%s] %d/%d | loss %.4f | lr %.2e | %s tok/s | ETA %s | mem %s",
                bar, s.step(), s.totalSteps(), s.loss(), s.learningRate(), grouped(smoothedTokensPerSecond),
                duration(eta), bytes(s.peakMemoryBytes()));
    }

    @Override
    public void onLog(Map<String, Object> record) {
        clearBar();
        out.println(line(record));
    }

    /** A logged record as one line: "step 10/120  loss 2.3104  lr 1.00e-04  grad_norm 0.512  epoch 0.50  1,234 tok/s". */
    String line(Map<String, Object> r) {
        StringBuilder b = new StringBuilder();
        Object step = r.get("step");
        b.append("step ").append(step).append('/').append(totalSteps);
        for (Map.Entry<String, Object> e : r.entrySet()) {
            String k = e.getKey();
            if (k.equals("step") || k.equals("num_tokens") || k.equals("peak_memory_bytes")) continue;
            b.append("  ");
            Object v = e.getValue();
            switch (k) {
                case "learning_rate" -> b.append(String.format(Locale.ROOT, "lr %.2e", ((Number) v).doubleValue()));
                case "tokens_per_second", "train_tokens_per_second" -> b.append(grouped(((Number) v).doubleValue())).append(" tok/s");
                case "epoch" -> b.append(String.format(Locale.ROOT, "epoch %.2f", ((Number) v).doubleValue()));
                case "train_runtime", "eval_runtime" -> b.append(k).append(' ').append(duration(((Number) v).doubleValue()));
                default -> b.append(k).append(' ').append(v instanceof Double d ? String.format(Locale.ROOT, "%.4f", d) : v);
            }
        }
        return b.toString();
    }

    @Override
    public void onCheckpoint(long step, Path folder) {
        clearBar();
        out.println("saved " + folder);
    }

    @Override
    public void onEnd(TrainResult result) {
        clearBar();
    }

    private void clearBar() {
        if (barShown) {
            out.print("\r\033[K");
            barShown = false;
        }
    }

    static String duration(double seconds) {
        if (!Double.isFinite(seconds)) return "?";
        long s = Math.round(seconds);
        if (s < 60) return s + "s";
        if (s < 3600) return (s / 60) + "m" + String.format(Locale.ROOT, "%02ds", s % 60);
        return (s / 3600) + "h" + String.format(Locale.ROOT, "%02dm", (s % 3600) / 60);
    }

    static String grouped(double v) {
        return String.format(Locale.ROOT, "%,d", Math.round(v));
    }

    static String bytes(long b) {
        if (b < 1024L * 1024) return String.format(Locale.ROOT, "%.0f KiB", b / 1024.0);
        if (b < 1024L * 1024 * 1024) return String.format(Locale.ROOT, "%.0f MiB", b / 1048576.0);
        return String.format(Locale.ROOT, "%.2f GiB", b / 1073741824.0);
    }
}
