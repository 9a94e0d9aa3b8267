package dev.lora4j.cli;

import dev.lora4j.backend.Backend;
import dev.lora4j.backend.Backends;
import dev.lora4j.model.FineTuneMethod;
import dev.lora4j.tensor.DType;
import dev.lora4j.train.bench.BenchInputs;
import dev.lora4j.train.bench.BenchMethod;
import dev.lora4j.train.bench.BenchReport;
import dev.lora4j.train.bench.BenchResult;
import dev.lora4j.train.bench.BenchSettings;
import dev.lora4j.train.bench.FineTuneBenchmark;
import dev.lora4j.train.bench.GemmPeak;
import dev.lora4j.train.bench.InitialAdapter;
import dev.lora4j.train.bench.ModelSource;
import dev.lora4j.train.bench.ReferenceResult;
import dev.lora4j.train.bench.TokenBatches;
import picocli.CommandLine.ArgGroup;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.concurrent.Callable;

/**
 * {@code lora4j bench}: fine-tuning throughput and memory of one or more configurations, the workload of the reference
 * benchmark (reference/hf_peft_bench.py), printed as the seed article's tables and written as JSON.
 */
@Command(name = "bench", sortOptions = false, mixinStandardHelpOptions = true,
        description = {"Measure fine-tuning speed and memory as reference/hf_peft_bench.py does:",
                "a warm-up step, then timed optimizer steps on synthetic batches, for a shape",
                "preset (random weights generated for the device) or a model folder. Prints",
                "memory at load, peak training memory, whether it fits a 24 GB GPU, samples/s,",
                "tokens/s, relative speed, the last loss and model FLOPs utilisation against a",
                "BF16 GEMM measured at start-up. Comma lists in --method, --seq, --micro-batch",
                "and --gradient-checkpointing (and a repeated --target-modules) run every",
                "combination, each on a fresh backend. Exit status 3 when a configuration",
                "failed (out of memory, ...); its row says why.",
                "With --tokens and --init-adapter it trains on given token batches from a given",
                "PEFT adapter, so that its per-step losses (printed, and in --json) can be",
                "compared with another implementation's on the same data",
                "(tools/same_data_losses.py)."})
final class BenchCommand implements Callable<Integer> {

    @ArgGroup(multiplicity = "1")
    Source source;

    static final class Source {
        @Option(names = "--preset", paramLabel = "NAME", description = "Shape preset with random weights: mistral-7b, llama2-7b, llama3-8b or tiny.")
        String preset;

        @Option(names = {"-m", "--model"}, paramLabel = "DIR", description = "Model folder: its weights, or with --random-weights only its config.json.")
        Path model;
    }

    @Option(names = "--random-weights", description = "With -m: random weights of the folder's config.json shape (no weights needed).")
    boolean randomWeights;

    @Option(names = "--method", split = ",", defaultValue = "lora", paramLabel = "M[,M]",
            description = "full, lora or qlora; a comma list runs each (default: ${DEFAULT-VALUE}).")
    List<String> methods;

    @Option(names = "--target-modules", paramLabel = "A,B",
            description = "Adapted modules: names (q_proj,v_proj), all-linear, or a regex; repeat the option to run several (default: q_proj,v_proj).")
    List<String> targetModules;

    @Option(names = {"-r", "--rank"}, defaultValue = "16", description = "LoRA rank (default: ${DEFAULT-VALUE}).")
    int rank;

    @Option(names = "--alpha", description = "LoRA alpha (default: twice the rank, as the reference).")
    Double alpha;

    @Option(names = "--dropout", defaultValue = "0.05", description = "LoRA dropout (default: ${DEFAULT-VALUE}).")
    double dropout;

    @Option(names = "--seq", split = ",", defaultValue = "1024", paramLabel = "N[,N]", description = "Tokens per sequence (default: ${DEFAULT-VALUE}).")
    List<Integer> seqs;

    @Option(names = "--micro-batch", split = ",", defaultValue = "4", paramLabel = "N[,N]", description = "Sequences per micro-batch (default: ${DEFAULT-VALUE}).")
    List<Integer> microBatches;

    @Option(names = "--accum", defaultValue = "4", description = "Micro-batches per optimizer step (default: ${DEFAULT-VALUE}).")
    int accum;

    @Option(names = "--steps", defaultValue = "2", description = "Timed optimizer steps (default: ${DEFAULT-VALUE}).")
    int steps;

    @Option(names = "--warmup-steps", defaultValue = "1", description = "Untimed optimizer steps first (default: ${DEFAULT-VALUE}).")
    int warmupSteps;

    @Option(names = "--gradient-checkpointing", arity = "0..1", fallbackValue = "true", defaultValue = "false", split = ",",
            paramLabel = "BOOL[,BOOL]", description = "Recompute activations in the backward pass; true,false runs both (default: ${DEFAULT-VALUE}).")
    List<String> checkpointing;

    @Option(names = {"--dtype", "--torch-dtype"}, split = ",", defaultValue = "float32", paramLabel = "D[,D]",
            description = "Full fine-tuning's weights: float32 (F32 weights and AdamW moments, BF16 working copies) or bfloat16"
                    + " (BF16 weights, gradients and moments, as the reference trains); both runs each (default: ${DEFAULT-VALUE}).")
    List<String> dtypes;

    @Option(names = "--optim", defaultValue = BenchSettings.DEFAULT_OPTIM,
            description = "adamw_torch, paged_adamw_32bit, adamw_8bit or paged_adamw_8bit, as transformers names them (default: ${DEFAULT-VALUE}).")
    String optim;

    @Option(names = "--lr", defaultValue = "2e-4", description = "Learning rate (default: ${DEFAULT-VALUE}).")
    double learningRate;

    @Option(names = "--weight-decay", defaultValue = "0.01", description = "AdamW weight decay (default: ${DEFAULT-VALUE}, torch's).")
    double weightDecay;

    @Option(names = "--max-grad-norm", defaultValue = "0", description = "Gradient clipping by global norm; 0: none, as the reference (default: ${DEFAULT-VALUE}).")
    double maxGradNorm;

    @Option(names = "--seed", defaultValue = "0", description = "Seed of the weights, adapters and token batches (default: ${DEFAULT-VALUE}).")
    long seed;

    @Option(names = "--device", defaultValue = "auto", description = "cpu, cuda or auto (default: ${DEFAULT-VALUE}: the GPU when one can run).")
    String device;

    @Option(names = "--bf16", negatable = true, defaultValue = "true", fallbackValue = "true",
            description = "BF16 activations on the GPU, as the reference trains (TrainingArguments' bf16); --no-bf16 keeps"
                    + " F32 activations. The CPU always uses F32 (default: ${DEFAULT-VALUE}).")
    boolean bf16;

    @Option(names = "--gemm-size", description = "Size of the BF16 GEMM measured for MFU; 0 skips it (default: 8192 on a GPU, 1024 on the CPU).")
    Integer gemmSize;

    @Option(names = "--tokens", paramLabel = "FILE",
            description = "Train on these token ids instead of synthetic ones: a JSON array of micro-batches, each an array of"
                    + " --micro-batch sequences of --seq ids (or an object with that array as \"micro_batches\"), used in"
                    + " order, from the start again when the run needs more.")
    Path tokens;

    @Option(names = "--init-adapter", paramLabel = "DIR",
            description = "Start the adapters from this PEFT adapter folder (e.g. saved right after get_peft_model) instead"
                    + " of lora4j's random A and zero B; its r, lora_alpha and target modules must be the benchmark's.")
    Path initAdapter;

    @Option(names = "--json", paramLabel = "FILE", description = "Write every figure as JSON.")
    Path json;

    @Option(names = "--compare", paramLabel = "FILE",
            description = "Output of reference/hf_peft_bench.py (its RESULT lines): shown beside the matching rows, and relative speed is against it.")
    Path compare;

    @Override
    public Integer call() throws IOException {
        PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
        PrintStream err = System.err;
        if (randomWeights && source.model == null) throw new IllegalArgumentException("--random-weights goes with -m (a model folder's config.json)");
        ModelSource model = source.preset != null ? ModelSource.preset(source.preset) : ModelSource.folder(source.model, randomWeights);
        List<BenchSettings> configurations = configurations();
        BenchInputs inputs = new BenchInputs(tokens == null ? null : TokenBatches.read(tokens),
                initAdapter == null ? null : InitialAdapter.load(initAdapter));
        Set<String> notes = new LinkedHashSet<>();
        for (BenchSettings s : configurations) {
            String note = FineTuneBenchmark.check(s, model, inputs);
            if (note != null) notes.add(note);
        }
        List<ReferenceResult> references = compare == null ? List.of() : ReferenceResult.read(compare);
        String backendName = backendName();

        GemmPeak peak = null;
        int size = gemmSize != null ? gemmSize : backendName.equals("cuda") ? GemmPeak.GPU_SIZE : GemmPeak.CPU_SIZE;
        if (size < 0) throw new IllegalArgumentException("--gemm-size must be 0 (skip) or a size, got " + size);
        if (size > 0) {
            try (Backend b = open(backendName, null)) {
                peak = GemmPeak.measure(b, size);
            }
            out.printf(Locale.ROOT, "bf16 GEMM peak: %s (%d^3 through Backend.matmul)%n", peak.rate(), size);
        }
        DType activations = backendName.equals("cuda") && bf16 ? DType.BF16 : DType.F32;
        String about = model.shapeName() + " (" + (model.random() ? "random weights" : "weights of " + source.model) + ")";
        out.println("model: " + about + ", " + configurations.size() + " configuration" + (configurations.size() == 1 ? "" : "s"));
        if (inputs.tokens() != null) out.println("token batches: " + inputs.tokens());
        if (inputs.initialAdapter() != null) out.println("initial adapter: " + inputs.initialAdapter().folder());
        for (String note : notes) out.println("note: " + note);

        List<BenchResult> results = new ArrayList<>();
        for (BenchSettings s : configurations) {
            BenchResult r = FineTuneBenchmark.run(s, model, () -> open(backendName, activations), peak,
                    line -> err.println("  " + line), inputs);
            results.add(r);
            if (!r.losses().isEmpty()) out.println(s.label() + ": " + r.stepLossLine());
            if (r.failed()) {
                out.printf(Locale.ROOT, "%s: failed: %s%n", s.label(), r.error());
            } else {
                out.printf(Locale.ROOT, "%s: %.2f samples/s, peak %.2f GiB, loss %.4f%n", s.label(), r.samplesPerSecond(),
                        r.peakBytes() / (double) (1L << 30), r.lastLoss());
            }
        }
        BenchReport report = new BenchReport(about, results, references, peak);
        out.println();
        out.print(report.tables());
        if (json != null) {
            report.writeJson(json);
            out.println("wrote " + json);
        }
        return results.stream().anyMatch(BenchResult::failed) ? 3 : 0;
    }

    /** Every combination of the listed methods, target modules, sequence lengths, micro-batches and checkpointing. */
    List<BenchSettings> configurations() {
        List<String> targets = targetModules == null || targetModules.isEmpty() ? List.of(BenchSettings.DEFAULT_TARGETS) : targetModules;
        Set<BenchSettings> all = new LinkedHashSet<>(); // full fine-tuning ignores target modules: one run, not one per list
        for (String m : methods) {
            BenchMethod method = BenchMethod.parse(m);
            for (String t : targets) {
                for (int seq : seqs) {
                    for (int mb : microBatches) {
                        for (String gc : checkpointing) {
                            for (DType precision : method == BenchMethod.FULL ? fullPrecisions() : List.of(DType.F32)) {
                                all.add(new BenchSettings(method, t, rank, alpha == null ? 2.0 * rank : alpha, dropout, seq,
                                        mb, accum, steps, warmupSteps, bool(gc), optim, learningRate, weightDecay,
                                        maxGradNorm, seed, precision));
                            }
                        }
                    }
                }
            }
        }
        if (!methods.stream().map(BenchMethod::parse).toList().contains(BenchMethod.FULL)
                && !fullPrecisions().equals(List.of(DType.F32))) {
            throw new IllegalArgumentException("--dtype sets the weights of full fine-tuning; add --method full, or drop --dtype");
        }
        return List.copyOf(all);
    }

    /** The weight dtypes full fine-tuning runs in: --dtype's list. */
    private List<DType> fullPrecisions() {
        List<DType> out = new ArrayList<>();
        for (String d : dtypes) {
            DType t = FineTuneMethod.Full.precisionNamed(d).orElseThrow(() -> new IllegalArgumentException(
                    "unknown --dtype '" + d + "': use " + FineTuneMethod.Full.PRECISION_NAMES));
            if (!out.contains(t)) out.add(t);
        }
        return out;
    }

    private static boolean bool(String v) {
        return switch (v.strip().toLowerCase(Locale.ROOT)) {
            case "true", "on", "yes" -> true;
            case "false", "off", "no" -> false;
            default -> throw new IllegalArgumentException("--gradient-checkpointing takes true or false (or true,false for both), not '" + v + "'");
        };
    }

    /** The backend the runs use, decided once: "cuda" only when the GPU can run; asking for cuda without one is an error. */
    private String backendName() {
        String d = device.strip().toLowerCase(Locale.ROOT);
        if (!Set.of("cpu", "cuda", "gpu", "auto").contains(d)) {
            throw new IllegalArgumentException("unknown --device '" + device + "': use cpu, cuda or auto");
        }
        if (d.equals("cpu")) return "cpu";
        List<String> notices = new ArrayList<>();
        try (Backend b = Backends.open(d, notices::add)) {
            if (d.equals("auto") || b.name().equals("cuda")) return b.name();
        }
        // A benchmark of the GPU that silently ran on the CPU would report meaningless figures after hours.
        throw new IllegalArgumentException("--device cuda: " + (notices.isEmpty() ? "no GPU backend" : notices.getFirst())
                + " Use --device cpu to benchmark the CPU.");
    }

    private static Backend open(String name, DType activations) {
        return Backends.open(name, activations, notice -> {});
    }
}
