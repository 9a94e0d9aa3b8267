package dev.lora4j.train;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.lora4j.train.data.DatasetReader;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

/** The public-domain texts of ../shared/assets/text, when present beside the repository. */
final class SharedText {
    private static final ObjectMapper JSON = new ObjectMapper();

    private SharedText() {}

    /** ../shared, found by walking up from the working folder to a folder that has shared/ beside the repository. */
    static Optional<Path> sharedFolder() {
        for (Path p = Path.of("").toAbsolutePath(); p != null; p = p.getParent()) {
            Path candidate = p.resolveSibling("shared");
            if (Files.isDirectory(candidate.resolve("assets/text"))) return Optional.of(candidate);
        }
        return Optional.empty();
    }

    /**
     * Passages of whole sentences (at most {@code maxChars}) from chapter 20 on, which the bundled passages (taken
     * from the first chapters) do not reach.
     */
    static Optional<List<String>> mobyDickPassages(int count, int maxChars) {
        return sharedFolder().map(shared -> {
            List<String> out = new ArrayList<>();
            try {
                for (String line : Files.readAllLines(shared.resolve("assets/text/moby-dick-chapters.jsonl"))) {
                    JsonNode chapter = JSON.readTree(line);
                    if (chapter.path("chapter").asInt(0) < 20) continue;
                    StringBuilder current = new StringBuilder();
                    for (String s : chapter.get("text").asText().replaceAll("\\s+", " ").split("(?<=[.!?]) ")) {
                        if (s.length() > maxChars) continue;
                        if (!current.isEmpty() && current.length() + 1 + s.length() > maxChars) {
                            out.add(current.toString());
                            current.setLength(0);
                        }
                        if (!current.isEmpty()) current.append(' ');
                        current.append(s);
                        if (out.size() == count) return out;
                    }
                }
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
            return out;
        });
    }

    static List<String> bundledPassages() {
        return DatasetReader.read(Path.of("bundled:moby-dick-passages")).stream().limit(60).map(r -> r.fields().get("text").asText()).toList();
    }

    static String textRecord(String text) {
        try {
            return JSON.writeValueAsString(JSON.createObjectNode().put("text", text));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
