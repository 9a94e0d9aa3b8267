package dev.lora4j.io;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.StreamReadConstraints;
import com.fasterxml.jackson.core.StreamReadFeature;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.lora4j.tensor.DType;

import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CoderResult;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;

/**
 * The parsed and validated JSON header of a safetensors file: its tensors in header order and its
 * {@code __metadata__}. Validation follows the reference (Rust) implementation: every entry well-formed, byte
 * lengths matching shapes, and the tensors covering the data section exactly, without holes or overlaps.
 */
record SafetensorsHeader(List<TensorInfo> tensors, Map<String, String> metadata) {

    /** The reference implementation's limit; a larger header is damage, not a model. */
    static final long MAX_HEADER_BYTES = 100_000_000L;

    static final String METADATA_KEY = "__metadata__";

    private static final String DAMAGED = "The file is damaged or was not written completely: download or export it again.";

    private static final ObjectMapper JSON = new ObjectMapper(JsonFactory.builder()
            .enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION)
            // Headers may legitimately hold long names and metadata strings (up to the header limit itself).
            .streamReadConstraints(StreamReadConstraints.builder()
                    .maxStringLength((int) MAX_HEADER_BYTES)
                    .maxNameLength((int) MAX_HEADER_BYTES)
                    .build())
            .build())
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
            .enable(DeserializationFeature.FAIL_ON_READING_DUP_TREE_KEY);

    SafetensorsHeader {
        tensors = List.copyOf(tensors);
        metadata = Collections.unmodifiableMap(new LinkedHashMap<>(metadata));
    }

    /**
     * Parses {@code headerBytes} (the N bytes after the length prefix) of {@code file}, whose data section is
     * {@code dataLength} bytes long.
     */
    static SafetensorsHeader parse(Path file, byte[] headerBytes, long dataLength) throws SafetensorsFormatException {
        String text = decodeUtf8(file, headerBytes);
        JsonNode root;
        try {
            root = JSON.readTree(text);
        } catch (JsonProcessingException e) {
            String what = e.getOriginalMessage() != null && e.getOriginalMessage().startsWith("Duplicate")
                    ? "the JSON header has a duplicate key" : "the JSON header is not valid JSON";
            String where = e.getLocation() == null ? ""
                    : " (line " + e.getLocation().getLineNr() + ", column " + e.getLocation().getColumnNr() + ")";
            throw fail(file, what + where + ": " + e.getOriginalMessage(), e);
        } catch (RuntimeException e) {
            // Not expected from the parser, but a damaged file must never surface as anything but a format error.
            throw fail(file, "the JSON header could not be parsed: " + e, e);
        }
        if (root == null || root.isMissingNode()) {
            throw fail(file, "the JSON header is empty; it must be an object {\"tensor name\": {...}}");
        }
        if (!root.isObject()) {
            throw fail(file, "the JSON header must be an object {\"tensor name\": {...}}, found " + kind(root));
        }
        Map<String, String> metadata = new LinkedHashMap<>();
        List<TensorInfo> tensors = new ArrayList<>();
        for (Map.Entry<String, JsonNode> e : root.properties()) {
            if (e.getKey().equals(METADATA_KEY)) {
                readMetadata(file, e.getValue(), metadata);
            } else {
                tensors.add(readTensor(file, e.getKey(), e.getValue(), dataLength));
            }
        }
        checkCoverage(file, tensors, dataLength);
        return new SafetensorsHeader(tensors, metadata);
    }

    private static String decodeUtf8(Path file, byte[] bytes) throws SafetensorsFormatException {
        try {
            return StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(bytes)).toString();
        } catch (CharacterCodingException e) {
            int at = firstInvalidUtf8(bytes);
            throw fail(file, "the JSON header is not valid UTF-8 (invalid byte sequence at header byte " + at + ")", e);
        }
    }

    /** Where decoding fails, found with a small output buffer so that a 100 MB header costs no 100 MB copy. */
    private static int firstInvalidUtf8(byte[] bytes) {
        var decoder = StandardCharsets.UTF_8.newDecoder()
                .onMalformedInput(CodingErrorAction.REPORT).onUnmappableCharacter(CodingErrorAction.REPORT);
        ByteBuffer in = ByteBuffer.wrap(bytes);
        CharBuffer out = CharBuffer.allocate(4096);
        while (true) {
            CoderResult r = decoder.decode(in, out, true);
            if (r.isError() || r.isUnderflow()) return in.position();
            out.clear();
        }
    }

    private static void readMetadata(Path file, JsonNode node, Map<String, String> into) throws SafetensorsFormatException {
        if (node.isNull()) return;
        if (!node.isObject()) {
            throw fail(file, "\"" + METADATA_KEY + "\" must be an object of string values, found " + kind(node));
        }
        for (Map.Entry<String, JsonNode> m : node.properties()) {
            if (!m.getValue().isTextual()) {
                throw fail(file, "\"" + METADATA_KEY + "\" value for key '" + m.getKey() + "' must be a string, found "
                        + kind(m.getValue()) + " (safetensors metadata maps strings to strings)");
            }
            into.put(m.getKey(), m.getValue().textValue());
        }
    }

    private static TensorInfo readTensor(Path file, String name, JsonNode node, long dataLength)
            throws SafetensorsFormatException {
        String t = "tensor '" + name + "'";
        if (!node.isObject()) {
            throw fail(file, t + ": entry must be an object {\"dtype\", \"shape\", \"data_offsets\"}, found " + kind(node));
        }
        JsonNode dtypeNode = node.get("dtype");
        if (dtypeNode == null || !dtypeNode.isTextual()) {
            throw fail(file, t + ": \"dtype\" must be a string such as \"BF16\", found " + kind(dtypeNode));
        }
        DType dtype = dtypeOf(dtypeNode.textValue());
        if (dtype == null) {
            throw fail(file, t + ": unknown dtype '" + dtypeNode.textValue() + "'; lora4j reads "
                    + Arrays.stream(DType.values()).map(DType::safetensorsName).collect(Collectors.joining(", ")));
        }
        JsonNode shapeNode = node.get("shape");
        if (shapeNode == null || !shapeNode.isArray()) {
            throw fail(file, t + ": \"shape\" must be an array of non-negative integers, found " + kind(shapeNode));
        }
        long[] shape = new long[shapeNode.size()];
        for (int i = 0; i < shape.length; i++) {
            shape[i] = nonNegativeLong(file, t + ": \"shape\" dimension " + i, shapeNode.get(i));
        }
        long numel = 1;
        long bytes;
        try {
            for (long d : shape) numel = Math.multiplyExact(numel, d);
            bytes = dtype.bytesFor(numel);
        } catch (ArithmeticException e) {
            throw fail(file, t + ": shape " + Arrays.toString(shape) + " has more elements than a file can hold (overflow)");
        }
        JsonNode offsets = node.get("data_offsets");
        if (offsets == null || !offsets.isArray() || offsets.size() != 2) {
            throw fail(file, t + ": \"data_offsets\" must be an array of two integers [begin, end], found "
                    + (offsets != null && offsets.isArray() ? "an array of " + offsets.size() : kind(offsets)));
        }
        long begin = nonNegativeLong(file, t + ": \"data_offsets\" begin", offsets.get(0));
        long end = nonNegativeLong(file, t + ": \"data_offsets\" end", offsets.get(1));
        if (end < begin) {
            throw fail(file, t + ": \"data_offsets\" [" + begin + ", " + end + "] ends before it begins");
        }
        if (end > dataLength) {
            throw fail(file, t + ": \"data_offsets\" [" + begin + ", " + end + "] reach past the end of the data section ("
                    + dataLength + " bytes): the file is truncated. " + DAMAGED);
        }
        if (end - begin != bytes) {
            throw fail(file, t + ": \"data_offsets\" [" + begin + ", " + end + "] span " + (end - begin) + " bytes but "
                    + dtype.safetensorsName() + Arrays.toString(shape) + " needs " + bytes + " bytes");
        }
        return new TensorInfo(name, dtype, shape, begin, end);
    }

    /** Only the exact safetensors names: torch spellings in a header would be a writer's bug. */
    private static DType dtypeOf(String name) {
        for (DType d : DType.values()) {
            if (d.safetensorsName().equals(name)) return d;
        }
        return null;
    }

    private static long nonNegativeLong(Path file, String what, JsonNode n) throws SafetensorsFormatException {
        if (n == null || !n.isIntegralNumber()) {
            throw fail(file, what + " must be a non-negative integer, found " + kind(n));
        }
        if (!n.canConvertToLong() || n.longValue() < 0) {
            throw fail(file, what + " must be a non-negative integer that fits in 63 bits, found " + n.asText());
        }
        return n.longValue();
    }

    /** The data section must be tiled by the tensors exactly, as the reference implementation requires. */
    private static void checkCoverage(Path file, List<TensorInfo> tensors, long dataLength) throws SafetensorsFormatException {
        List<TensorInfo> sorted = new ArrayList<>(tensors);
        sorted.sort(Comparator.comparingLong(TensorInfo::dataBegin).thenComparingLong(TensorInfo::dataEnd));
        long expected = 0;
        TensorInfo previous = null;
        for (TensorInfo t : sorted) {
            if (t.dataBegin() > expected) {
                throw fail(file, "bytes [" + expected + ", " + t.dataBegin() + ") of the data section belong to no tensor"
                        + " (a hole before tensor '" + t.name() + "'); safetensors requires the tensors to cover the data"
                        + " section exactly. " + DAMAGED);
            }
            if (t.dataBegin() < expected) {
                throw fail(file, "tensor '" + t.name() + "' (data_offsets [" + t.dataBegin() + ", " + t.dataEnd()
                        + "]) overlaps tensor '" + previous.name() + "' ([" + previous.dataBegin() + ", "
                        + previous.dataEnd() + "]). " + DAMAGED);
            }
            expected = t.dataEnd();
            previous = t;
        }
        if (expected != dataLength) {
            throw fail(file, "the data section has " + dataLength + " bytes but the tensors cover only " + expected
                    + " (" + (dataLength - expected) + " trailing bytes belong to no tensor). " + DAMAGED);
        }
    }

    private static String kind(JsonNode n) {
        if (n == null || n.isMissingNode()) return "nothing (the field is missing)";
        if (n.isNull()) return "null";
        if (n.isTextual()) return "the string \"" + abbreviate(n.textValue()) + "\"";
        if (n.isNumber()) return "the number " + abbreviate(n.asText());
        if (n.isBoolean()) return "the boolean " + n.asText();
        if (n.isArray()) return "an array";
        if (n.isObject()) return "an object";
        return n.getNodeType().toString().toLowerCase(java.util.Locale.ROOT);
    }

    private static String abbreviate(String s) {
        return s.length() <= 60 ? s : s.substring(0, 57) + "...";
    }

    static SafetensorsFormatException fail(Path file, String detail) {
        return new SafetensorsFormatException("Invalid safetensors file " + file + ": " + detail);
    }

    static SafetensorsFormatException fail(Path file, String detail, Throwable cause) {
        return new SafetensorsFormatException("Invalid safetensors file " + file + ": " + detail, cause);
    }

    /** For {@link SafetensorsWriter}: the header JSON of the given tensors and metadata. */
    static ObjectNode toJson(List<TensorInfo> tensors, Map<String, String> metadata) {
        ObjectNode root = JSON.createObjectNode();
        if (!metadata.isEmpty()) {
            ObjectNode m = root.putObject(METADATA_KEY);
            metadata.forEach(m::put);
        }
        for (TensorInfo t : tensors) {
            ObjectNode e = root.putObject(t.name());
            e.put("dtype", t.dtype().safetensorsName());
            var shape = e.putArray("shape");
            for (long d : t.shape()) shape.add(d);
            e.putArray("data_offsets").add(t.dataBegin()).add(t.dataEnd());
        }
        return root;
    }

    static byte[] serialize(ObjectNode root) {
        try {
            return JSON.writeValueAsBytes(root);
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("cannot serialize a safetensors header", e);
        }
    }
}
