package dev.lora4j.train.bench;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;

/**
 * One line of the reference benchmark's output ({@code reference/hf_peft_bench.py} prints
 * {@code RESULT {json}}): the configuration it ran and its figures, or the error that stopped it (bitsandbytes
 * missing, out of memory).
 */
public record ReferenceResult(String shape, String mode, boolean gc, int microBatch, int seq, int accum, int rank,
                              double samplesPerSecond, double tokensPerSecond, double peakGib, double loadGib,
                              double loss, long trainableParameters, String torch, String error, JsonNode json) {

    private static final ObjectMapper JSON = new ObjectMapper();

    /**
     * Reads every result line of a file: lines that start with {@code RESULT } or are JSON objects; other lines (the
     * script's warnings, a shell's echo) are skipped. A result line that is not valid JSON is an error naming it.
     */
    public static List<ReferenceResult> read(Path file) throws IOException {
        List<ReferenceResult> results = new ArrayList<>();
        List<String> lines = Files.readAllLines(file);
        for (int i = 0; i < lines.size(); i++) {
            String line = lines.get(i).strip();
            int at = line.indexOf("RESULT {");
            String json = at >= 0 ? line.substring(at + "RESULT ".length()) : line.startsWith("{") ? line : null;
            if (json == null) continue;
            JsonNode node;
            try {
                node = JSON.readTree(json);
            } catch (JsonProcessingException e) {
                throw new IOException(file + ", line " + (i + 1) + ": not a JSON result line of hf_peft_bench.py ("
                        + e.getOriginalMessage() + ")");
            }
            if (!node.isObject() || !node.has("mode")) {
                throw new IOException(file + ", line " + (i + 1) + ": a result of hf_peft_bench.py has a \"mode\" field;"
                        + " this line has none");
            }
            results.add(of(node));
        }
        if (results.isEmpty()) {
            throw new IOException(file + " holds no result of hf_peft_bench.py (lines starting with \"RESULT {\")");
        }
        return results;
    }

    static ReferenceResult of(JsonNode n) {
        return new ReferenceResult(text(n, "shape"), text(n, "mode"), n.path("gc").asBoolean(false),
                n.path("micro_batch").asInt(4), n.path("seq").asInt(1024), n.path("accum").asInt(4), n.path("rank").asInt(16),
                number(n, "samples_per_s"), number(n, "tokens_per_s"), number(n, "peak_gib"), number(n, "load_gib"),
                number(n, "loss"), n.path("trainable_params").asLong(0), text(n, "torch"), text(n, "error"), n);
    }

    private static String text(JsonNode n, String field) {
        JsonNode v = n.get(field);
        return v == null || v.isNull() ? null : v.asText();
    }

    private static double number(JsonNode n, String field) {
        JsonNode v = n.get(field);
        return v == null || !v.isNumber() ? Double.NaN : v.asDouble();
    }

    public boolean failed() {
        return error != null || Double.isNaN(samplesPerSecond);
    }

    /** Whether this reference line ran the same workload as the configuration of {@code r}. */
    public boolean matches(BenchResult r) {
        BenchSettings s = r.settings();
        String ours = s.referenceMode();
        if (ours == null || !ours.equals(mode)) return false;
        if (shape != null && r.shape() != null && !shape.equals(r.shape())) return false;
        if (gc != s.gradientCheckpointing() || microBatch != s.microBatch() || seq != s.seq() || accum != s.accum()) return false;
        return s.method() == BenchMethod.FULL || rank == s.rank();
    }

    /** The last of these lines that ran the workload of {@code r}, or null. */
    public static ReferenceResult find(List<ReferenceResult> references, BenchResult r) {
        ReferenceResult found = null;
        for (ReferenceResult ref : Objects.requireNonNullElse(references, List.<ReferenceResult>of())) {
            if (ref.matches(r)) found = ref;
        }
        return found;
    }
}
