package dev.lora4j.bench;

import org.openjdk.jmh.results.Result;
import org.openjdk.jmh.results.RunResult;
import org.openjdk.jmh.runner.Runner;
import org.openjdk.jmh.runner.RunnerException;
import java.io.IOException;
import org.openjdk.jmh.runner.options.CommandLineOptionException;
import org.openjdk.jmh.runner.options.CommandLineOptions;
import org.openjdk.jmh.infra.BenchmarkParams;

import java.util.Collection;
import java.util.Locale;

/**
 * Runs the JMH benchmarks (same command-line options as JMH's own main) and then prints what the raw times
 * mean: GB/s for the memory-bound kernels, GFLOP/s for the compute-bound ones, as a Markdown table ready for
 * docs/benchmarks.md.
 */
public final class BenchMain {
    private BenchMain() {}

    public static void main(String[] args) throws RunnerException, IOException {
        CommandLineOptions options;
        try {
            options = new CommandLineOptions(args);
        } catch (CommandLineOptionException e) {
            System.err.println("bad JMH option: " + e.getMessage());
            System.exit(2);
            return;
        }
        if (options.shouldHelp() || options.shouldList() || options.shouldListWithParams() || options.shouldListProfilers()
                || options.shouldListResultFormats()) {
            org.openjdk.jmh.Main.main(args.length == 0 ? new String[] {"-h"} : args);
            return;
        }
        String loadBefore = loadAverage();
        Collection<RunResult> results = new Runner(options).run();
        System.out.println();
        System.out.println("| benchmark | parameters | mean time per call | mean throughput | best iteration |");
        System.out.println("|---|---|---:|---:|---:|");
        for (RunResult r : results) {
            BenchmarkParams p = r.getParams();
            Result<?> primary = r.getPrimaryResult();
            String unit = primary.getScoreUnit();
            double seconds = secondsPerCall(primary.getScore(), unit);
            String name = p.getBenchmark().replace("dev.lora4j.bench.", "");
            if (Double.isNaN(seconds)) {
                System.out.printf(Locale.ROOT, "| %s | %s | %s %s | | |%n", name, parameters(p), primary.getScore(), unit);
                continue;
            }
            double best = r.getBenchmarkResults().stream()
                    .flatMap(b -> b.getIterationResults().stream())
                    .mapToDouble(i -> secondsPerCall(i.getPrimaryResult().getScore(), unit))
                    .min().orElse(seconds);
            System.out.printf(Locale.ROOT, "| %s | %s | %s | %s | %s |%n", name, parameters(p), formatTime(seconds),
                    throughput(name, p, seconds), throughput(name, p, best));
        }
        System.out.println();
        System.out.printf(Locale.ROOT, "%d processors; load average (1, 5, 15 min) before: %s, after: %s%n",
                Runtime.getRuntime().availableProcessors(), loadBefore, loadAverage());
    }

    /** Other processes compete for the cores: the figures are only as good as the machine was quiet. */
    private static String loadAverage() {
        try {
            String[] f = java.nio.file.Files.readString(java.nio.file.Path.of("/proc/loadavg")).trim().split("\\s+");
            return f[0] + " " + f[1] + " " + f[2];
        } catch (IOException | RuntimeException e) {
            return "unknown";
        }
    }

    /** Derived rate of one benchmark: the bytes or flops one call moves or computes, over its time. */
    static String throughput(String name, BenchmarkParams p, double seconds) {
        return switch (name) {
            case "MatmulBenchmark.decode" -> {
                long weightBytes = (long) i(p, "m") * i(p, "k") * dtypeBytes(p.getParam("weights"));
                yield gbps(weightBytes, seconds) + " weights, " + gflops(2.0 * i(p, "m") * i(p, "k"), seconds);
            }
            case "MatmulBenchmark.prefill" -> gflops(2.0 * i(p, "n") * i(p, "k") * i(p, "m"), seconds);
            case "FourBitMatmulBenchmark.matmul" -> gbps(FourBitMatmulBenchmark.weightBytes(p.getParam("weights"), i(p, "m"), i(p, "k")), seconds)
                    + " weights, " + gflops(2.0 * i(p, "n") * i(p, "k") * i(p, "m"), seconds);
            case "RmsNormBenchmark.rmsNorm" -> gbps(4L * i(p, "d") * (2L * i(p, "n") + 1), seconds);
            case "AttentionBenchmark.attention" -> gflops(4.0 * i(p, "headDim") * i(p, "heads")
                    * AttentionBenchmark.pairs(p.getParam("phase"), i(p, "context")), seconds);
            case "MachineCeilingBenchmark.readBandwidth" -> gbps((long) i(p, "megabytes") << 20, seconds);
            case "MachineCeilingBenchmark.fmaThroughput" ->
                    gflops(MachineCeilingBenchmark.fmaFlops(Runtime.getRuntime().availableProcessors()), seconds);
            default -> name.startsWith("TrainingBenchmark.")
                    ? trainingRate(name.substring("TrainingBenchmark.".length()), p, seconds) : "";
        };
    }

    private static String trainingRate(String benchmark, BenchmarkParams p, double seconds) {
        double flops = TrainingBenchmark.flops(benchmark, i(p, "n"), i(p, "k"));
        return flops > 0 ? gflops(flops, seconds) : "";
    }

    private static String parameters(BenchmarkParams p) {
        StringBuilder sb = new StringBuilder();
        for (String key : p.getParamsKeys()) {
            if (!sb.isEmpty()) sb.append(' ');
            sb.append(key).append('=').append(p.getParam(key));
        }
        return sb.toString();
    }

    private static int i(BenchmarkParams p, String key) { return Integer.parseInt(p.getParam(key)); }

    private static int dtypeBytes(String dtype) { return dtype.equals("F32") ? 4 : 2; }

    private static double secondsPerCall(double score, String unit) {
        return switch (unit) {
            case "s/op" -> score;
            case "ms/op" -> score * 1e-3;
            case "us/op" -> score * 1e-6;
            case "ns/op" -> score * 1e-9;
            default -> Double.NaN; // throughput modes: nothing to derive
        };
    }

    private static String formatTime(double seconds) {
        if (seconds >= 1) return String.format(Locale.ROOT, "%.3f s", seconds);
        if (seconds >= 1e-3) return String.format(Locale.ROOT, "%.3f ms", seconds * 1e3);
        return String.format(Locale.ROOT, "%.1f µs", seconds * 1e6);
    }

    private static String gbps(double bytes, double seconds) {
        return String.format(Locale.ROOT, "%.1f GB/s", bytes / seconds / 1e9);
    }

    private static String gflops(double flops, double seconds) {
        return String.format(Locale.ROOT, "%.1f GFLOP/s", flops / seconds / 1e9);
    }
}
