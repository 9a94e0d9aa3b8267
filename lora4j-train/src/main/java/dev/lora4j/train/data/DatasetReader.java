package dev.lora4j.train.data;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonLocation;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.core.StreamReadFeature;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.ObjectReader;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * Reads a dataset file into records, as Hugging Face's {@code datasets} JSON loader accepts them: JSON Lines (one
 * object per line; blank lines are skipped) or one JSON array of objects. A {@code .json} file that does not start
 * with {@code [} is read as JSON Lines, as {@code datasets} does. Text must be UTF-8 (a BOM is allowed). Any problem
 * is a {@link DatasetFormatException} naming the file, the line and what is wrong; nothing else escapes.
 */
public final class DatasetReader {
    private static final ObjectMapper JSON = mapper();
    /** Reads one element of an array in place: what follows it is the rest of the array, not trailing junk. */
    private static final ObjectReader ELEMENT = JSON.readerFor(JsonNode.class).without(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);

    private DatasetReader() {}

    private static ObjectMapper mapper() {
        JsonFactory factory = JsonFactory.builder()
                .enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION)
                .build();
        return new ObjectMapper(factory).enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);
    }

    /** Reads a dataset file, or a dataset that ships with lora4j when the path is {@code bundled:<name>}. */
    public static List<DatasetRecord> read(Path file) {
        String name = file.toString();
        if (BundledDatasets.isBundled(name)) return BundledDatasets.read(name);
        byte[] bytes;
        try {
            bytes = Files.readAllBytes(file);
        } catch (NoSuchFileException e) {
            throw new DatasetFormatException(name, 0, "no such file; check the path of the dataset (lora4j reads local .jsonl"
                    + " or .json files, not dataset names of the Hugging Face Hub: export those with datasets' to_json)");
        } catch (IOException e) {
            throw new DatasetFormatException(name, 0, "cannot be read: " + e.getMessage(), e);
        } catch (OutOfMemoryError e) {
            throw new DatasetFormatException(name, 0, "is too large to read into memory; split it into several files");
        }
        return parse(name, bytes);
    }

    /** Parses a dataset held in memory; {@code name} is what messages call it (a .json name selects arrays). */
    public static List<DatasetRecord> parse(String name, byte[] bytes) {
        String lower = name.toLowerCase(Locale.ROOT);
        if (!lower.endsWith(".jsonl") && !lower.endsWith(".json") && !lower.endsWith(".ndjson")) {
            throw new DatasetFormatException(name, 0, "unsupported dataset file: use JSON Lines (.jsonl, one JSON object"
                    + " per line) or a JSON array of objects (.json)");
        }
        int start = hasBom(bytes) ? 3 : 0;
        int first = start;
        while (first < bytes.length && isJsonWhitespace(bytes[first])) first++;
        if (first == bytes.length) throw new DatasetFormatException(name, 0, "is empty; a dataset needs at least one record");
        List<DatasetRecord> records = bytes[first] == '[' ? parseArray(name, bytes, start) : parseLines(name, bytes, start);
        if (records.isEmpty()) throw new DatasetFormatException(name, 0, "has no records; a dataset needs at least one");
        return records;
    }

    private static List<DatasetRecord> parseLines(String name, byte[] bytes, int start) {
        List<DatasetRecord> records = new ArrayList<>();
        CharsetDecoder utf8 = StandardCharsets.UTF_8.newDecoder()
                .onMalformedInput(CodingErrorAction.REPORT).onUnmappableCharacter(CodingErrorAction.REPORT);
        int lineNo = 0;
        int at = start;
        while (at < bytes.length) {
            int end = at;
            while (end < bytes.length && bytes[end] != '\n') end++;
            lineNo++;
            String line = decode(utf8, bytes, at, end, name, lineNo);
            at = end + 1;
            if (line.isBlank()) continue;
            JsonNode node;
            try {
                node = JSON.readTree(line);
            } catch (JsonProcessingException e) {
                throw new DatasetFormatException(name, lineNo, "not valid JSON" + column(e) + ": " + e.getOriginalMessage()
                        + " (each line of a .jsonl file must be one complete JSON object)");
            } catch (RuntimeException e) {
                throw new DatasetFormatException(name, lineNo, "not valid JSON: " + e.getMessage());
            }
            if (node == null || !node.isObject()) {
                throw new DatasetFormatException(name, lineNo, "each line must be a JSON object {...}, found " + kind(node));
            }
            records.add(new DatasetRecord(name, lineNo, node));
        }
        return records;
    }

    private static List<DatasetRecord> parseArray(String name, byte[] bytes, int start) {
        List<DatasetRecord> records = new ArrayList<>();
        int line = 0;
        try (JsonParser p = JSON.getFactory().createParser(bytes, start, bytes.length - start)) {
            p.nextToken(); // START_ARRAY, checked by the caller
            while (true) {
                JsonToken t = p.nextToken();
                line = p.currentTokenLocation().getLineNr();
                if (t == JsonToken.END_ARRAY) break;
                if (t == null) throw new DatasetFormatException(name, line, "the JSON array is not closed: the file ends before ']'");
                if (t != JsonToken.START_OBJECT) {
                    throw new DatasetFormatException(name, line, "each element of the JSON array must be an object {...}, found " + describe(t));
                }
                JsonNode node = ELEMENT.readValue(p);
                records.add(new DatasetRecord(name, line, node));
            }
            JsonToken trailing = p.nextToken();
            if (trailing != null) {
                throw new DatasetFormatException(name, p.currentTokenLocation().getLineNr(),
                        "unexpected content after the closing ']' of the JSON array");
            }
        } catch (JsonProcessingException e) {
            JsonLocation loc = e.getLocation();
            int errorLine = loc != null && loc.getLineNr() > 0 ? loc.getLineNr() : line;
            throw new DatasetFormatException(name, errorLine, "not valid JSON" + column(e) + ": " + e.getOriginalMessage());
        } catch (IOException e) {
            throw new DatasetFormatException(name, line, "cannot be parsed: " + e.getMessage(), e);
        } catch (RuntimeException e) {
            if (e instanceof DatasetFormatException d) throw d;
            throw new DatasetFormatException(name, line, "not valid JSON: " + e.getMessage(), e);
        }
        return records;
    }

    private static String decode(CharsetDecoder utf8, byte[] bytes, int from, int to, String name, int lineNo) {
        try {
            CharBuffer chars = utf8.reset().decode(ByteBuffer.wrap(bytes, from, to - from));
            return chars.toString();
        } catch (CharacterCodingException e) {
            int bad = firstInvalidUtf8(bytes, from, to);
            throw new DatasetFormatException(name, lineNo, "not valid UTF-8 text (byte 0x"
                    + String.format("%02X", bytes[bad] & 0xFF) + " at byte " + (bad - from + 1)
                    + " of the line); save the file as UTF-8");
        }
    }

    private static int firstInvalidUtf8(byte[] bytes, int from, int to) {
        CharsetDecoder d = StandardCharsets.UTF_8.newDecoder()
                .onMalformedInput(CodingErrorAction.REPORT).onUnmappableCharacter(CodingErrorAction.REPORT);
        for (int end = from + 1; end <= to; end++) {
            try {
                d.reset().decode(ByteBuffer.wrap(bytes, from, end - from));
            } catch (CharacterCodingException e) {
                // A truncated sequence at the end is only "incomplete"; a malformed one fails where it starts.
                if (e instanceof java.nio.charset.MalformedInputException m && m.getInputLength() > 0) {
                    int at = end - 1;
                    while (at > from && (bytes[at] & 0xC0) == 0x80) at--;
                    return at;
                }
            }
        }
        return from;
    }

    private static String column(JsonProcessingException e) {
        JsonLocation loc = e.getLocation();
        return loc == null || loc.getColumnNr() <= 0 ? "" : " at column " + loc.getColumnNr();
    }

    private static boolean hasBom(byte[] b) {
        return b.length >= 3 && (b[0] & 0xFF) == 0xEF && (b[1] & 0xFF) == 0xBB && (b[2] & 0xFF) == 0xBF;
    }

    private static boolean isJsonWhitespace(byte b) {
        return b == ' ' || b == '\t' || b == '\n' || b == '\r';
    }

    static String kind(JsonNode n) {
        if (n == null || n.isMissingNode()) return "nothing";
        return switch (n.getNodeType()) {
            case ARRAY -> "an array";
            case OBJECT -> "an object";
            case STRING -> "a string";
            case NUMBER -> "a number";
            case BOOLEAN -> "a boolean";
            case NULL -> "null";
            default -> n.getNodeType().toString().toLowerCase(Locale.ROOT);
        };
    }

    private static String describe(JsonToken t) {
        return switch (t) {
            case START_ARRAY -> "an array";
            case VALUE_STRING -> "a string";
            case VALUE_NUMBER_INT, VALUE_NUMBER_FLOAT -> "a number";
            case VALUE_TRUE, VALUE_FALSE -> "a boolean";
            case VALUE_NULL -> "null";
            default -> t.asString() == null ? t.name() : "'" + t.asString() + "'";
        };
    }
}
