package dev.lora4j.train.bench;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.lora4j.model.MemoryReport;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * The benchmark's results as the seed article shows them (a memory table and a throughput table, with the reference
 * stack's figures beside lora4j's where a reference file was given) and as JSON for scripts.
 *
 * <p>Relative speed is samples/s over the reference's for the same workload when the reference file has it, and
 * otherwise over the first configuration of the run that measured.
 */
public final class BenchReport {

    /** How {@link TrainingFlops} counts, written into the JSON so a reader of the figures has the definition. */
    public static final String FLOPS_DEFINITION = "per token: 2N forward + 2N backward to the inputs + 2N_trainable"
            + " backward to the weights, N = parameters of the matrix products (layer projections, lm_head, LoRA A and B),"
            + " N_trainable = those that train; plus attention: 12 * head_dim per causal (query, key) pair, head and layer;"
            + " the forward pass recomputed by gradient checkpointing is not counted";

    private final List<BenchResult> results;
    private final List<ReferenceResult> references;
    private final GemmPeak peak;
    private final String model;

    /**
     * @param model      one line about the model (its shape and where its weights come from)
     * @param references the reference benchmark's lines, or an empty list
     * @param peak       the measured GEMM peak, or null
     */
    public BenchReport(String model, List<BenchResult> results, List<ReferenceResult> references, GemmPeak peak) {
        this.model = model;
        this.results = List.copyOf(results);
        this.references = List.copyOf(references);
        this.peak = peak;
    }

    public List<BenchResult> results() {
        return results;
    }

    /** The reference line of the same workload as {@code r}, or null. */
    public ReferenceResult reference(BenchResult r) {
        return ReferenceResult.find(references, r);
    }

    /** Samples/s over the reference's, or over the first measured row's; NaN when neither exists. */
    public double relativeSpeed(BenchResult r) {
        if (r.failed()) return Double.NaN;
        ReferenceResult ref = reference(r);
        if (ref != null && !ref.failed()) return r.samplesPerSecond() / ref.samplesPerSecond();
        BenchResult first = firstMeasured();
        return first == null ? Double.NaN : r.samplesPerSecond() / first.samplesPerSecond();
    }

    /** "reference" when {@link #relativeSpeed} compares with the reference, "row N" otherwise. */
    public String relativeTo(BenchResult r) {
        ReferenceResult ref = reference(r);
        if (ref != null && !ref.failed()) return "reference";
        return "row " + (results.indexOf(firstMeasured()) + 1);
    }

    private BenchResult firstMeasured() {
        for (BenchResult r : results) if (!r.failed()) return r;
        return null;
    }

    // ---- text ------------------------------------------------------------------------------------------------

    /** The header lines and the tables, as printed by {@code lora4j bench}. */
    public String tables() {
        StringBuilder out = new StringBuilder();
        if (model != null) out.append("model: ").append(model).append('\n');
        String workload = commonWorkload();
        if (workload != null) out.append(workload).append('\n');
        if (!results.isEmpty() && results.getFirst().device() != null) out.append("device: ").append(results.getFirst().device()).append('\n');
        if (peak != null) {
            out.append(String.format(Locale.ROOT, "bf16 GEMM peak: %s (%d x %d x %d through Backend.matmul, %s input, BF16 weight)%n",
                    peak.rate(), peak.size(), peak.size(), peak.size(), peak.inputType()));
        }
        out.append('\n');

        Table memory = new Table("configuration", "base model precision", "memory at load", "peak training memory",
                "fits on a 24 GB GPU?");
        Table speed = new Table("configuration", "samples/s", "tokens/s", "relative speed", "loss (last step)", "MFU");
        StringBuilder failures = new StringBuilder();
        Table split = new Table("configuration", "base weights", "trainable", "gradients", "optimizer state", "activations",
                "workspace");
        for (int i = 0; i < results.size(); i++) {
            BenchResult r = results.get(i);
            String name = (i + 1) + ". " + name(r);
            if (r.failed()) {
                memory.row(name, r.basePrecision(), r.loadBytes() > 0 ? gib(r.loadBytes()) : "-", "failed (below)", "-");
                failures.append(String.format(Locale.ROOT, "  %s: %s%n", name, r.error()));
                speed.row(name, "-", "-", "-", "-", "-");
            } else {
                memory.row(name, r.basePrecision(), gib(r.loadBytes()), gib(r.peakBytes()), r.fitsOn24GbGpu() ? "yes" : "no");
                double rel = relativeSpeed(r);
                speed.row(name, String.format(Locale.ROOT, "%.2f", r.samplesPerSecond()),
                        String.format(Locale.ROOT, "%,.0f", r.tokensPerSecond()),
                        Double.isNaN(rel) ? "-" : String.format(Locale.ROOT, "%.2fx %s", rel, relativeTo(r)),
                        String.format(Locale.ROOT, "%.4f", r.lastLoss()),
                        Double.isNaN(r.mfu()) ? "-" : String.format(Locale.ROOT, "%.1f%%", 100 * r.mfu()));
            }
            if (r.memory() != null) {
                MemoryReport m = r.memory();
                split.row(name, gib(m.baseWeights()), gib(m.trainableWeights()), gib(m.gradients()), gib(m.optimizerState()),
                        gib(m.activations()), gib(m.workspace()));
            }
            ReferenceResult ref = reference(r);
            if (ref != null) {
                String refName = "   reference (transformers + peft, " + ref.mode() + (ref.gc() ? ", checkpointing" : "") + ")";
                if (ref.failed()) {
                    memory.row(refName, "-", "-", "failed (below)", "-");
                    failures.append(String.format(Locale.ROOT, "  %s: %s%n", refName.strip(), ref.error() == null ? "no figures" : ref.error()));
                    speed.row(refName, "-", "-", "-", "-", "-");
                } else {
                    double refMfu = peak == null ? Double.NaN
                            : r.flops().perStep() / r.settings().samplesPerStep() * ref.samplesPerSecond() / peak.flopsPerSecond();
                    memory.row(refName, ref.mode().startsWith("qlora") ? "NF4 + double quant (BF16 compute)" : "BF16",
                            gib(ref.loadGib()), gib(ref.peakGib()), ref.peakGib() * (1L << 30) <= BenchResult.BYTES_ON_A_24_GB_GPU ? "yes" : "no");
                    speed.row(refName, String.format(Locale.ROOT, "%.2f", ref.samplesPerSecond()),
                            String.format(Locale.ROOT, "%,.0f", ref.tokensPerSecond()), "1.00x (itself)",
                            Double.isNaN(ref.loss()) ? "-" : String.format(Locale.ROOT, "%.4f", ref.loss()),
                            Double.isNaN(refMfu) ? "-" : String.format(Locale.ROOT, "%.1f%%", 100 * refMfu));
                }
            }
        }
        out.append("Memory (device memory held by tensors)\n").append(memory).append('\n');
        out.append("Throughput\n").append(speed);
        if (!split.isEmpty()) out.append('\n').append("Peak training memory by part\n").append(split);
        if (!failures.isEmpty()) out.append('\n').append("Failed\n").append(failures);
        return out.toString();
    }

    /** The row's name: the configuration, with its batch shape when the runs do not all share one. */
    private String name(BenchResult r) {
        BenchSettings s = r.settings();
        if (commonWorkload() != null) return s.label();
        return String.format(Locale.ROOT, "%s, seq %d x %d x %d", s.label(), s.seq(), s.microBatch(), s.accum());
    }

    /** "workload: ..." when every run has the same batch shape and step counts, else null. */
    private String commonWorkload() {
        if (results.isEmpty()) return null;
        BenchSettings f = results.getFirst().settings();
        for (BenchResult r : results) {
            BenchSettings s = r.settings();
            if (s.seq() != f.seq() || s.microBatch() != f.microBatch() || s.accum() != f.accum() || s.steps() != f.steps()
                    || s.warmupSteps() != f.warmupSteps()) return null;
        }
        return String.format(Locale.ROOT, "workload: sequences of %d tokens, micro-batches of %d, %d accumulation steps"
                        + " (%d samples per optimizer step); %d warm-up + %d timed steps", f.seq(), f.microBatch(), f.accum(),
                f.samplesPerStep(), f.warmupSteps(), f.steps());
    }

    /** GiB as the seed's tables give memory; below 1 GiB in MiB, so that small models do not all read 0.00. */
    private static String gib(long bytes) {
        if (bytes < (1L << 30)) return String.format(Locale.ROOT, "%.1f MiB", bytes / (double) (1L << 20));
        return String.format(Locale.ROOT, "%.2f GiB", bytes / (double) (1L << 30));
    }

    private static String gib(double gib) {
        return Double.isNaN(gib) ? "-" : gib((long) (gib * (1L << 30)));
    }

    /** A Markdown table whose columns are padded to line up in a terminal. */
    private static final class Table {
        private final List<String[]> rows = new ArrayList<>();

        Table(String... header) {
            rows.add(header);
        }

        void row(String... cells) {
            rows.add(cells);
        }

        boolean isEmpty() {
            return rows.size() == 1;
        }

        @Override
        public String toString() {
            int[] width = new int[rows.getFirst().length];
            for (String[] r : rows) for (int c = 0; c < r.length; c++) width[c] = Math.max(width[c], r[c].length());
            StringBuilder sb = new StringBuilder();
            for (int i = 0; i < rows.size(); i++) {
                line(sb, rows.get(i), width);
                if (i == 0) {
                    String[] rule = new String[width.length];
                    for (int c = 0; c < width.length; c++) rule[c] = "-".repeat(width[c]);
                    line(sb, rule, width);
                }
            }
            return sb.toString();
        }

        private static void line(StringBuilder sb, String[] cells, int[] width) {
            sb.append('|');
            for (int c = 0; c < cells.length; c++) {
                sb.append(' ').append(cells[c]).append(" ".repeat(width[c] - cells[c].length())).append(" |");
            }
            sb.append('\n');
        }
    }

    // ---- JSON ------------------------------------------------------------------------------------------------

    /** Every figure, with the reference line of the same workload beside each result. */
    public ObjectNode json() {
        ObjectMapper m = new ObjectMapper();
        ObjectNode root = m.createObjectNode();
        root.put("model", model);
        root.put("device", results.isEmpty() ? null : results.getFirst().device());
        if (peak != null) {
            ObjectNode p = root.putObject("gemm_peak");
            p.put("size", peak.size());
            p.put("weight_dtype", peak.weightType().toString());
            p.put("input_dtype", peak.inputType().toString());
            p.put("products_per_round", peak.productsPerRound());
            p.put("seconds_per_product", peak.secondsPerProduct());
            p.put("tflops", round(peak.teraflopsPerSecond(), 3));
        } else {
            root.putNull("gemm_peak");
        }
        root.put("flops_definition", FLOPS_DEFINITION);
        root.put("fits_24gb_gpu_definition", "peak_bytes <= " + BenchResult.BYTES_ON_A_24_GB_GPU
                + " (24 GiB less 1 GiB for the CUDA context and libraries)");
        ArrayNode list = root.putArray("results");
        for (BenchResult r : results) list.add(json(m, r));
        return root;
    }

    private ObjectNode json(ObjectMapper m, BenchResult r) {
        BenchSettings s = r.settings();
        ObjectNode o = m.createObjectNode();
        o.put("configuration", s.label());
        o.put("shape", r.shape());
        o.put("mode", s.referenceMode());
        o.put("method", s.method().label());
        o.put("target_modules", s.targetModules());
        o.put("gc", s.gradientCheckpointing());
        o.put("micro_batch", s.microBatch());
        o.put("seq", s.seq());
        o.put("accum", s.accum());
        o.put("rank", s.rank());
        o.put("alpha", s.alpha());
        o.put("dropout", s.dropout());
        o.put("steps", s.steps());
        o.put("warmup_steps", s.warmupSteps());
        o.put("optim", s.optim());
        o.put("optimizer", r.optimizer());
        o.put("lr", s.learningRate());
        o.put("weight_decay", s.weightDecay());
        o.put("max_grad_norm", s.maxGradNorm());
        o.put("seed", s.seed());
        o.put("device", r.device());
        o.put("base_precision", r.basePrecision());
        o.put("trainable_params", r.trainableParameters());
        o.put("all_params", r.allParameters());
        number(o, "load_seconds", round(r.loadSeconds(), 2));
        o.put("load_bytes", r.loadBytes());
        o.put("load_gib", round(r.loadBytes() / (double) (1L << 30), 2));
        o.put("peak_bytes", r.peakBytes());
        o.put("peak_gib", round(r.peakBytes() / (double) (1L << 30), 2));
        o.put("fits_24gb_gpu", !r.failed() && r.fitsOn24GbGpu());
        ArrayNode losses = o.putArray("losses");
        for (double l : r.losses()) {
            if (Double.isFinite(l)) losses.add(round(l, 4));
            else losses.addNull();
        }
        // Unrounded, for comparing with another implementation's losses on the same data step by step.
        ArrayNode stepLosses = o.putArray("step_losses");
        for (double l : r.losses()) exact(stepLosses, l);
        ArrayNode microLosses = o.putArray("micro_batch_losses");
        for (List<Double> step : r.microBatchLosses()) {
            ArrayNode a = microLosses.addArray();
            for (double l : step) exact(a, l);
        }
        o.put("tokens", r.tokens());
        o.put("init_adapter", r.initialAdapter());
        ArrayNode times = o.putArray("step_seconds");
        for (double t : r.stepSeconds()) times.add(round(t, 4));
        o.put("model_flops_per_step", r.flops().perStep());
        o.put("matmul_params", r.flops().matmulParameters());
        o.put("trainable_matmul_params", r.flops().trainableMatmulParameters());
        if (r.failed()) {
            o.put("error", r.error());
        } else {
            o.put("samples_per_s", round(r.samplesPerSecond(), 3));
            o.put("tokens_per_s", Math.round(r.tokensPerSecond()));
            number(o, "loss", round(r.lastLoss(), 4));
            o.put("model_tflops_per_s", round(r.modelFlopsPerSecond() / 1e12, 3));
            number(o, "mfu", round(r.mfu(), 4));
            number(o, "relative_speed", round(relativeSpeed(r), 3));
            o.put("relative_to", relativeTo(r));
        }
        if (r.memory() != null) {
            MemoryReport b = r.memory();
            ObjectNode mem = o.putObject("memory_bytes");
            mem.put("base_weights", b.baseWeights());
            mem.put("trainable_weights", b.trainableWeights());
            mem.put("gradients", b.gradients());
            mem.put("optimizer_state", b.optimizerState());
            mem.put("activations", b.activations());
            mem.put("workspace", b.workspace());
        }
        ReferenceResult ref = reference(r);
        if (ref != null) o.set("reference", ref.json());
        return o;
    }

    /** Writes {@link #json()} to a file, indented. */
    public void writeJson(Path file) throws IOException {
        Path parent = file.toAbsolutePath().getParent();
        if (parent != null) Files.createDirectories(parent);
        Files.writeString(file, new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT).writeValueAsString(json()) + "\n");
    }

    private static void exact(ArrayNode a, double v) {
        if (Double.isFinite(v)) a.add(v);
        else a.addNull();
    }

    /** JSON has no NaN or infinity: those become null. */
    private static void number(ObjectNode o, String field, double v) {
        if (Double.isFinite(v)) o.put(field, v);
        else o.putNull(field);
    }

    private static double round(double v, int digits) {
        if (Double.isNaN(v) || Double.isInfinite(v)) return v;
        double f = Math.pow(10, digits);
        return Math.round(v * f) / f;
    }
}
