package dev.lora4j.model;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import dev.lora4j.io.AtomicFiles;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;

/**
 * Where a training run's device memory went, measured on its backend: the seed article's two columns, "base model
 * memory at load" (the base weights once loaded, before anything for training existed) and "peak training memory"
 * (the backend's peak since it was opened), and the peak split into frozen base weights, trainable weights (the
 * adapters; every weight in full fine-tuning), their gradients, the optimizer's state, the activation buffers and
 * workspace. Workspace is what the measured peak holds beyond the other parts: backend workspaces, the rounding of
 * device allocations, and transient tensors (a layer being quantized while loading, weights merged for generation).
 * So the six parts add up to the peak exactly. All figures are bytes.
 */
public record MemoryReport(String backend, long baseModelMemoryAtLoad, long baseWeights, long trainableWeights,
                           long gradients, long optimizerState, long activations, long workspace,
                           long peakTrainingMemory) {

    /** The file SftTrainer writes into output_dir. */
    public static final String FILE_NAME = "memory_report.json";

    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);
    private static final List<String> KEYS = List.of("base_model_memory_at_load_bytes", "peak_training_memory_bytes",
            "base_weights_bytes", "trainable_weights_bytes", "gradients_bytes", "optimizer_state_bytes",
            "activations_bytes", "workspace_bytes");

    public MemoryReport {
        Objects.requireNonNull(backend, "backend");
        long sum = baseWeights + trainableWeights + gradients + optimizerState + activations + workspace;
        if (sum != peakTrainingMemory) {
            throw new IllegalArgumentException("the parts of a memory report add up to " + sum + " bytes, not to its peak of "
                    + peakTrainingMemory);
        }
    }

    /** A report whose workspace is the measured peak less the other parts. */
    public static MemoryReport of(String backend, long baseModelMemoryAtLoad, long baseWeights, long trainableWeights,
                                  long gradients, long optimizerState, long activations, long peak) {
        long workspace = peak - (baseWeights + trainableWeights + gradients + optimizerState + activations);
        return new MemoryReport(backend, baseModelMemoryAtLoad, baseWeights, trainableWeights, gradients, optimizerState,
                activations, workspace, peak);
    }

    /** The parts of the peak, by the names the table and the JSON use. */
    public Map<String, Long> parts() {
        Map<String, Long> m = new LinkedHashMap<>();
        m.put("base weights", baseWeights);
        m.put("trainable weights", trainableWeights);
        m.put("gradients", gradients);
        m.put("optimizer state", optimizerState);
        m.put("activations", activations);
        m.put("workspace", workspace);
        return m;
    }

    /** A small table for the console, one line per figure. */
    public String table() {
        StringBuilder b = new StringBuilder();
        b.append(String.format(Locale.ROOT, "memory on %s%n", backend));
        line(b, "base model memory at load", baseModelMemoryAtLoad, null);
        line(b, "peak training memory", peakTrainingMemory, null);
        for (Map.Entry<String, Long> e : parts().entrySet()) line(b, "  " + e.getKey(), e.getValue(), peakTrainingMemory);
        return b.toString();
    }

    private static void line(StringBuilder b, String what, long bytes, Long of) {
        String share = of == null || of == 0 ? "" : String.format(Locale.ROOT, "  %5.1f%%", 100.0 * bytes / of);
        b.append(String.format(Locale.ROOT, "  %-28s %12s%s%n", what, human(bytes), share));
    }

    /** 1.23 GiB, 45.6 MiB, 7.8 KiB or 12 B. */
    static String human(long bytes) {
        long a = Math.abs(bytes);
        if (a < 1024) return bytes + " B";
        if (a < 1024L * 1024) return String.format(Locale.ROOT, "%.1f KiB", bytes / 1024.0);
        if (a < 1024L * 1024 * 1024) return String.format(Locale.ROOT, "%.1f MiB", bytes / 1048576.0);
        return String.format(Locale.ROOT, "%.2f GiB", bytes / 1073741824.0);
    }

    public String toJson() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("backend", backend);
        long[] values = {baseModelMemoryAtLoad, peakTrainingMemory, baseWeights, trainableWeights, gradients,
                optimizerState, activations, workspace};
        for (int i = 0; i < KEYS.size(); i++) m.put(KEYS.get(i), values[i]);
        try {
            return JSON.writeValueAsString(m) + "\n";
        } catch (JsonProcessingException e) {
            throw new IllegalStateException(e);
        }
    }

    /** Writes {@link #toJson()} to {@code file} atomically. */
    public void write(Path file) throws IOException {
        AtomicFiles.writeString(file, toJson());
    }

    /** Reads what {@link #write} wrote. */
    public static MemoryReport read(Path file) throws IOException {
        JsonNode n = JSON.readTree(Files.readString(file));
        long[] v = new long[KEYS.size()];
        for (int i = 0; i < v.length; i++) {
            JsonNode x = n.get(KEYS.get(i));
            if (x == null || !x.canConvertToLong()) throw new IOException(file + ": no whole number " + KEYS.get(i));
            v[i] = x.longValue();
        }
        JsonNode backend = n.get("backend");
        try {
            return new MemoryReport(backend == null ? "" : backend.asText(), v[0], v[2], v[3], v[4], v[5], v[6], v[7], v[1]);
        } catch (IllegalArgumentException e) {
            throw new IOException(file + ": " + e.getMessage(), e);
        }
    }
}
