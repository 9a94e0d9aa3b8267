package dev.lora4j.model;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.lora4j.backend.Backend;
import dev.lora4j.backend.Backends;
import dev.lora4j.generate.Generator;
import dev.lora4j.io.ComparisonMain;
import dev.lora4j.io.ModelFolder;
import dev.lora4j.io.SafetensorsFile;
import dev.lora4j.io.TensorInfo;
import dev.lora4j.tensor.DType;
import dev.lora4j.tokenizer.Tokenizer;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

/**
 * Compares lora4j's logits and greedy generations with those transformers computed for the same model folders
 * ({@code tools/compare_logits.py} writes them and documents the commands).
 *
 * <pre>
 *   java ... dev.lora4j.model.LogitsComparison EXPECTED_JSON [DEVICES] [RESULTS_JSON]
 * </pre>
 * DEVICES is a comma-separated list (default {@code cpu}); RESULTS_JSON defaults to {@code results.json} beside
 * EXPECTED_JSON. Prints one row per device, model and prompt and exits with status 1 when any row fails.
 *
 * <p>Tolerances (max absolute difference over every position's logits): the CPU backend computes in F32
 * whatever the weights' dtype, so 1e-4 for every case. The CUDA backend keeps F32 activations, but its matmul
 * rounds activations to the weight dtype: with F32 weights it is F32 throughout (1e-3, for a different
 * summation order); with BF16 weights each product sees BF16 inputs, so 2^-5 of the largest logit.
 */
public final class LogitsComparison {
    static final double CPU_TOLERANCE = 1e-4;
    static final double CUDA_F32_TOLERANCE = 1e-3;
    static final double CUDA_BF16_RELATIVE_TOLERANCE = 1.0 / 32;

    /** One device × model × prompt comparison. */
    record Row(String device, String model, String weights, int prompt, int positions, double maxAbsDiff,
               double tolerance, boolean greedyMatch, int firstDivergence, double referenceGapAtDivergence,
               Boolean tokenizationMatch, boolean pass, String note) {}

    private LogitsComparison() {}

    public static void main(String[] args) throws IOException {
        ComparisonMain.main(args, "LogitsComparison", "results.json", LogitsComparison::run, LogitsComparison::printTable, LogitsComparison::json, Row::pass);
    }

    /** Runs every comparison that expected.json lists on each device. */
    public static List<Row> run(Path expectedJson, List<String> devices) throws IOException {
        JsonNode root = new ObjectMapper().readTree(expectedJson.toFile());
        Path dir = expectedJson.toAbsolutePath().getParent();
        int greedyTokens = root.path("greedy_tokens").asInt(32);
        List<Row> rows = new ArrayList<>();
        try (SafetensorsFile logits = SafetensorsFile.open(dir.resolve(root.path("logits_file").asText()))) {
            for (String device : devices) {
                List<String> notices = new ArrayList<>();
                try (Backend backend = Backends.open(device.trim(), notices::add)) {
                    if (!backend.name().equals(device.trim())) {
                        rows.add(new Row(device, "-", "-", 0, 0, Double.NaN, 0, false, -1, Double.NaN, null, false,
                                "device unavailable: " + String.join("; ", notices)));
                        continue;
                    }
                    for (JsonNode c : root.path("cases")) {
                        rows.addAll(compareCase(backend, dir.resolve(c.path("folder").asText()), c, logits, greedyTokens));
                    }
                }
            }
        }
        return rows;
    }

    private static List<Row> compareCase(Backend backend, Path folder, JsonNode c, SafetensorsFile logits,
                                         int greedyTokens) throws IOException {
        List<Row> rows = new ArrayList<>();
        String name = c.path("name").asText();
        try (ModelFolder mf = ModelFolder.open(folder)) {
            LlamaShape shape = LlamaShape.of(mf.config());
            Tokenizer tokenizer = mf.hasTokenizer() ? Tokenizer.load(folder) : null;
            try (LlamaModel model = new LlamaModel(backend, LlamaWeightLoader.load(mf.weights(), shape, backend));
                 Generator generator = new Generator(model, null, Set.of())) {
                DType weights = model.weights().storageType();
                int p = 0;
                for (JsonNode prompt : c.path("prompts")) {
                    int[] ids = ints(prompt.path("ids"));
                    int[] hfGreedy = ints(prompt.path("greedy"));
                    int[] seq = concat(ids, hfGreedy);
                    float[][] ours;
                    try (KvCache cache = model.newCache(seq.length)) {
                        ours = model.allLogits(seq, 0, cache);
                    }
                    String key = prompt.path("logits").asText();
                    MemorySegment expected = logits.data(key);
                    TensorInfo info = logits.info(key);
                    if (info.dtype() != DType.F32 || info.dim(0) != seq.length || info.dim(1) != shape.vocabSize()) {
                        throw new IOException("expected logits " + key + " are " + info + "; want F32[" + seq.length
                                + ", " + shape.vocabSize() + "]");
                    }
                    double maxDiff = 0, maxLogit = 0;
                    int vocab = shape.vocabSize();
                    for (int i = 0; i < seq.length; i++) {
                        for (int j = 0; j < vocab; j++) {
                            float e = expected.getAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, (long) i * vocab + j);
                            maxDiff = Math.max(maxDiff, Math.abs(ours[i][j] - e));
                            maxLogit = Math.max(maxLogit, Math.abs(e));
                        }
                    }
                    int[] ourGreedy = generator.greedyTokens(ids, Math.min(greedyTokens, hfGreedy.length));
                    int diverge = -1;
                    for (int k = 0; k < hfGreedy.length; k++) {
                        if (k >= ourGreedy.length || ourGreedy[k] != hfGreedy[k]) { diverge = k; break; }
                    }
                    double gap = Double.NaN;
                    if (diverge >= 0 && diverge < ourGreedy.length) {
                        long row = (long) (ids.length + diverge - 1) * vocab;
                        gap = expected.getAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, row + hfGreedy[diverge])
                                - expected.getAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, row + ourGreedy[diverge]);
                    }
                    Boolean tokensMatch = null;
                    if (tokenizer != null && prompt.hasNonNull("text")) {
                        tokensMatch = Arrays.equals(tokenizer.encode(prompt.path("text").asText()), ids);
                    }
                    double tolerance = tolerance(backend, weights, maxLogit);
                    // A greedy path may part from the reference only where the reference itself nearly tied.
                    boolean greedyOk = diverge < 0 || gap <= 2 * tolerance;
                    boolean pass = maxDiff <= tolerance && greedyOk && !Boolean.FALSE.equals(tokensMatch);
                    String note = diverge < 0 ? "" : "greedy parts at token " + diverge
                            + String.format(Locale.ROOT, " (reference logit gap %.2e)", gap);
                    rows.add(new Row(backend.name(), name, weights.name(), p, seq.length, maxDiff, tolerance,
                            diverge < 0, diverge, gap, tokensMatch, pass, note));
                    p++;
                }
            }
        }
        return rows;
    }

    static double tolerance(Backend backend, DType weights, double maxAbsLogit) {
        if (backend.name().equals("cpu")) return CPU_TOLERANCE;
        // BF16 activations round like BF16 weights do: the relative tolerance of BF16.
        if (weights == DType.F32 && backend.activationType() == DType.F32) return CUDA_F32_TOLERANCE;
        return CUDA_BF16_RELATIVE_TOLERANCE * Math.max(1, maxAbsLogit);
    }

    private static void printTable(List<Row> rows) {
        System.out.printf(Locale.ROOT, "%-6s %-14s %-5s %-3s %5s %11s %10s %-7s %-6s %-4s %s%n", "device", "model",
                "wts", "p", "pos", "max|dlogit|", "tolerance", "greedy", "tokens", "ok", "note");
        for (Row r : rows) {
            System.out.printf(Locale.ROOT, "%-6s %-14s %-5s %-3d %5d %11.3e %10.1e %-7s %-6s %-4s %s%n", r.device(),
                    r.model(), r.weights(), r.prompt(), r.positions(), r.maxAbsDiff(), r.tolerance(),
                    r.greedyMatch() ? "same" : "DIFF", r.tokenizationMatch() == null ? "-" : r.tokenizationMatch() ? "same" : "DIFF",
                    r.pass() ? "PASS" : "FAIL", r.note());
        }
        long failed = rows.stream().filter(r -> !r.pass()).count();
        System.out.println(failed == 0 ? "all " + rows.size() + " comparisons pass" : failed + " of " + rows.size() + " comparisons FAIL");
    }

    /** One row as the results JSON has it. */
    private static Map<String, Object> json(Row r) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("device", r.device());
        m.put("model", r.model());
        m.put("weights", r.weights());
        m.put("prompt", r.prompt());
        m.put("positions", r.positions());
        m.put("max_abs_diff", Double.isNaN(r.maxAbsDiff()) ? null : r.maxAbsDiff());
        m.put("tolerance", r.tolerance());
        m.put("greedy_match", r.greedyMatch());
        m.put("first_divergence", r.firstDivergence());
        m.put("reference_gap_at_divergence", Double.isNaN(r.referenceGapAtDivergence()) ? null : r.referenceGapAtDivergence());
        m.put("tokenization_match", r.tokenizationMatch());
        m.put("pass", r.pass());
        m.put("note", r.note());
        return m;
    }

    private static int[] ints(JsonNode array) {
        int[] out = new int[array.size()];
        for (int i = 0; i < out.length; i++) out[i] = array.get(i).asInt();
        return out;
    }

    private static int[] concat(int[] a, int[] b) {
        int[] out = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, out, a.length, b.length);
        return out;
    }
}
