package dev.lora4j.tokenizer;

import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/** Public-domain English from shared/assets/text, for round-trip and speed checks. */
final class TextAssets {
    private TextAssets() {}

    /** Up to n records: Moby-Dick chapters, then State of the Union addresses. */
    static List<String> records(int n) {
        List<String> out = new ArrayList<>();
        ObjectMapper json = new ObjectMapper();
        for (String file : List.of("text/moby-dick-chapters.jsonl", "text/sotu-1790-1989.jsonl")) {
            Path p = SharedAssets.require(file);
            try {
                for (String line : Files.readAllLines(p)) {
                    if (out.size() >= n) return out;
                    if (!line.isBlank()) out.add(json.readTree(line).get("text").asText());
                }
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
        return out;
    }

    /** About one megabyte of text. */
    static String megabyte() {
        StringBuilder sb = new StringBuilder();
        for (String r : records(1000)) {
            if (sb.length() >= 1_000_000) break;
            sb.append(r).append("\n\n");
        }
        return sb.toString();
    }
}
