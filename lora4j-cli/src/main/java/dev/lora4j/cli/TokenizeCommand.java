package dev.lora4j.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.lora4j.tokenizer.Tokenizer;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;

@Command(name = "tokenize",
        description = {"Turn text into token ids (one JSON array per input line), or ids back into text (--decode).",
                "Input: the TEXT argument, --file, --jsonl (one JSON object per line, field --field), or stdin."})
final class TokenizeCommand implements Callable<Integer> {
    private static final ObjectMapper JSON = new ObjectMapper();

    @Option(names = {"-m", "--model"}, required = true, description = "Model or tokenizer folder (holds tokenizer.json).")
    Path model;

    @Parameters(arity = "0..1", paramLabel = "TEXT", description = "Text to tokenize (with --decode: ids, as [1,2] or 1 2).")
    String text;

    @Option(names = "--file", description = "Read the whole file as one input.")
    Path file;

    @Option(names = "--jsonl", description = "Read one input per line from a JSONL file.")
    Path jsonl;

    @Option(names = "--field", defaultValue = "text", description = "Field of each JSONL object to read (default: ${DEFAULT-VALUE}; with --decode: ids).")
    String field;

    @Option(names = "--decode", description = "Decode token ids into text instead.")
    boolean decode;

    @Option(names = "--no-special", description = "Do not add BOS/EOS (encode) or drop special tokens (decode).")
    boolean noSpecial;

    @Override
    public Integer call() throws IOException {
        Tokenizer tokenizer = Tokenizer.load(model);
        PrintStream out = new PrintStream(System.out, false, StandardCharsets.UTF_8);
        if (jsonl != null) {
            String f = decode && field.equals("text") ? "ids" : field;
            List<String> lines = Files.readAllLines(jsonl, StandardCharsets.UTF_8);
            for (int i = 0; i < lines.size(); i++) {
                if (lines.get(i).isBlank()) continue;
                JsonNode value = jsonlField(lines.get(i), f, i + 1);
                if (decode) out.println(JSON.writeValueAsString(decodeIds(tokenizer, idsOf(value, jsonl + ":" + (i + 1)))));
                else out.println(JSON.writeValueAsString(encode(tokenizer, value.asText())));
            }
        } else {
            String input = text != null ? text
                    : file != null ? Files.readString(file, StandardCharsets.UTF_8)
                    : readStdin();
            if (decode) {
                out.print(decodeIds(tokenizer, parseIds(input, text != null ? "the TEXT argument" : file != null ? file.toString() : "stdin")));
                out.println();
            } else {
                out.println(JSON.writeValueAsString(encode(tokenizer, input)));
            }
        }
        out.flush();
        return 0;
    }

    private int[] encode(Tokenizer tokenizer, String s) {
        return tokenizer.encode(s, !noSpecial);
    }

    private String decodeIds(Tokenizer tokenizer, int[] ids) {
        return tokenizer.decode(ids, noSpecial);
    }

    private JsonNode jsonlField(String line, String name, int lineNumber) {
        JsonNode node;
        try {
            node = JSON.readTree(line);
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalArgumentException(jsonl + ":" + lineNumber + ": not valid JSON (" + e.getOriginalMessage() + ")");
        }
        JsonNode value = node == null ? null : node.get(name);
        if (value == null || value.isNull()) {
            throw new IllegalArgumentException(jsonl + ":" + lineNumber + ": no field '" + name + "' (choose the field with --field)");
        }
        return value;
    }

    private static int[] idsOf(JsonNode value, String where) {
        if (!value.isArray()) throw new IllegalArgumentException(where + ": expected an array of token ids");
        int[] ids = new int[value.size()];
        for (int i = 0; i < ids.length; i++) {
            if (!value.get(i).canConvertToInt()) throw new IllegalArgumentException(where + ": element " + i + " is not a token id");
            ids[i] = value.get(i).asInt();
        }
        return ids;
    }

    static int[] parseIds(String input, String where) {
        String s = input.strip();
        if (s.startsWith("[")) s = s.substring(1, s.endsWith("]") ? s.length() - 1 : s.length());
        List<Integer> ids = new ArrayList<>();
        for (String part : s.split("[\\s,]+")) {
            if (part.isEmpty()) continue;
            try {
                ids.add(Integer.parseInt(part));
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException(where + ": '" + part + "' is not a token id (give ids as [1, 2, 3] or 1 2 3)");
            }
        }
        return ids.stream().mapToInt(Integer::intValue).toArray();
    }

    private static String readStdin() throws IOException {
        try (BufferedReader r = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
            StringBuilder sb = new StringBuilder();
            char[] buf = new char[8192];
            int n;
            while ((n = r.read(buf)) > 0) sb.append(buf, 0, n);
            return sb.toString();
        }
    }
}
