package dev.lora4j.tokenizer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.Test;

import java.io.BufferedReader;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.zip.GZIPInputStream;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * Checks lora4j's tokenizer against the reference library's output recorded by tools/compare_tokenizers.py
 * (see its header for the command). The file's path comes from LORA4J_TOKENIZER_EXPECTED (environment) or
 * -Dlora4j.tokenizer.expected; without it the test is skipped. The report goes to LORA4J_TOKENIZER_RESULTS
 * (or -Dlora4j.tokenizer.results), by default beside the expected file.
 */
class TokenizerComparisonTest {
    private static final int MAX_REPORTED = 200;

    @Test
    void encodesAndDecodesExactlyAsTheReferenceLibrary() throws Exception {
        String expectedPath = setting("LORA4J_TOKENIZER_EXPECTED", "lora4j.tokenizer.expected");
        assumeTrue(expectedPath != null, "skipped: set LORA4J_TOKENIZER_EXPECTED to a file written by tools/compare_tokenizers.py");
        Path expected = Path.of(expectedPath);
        String resultsPath = setting("LORA4J_TOKENIZER_RESULTS", "lora4j.tokenizer.results");
        Path results = resultsPath != null ? Path.of(resultsPath) : expected.resolveSibling(expected.getFileName() + ".results.txt");

        ObjectMapper json = new ObjectMapper();
        Map<String, Tokenizer> tokenizers = new LinkedHashMap<>();
        Map<String, int[]> counts = new LinkedHashMap<>(); // name -> {cases, mismatching cases}
        Map<String, String> versions = new LinkedHashMap<>();
        List<String> mismatches = new ArrayList<>();
        try (BufferedReader r = open(expected)) {
            for (String line; (line = r.readLine()) != null; ) {
                if (line.isBlank()) continue;
                JsonNode c = json.readTree(line);
                if (c.path("kind").asText().equals("tokenizer")) {
                    String name = c.get("name").asText();
                    tokenizers.put(name, Tokenizer.load(resolve(c.get("path").asText())));
                    counts.put(name, new int[2]);
                    versions.put(name, c.path("tokenizers_version").asText("?"));
                    continue;
                }
                String name = c.get("tokenizer").asText();
                Tokenizer t = tokenizers.get(name);
                int[] count = counts.get(name);
                count[0]++;
                List<String> problems = check(t, c);
                if (!problems.isEmpty()) {
                    count[1]++;
                    for (String p : problems) mismatches.add(name + " " + c.get("source").asText() + ": " + p);
                }
            }
        }
        StringBuilder report = new StringBuilder("lora4j tokenizer vs Hugging Face tokenizers, from " + expected + "\n");
        counts.forEach((name, n) -> report.append(String.format("%-12s tokenizers %s: %d cases, %d mismatching%n", name, versions.get(name), n[0], n[1])));
        report.append(mismatches.isEmpty() ? "ALL MATCH\n" : mismatches.size() + " mismatches:\n");
        mismatches.stream().limit(MAX_REPORTED).forEach(m -> report.append(m).append('\n'));
        Files.writeString(results, report);
        System.out.print(report);
        assertThat(counts).isNotEmpty();
        assertThat(mismatches).as("mismatches (report in " + results + ")").isEmpty();
    }

    private static List<String> check(Tokenizer t, JsonNode c) {
        List<String> problems = new ArrayList<>();
        String text = c.get("text").asText();
        int[] ids = ints(c.get("ids"));
        int[] idsSpecial = ints(c.get("ids_special"));
        int[] actual = t.encode(text, false);
        if (!Arrays.equals(actual, ids)) problems.add("encode " + show(text) + " " + firstDifference(ids, actual));
        int[] actualSpecial = t.encode(text, true);
        if (!Arrays.equals(actualSpecial, idsSpecial)) problems.add("encode with special tokens " + show(text) + " " + firstDifference(idsSpecial, actualSpecial));
        String decoded = t.decode(ids, false);
        if (!decoded.equals(c.get("decoded").asText())) problems.add("decode: expected " + show(c.get("decoded").asText()) + " got " + show(decoded));
        String decodedSkip = t.decode(idsSpecial, true);
        if (!decodedSkip.equals(c.get("decoded_skip").asText())) problems.add("decode skipping specials: expected " + show(c.get("decoded_skip").asText()) + " got " + show(decodedSkip));
        JsonNode stream = c.get("stream");
        if (stream != null) {
            StreamingDecoder d = t.streamingDecoder(false);
            for (int i = 0; i < ids.length; i++) {
                String chunk = d.push(ids[i]);
                if (!chunk.equals(stream.get(i).asText())) {
                    problems.add("streaming decode at id " + i + ": expected " + show(stream.get(i).asText()) + " got " + show(chunk));
                    break;
                }
            }
        }
        return problems;
    }

    private static String firstDifference(int[] expected, int[] actual) {
        int i = 0;
        while (i < Math.min(expected.length, actual.length) && expected[i] == actual[i]) i++;
        return "differs at " + i + ": expected " + slice(expected, i) + " got " + slice(actual, i) + " (lengths " + expected.length + " and " + actual.length + ")";
    }

    private static String slice(int[] a, int from) {
        return Arrays.toString(Arrays.copyOfRange(a, Math.min(from, a.length), Math.min(a.length, from + 8)));
    }

    private static String show(String s) {
        String cut = s.length() > 120 ? s.substring(0, 120) + "..." : s;
        return new ObjectMapper().valueToTree(cut).toString();
    }

    private static int[] ints(JsonNode a) {
        int[] out = new int[a.size()];
        for (int i = 0; i < out.length; i++) out[i] = a.get(i).asInt();
        return out;
    }

    private static BufferedReader open(Path p) throws Exception {
        InputStream in = Files.newInputStream(p);
        if (p.toString().endsWith(".gz")) in = new GZIPInputStream(in);
        return new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8));
    }

    /** Tokenizer paths are relative to the repository root; the test may run from the root or from a module. */
    private static Path resolve(String path) {
        Path p = Path.of(path);
        if (p.isAbsolute()) return p;
        for (Path d = Path.of(System.getProperty("user.dir")).toAbsolutePath(); d != null; d = d.getParent()) {
            if (Files.isDirectory(d.resolve(p))) return d.resolve(p);
        }
        return p;
    }

    private static String setting(String env, String property) {
        String v = System.getProperty(property);
        if (v == null || v.isBlank()) v = System.getenv(env);
        return v == null || v.isBlank() ? null : v;
    }
}
