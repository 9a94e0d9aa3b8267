package dev.lora4j.train.metrics;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.BufferedWriter;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * {@code metrics.jsonl}: one JSON object per logged event ({"step": 10, "epoch": 0.5, "loss": 2.31, ...}),
 * flushed line by line so that a killed run keeps everything it logged.
 */
public final class MetricsLog implements AutoCloseable {
    private static final ObjectMapper JSON = new ObjectMapper();

    private final BufferedWriter out;

    private MetricsLog(BufferedWriter out) {
        this.out = out;
    }

    /** Starts a new log, replacing any file there. */
    public static MetricsLog create(Path file) throws IOException {
        return new MetricsLog(Files.newBufferedWriter(file, StandardCharsets.UTF_8));
    }

    /**
     * Continues the log of a resumed run: lines about steps after {@code resumedStep} (logged by the interrupted
     * run after its last checkpoint, and about to be logged again) are dropped first.
     */
    public static MetricsLog resume(Path file, long resumedStep) throws IOException {
        List<String> kept = new ArrayList<>();
        if (Files.exists(file)) {
            for (String line : Files.readAllLines(file, StandardCharsets.UTF_8)) {
                if (line.isBlank()) continue;
                JsonNode node;
                try {
                    node = JSON.readTree(line);
                } catch (IOException e) {
                    continue; // a line cut short by the kill
                }
                if (node != null && node.path("step").asLong(Long.MAX_VALUE) <= resumedStep) kept.add(line);
            }
        }
        BufferedWriter out = Files.newBufferedWriter(file, StandardCharsets.UTF_8, StandardOpenOption.CREATE,
                StandardOpenOption.TRUNCATE_EXISTING, StandardOpenOption.WRITE);
        for (String line : kept) {
            out.write(line);
            out.write('\n');
        }
        out.flush();
        return new MetricsLog(out);
    }

    /** Writes one line; values are numbers (NaN and infinities as strings, which JSON cannot hold) or strings. */
    public void write(Map<String, ?> record) throws IOException {
        ObjectNode node = JSON.createObjectNode();
        for (Map.Entry<String, ?> e : record.entrySet()) {
            Object v = e.getValue();
            switch (v) {
                case null -> node.putNull(e.getKey());
                case Integer i -> node.put(e.getKey(), i);
                case Long l -> node.put(e.getKey(), l);
                case Number n when Double.isFinite(n.doubleValue()) -> node.put(e.getKey(), n.doubleValue());
                case Number n -> node.put(e.getKey(), String.valueOf(n.doubleValue()));
                default -> node.put(e.getKey(), v.toString());
            }
        }
        out.write(JSON.writeValueAsString(node));
        out.write('\n');
        out.flush();
    }

    @Override
    public void close() throws IOException {
        out.close();
    }
}
