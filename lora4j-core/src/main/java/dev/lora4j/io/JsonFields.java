package dev.lora4j.io;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * Typed reads of one JSON object's fields, each failure a {@link ConfigFormatException} naming the source file,
 * the field and the expected type. An absent field and a JSON null both read as "not given".
 */
final class JsonFields {

    static final ObjectMapper JSON = new ObjectMapper();

    private final JsonNode object;
    private final String source;
    private final String prefix;

    private JsonFields(JsonNode object, String source, String prefix) {
        this.object = object;
        this.source = source;
        this.prefix = prefix;
    }

    /** Parses {@code json}, which must be an object. */
    static JsonFields parse(String json, String source) throws ConfigFormatException {
        JsonNode root;
        try {
            root = JSON.readTree(json);
        } catch (JsonProcessingException e) {
            String where = e.getLocation() == null ? ""
                    : " at line " + e.getLocation().getLineNr() + ", column " + e.getLocation().getColumnNr();
            throw new ConfigFormatException(source + " is not valid JSON" + where + ": " + e.getOriginalMessage(), e);
        }
        if (root == null || !root.isObject()) {
            throw new ConfigFormatException(source + " must hold a JSON object {...}, found " + kind(root));
        }
        return new JsonFields(root, source, "");
    }

    String source() {
        return source;
    }

    boolean has(String field) {
        JsonNode n = object.get(field);
        return n != null && !n.isNull();
    }

    /** Present in the object, even as null. */
    boolean hasKey(String field) {
        return object.has(field);
    }

    /** The nested object {@code field}, or null when absent or null. */
    JsonFields object(String field) throws ConfigFormatException {
        JsonNode n = object.get(field);
        if (n == null || n.isNull()) return null;
        if (!n.isObject()) throw wrongType(field, "an object {...}", n);
        return new JsonFields(n, source, prefix + field + ".");
    }

    int requireInt(String field) throws ConfigFormatException {
        Integer v = optInt(field);
        if (v == null) throw missing(field, "an integer");
        return v;
    }

    Integer optInt(String field) throws ConfigFormatException {
        JsonNode n = object.get(field);
        if (n == null || n.isNull()) return null;
        return toInt(field, n);
    }

    int optInt(String field, int fallback) throws ConfigFormatException {
        Integer v = optInt(field);
        return v == null ? fallback : v;
    }

    Double optDouble(String field) throws ConfigFormatException {
        JsonNode n = object.get(field);
        if (n == null || n.isNull()) return null;
        if (!n.isNumber()) throw wrongType(field, "a number", n);
        double v = n.doubleValue();
        if (!Double.isFinite(v)) throw wrongType(field, "a finite number", n);
        return v;
    }

    double optDouble(String field, double fallback) throws ConfigFormatException {
        Double v = optDouble(field);
        return v == null ? fallback : v;
    }

    Boolean optBoolean(String field) throws ConfigFormatException {
        JsonNode n = object.get(field);
        if (n == null || n.isNull()) return null;
        if (!n.isBoolean()) throw wrongType(field, "true or false", n);
        return n.booleanValue();
    }

    boolean optBoolean(String field, boolean fallback) throws ConfigFormatException {
        Boolean v = optBoolean(field);
        return v == null ? fallback : v;
    }

    String optString(String field) throws ConfigFormatException {
        JsonNode n = object.get(field);
        if (n == null || n.isNull()) return null;
        if (!n.isTextual()) throw wrongType(field, "a string", n);
        return n.textValue();
    }

    List<String> optStringList(String field) throws ConfigFormatException {
        JsonNode n = object.get(field);
        if (n == null || n.isNull()) return null;
        if (!n.isArray()) throw wrongType(field, "a list of strings", n);
        List<String> out = new ArrayList<>();
        for (int i = 0; i < n.size(); i++) {
            if (!n.get(i).isTextual()) throw wrongType(field + "[" + i + "]", "a string", n.get(i));
            out.add(n.get(i).textValue());
        }
        return out;
    }

    /** An integer or a list of integers, as Hugging Face writes eos_token_id; null when absent or null. */
    List<Integer> optIntOrIntList(String field) throws ConfigFormatException {
        JsonNode n = object.get(field);
        if (n == null || n.isNull()) return null;
        List<Integer> out = new ArrayList<>();
        if (n.isArray()) {
            for (int i = 0; i < n.size(); i++) out.add(toInt(field + "[" + i + "]", n.get(i)));
        } else if (n.isNumber()) {
            out.add(toInt(field, n));
        } else {
            throw wrongType(field, "an integer or a list of integers", n);
        }
        return out;
    }

    private Integer toInt(String field, JsonNode n) throws ConfigFormatException {
        if (!n.isIntegralNumber()) throw wrongType(field, "an integer", n);
        if (!n.canConvertToInt()) throw wrongType(field, "an integer that fits in 32 bits", n);
        return n.intValue();
    }

    ConfigFormatException missing(String field, String expected) {
        return new ConfigFormatException(source + ": required field \"" + prefix + field + "\" (" + expected
                + ") is missing");
    }

    ConfigFormatException wrongType(String field, String expected, JsonNode found) {
        return new ConfigFormatException(source + ": field \"" + prefix + field + "\" must be " + expected + ", found "
                + kind(found));
    }

    ConfigFormatException invalid(String field, String problem) {
        return new ConfigFormatException(source + ": field \"" + prefix + field + "\" " + problem);
    }

    static String kind(JsonNode n) {
        if (n == null || n.isMissingNode()) return "nothing";
        if (n.isNull()) return "null";
        if (n.isTextual()) {
            String s = n.textValue();
            return "the string \"" + (s.length() <= 60 ? s : s.substring(0, 57) + "...") + "\"";
        }
        if (n.isNumber()) return "the number " + n.asText();
        if (n.isBoolean()) return "the boolean " + n.asText();
        if (n.isArray()) return "a list";
        if (n.isObject()) return "an object";
        return n.getNodeType().toString().toLowerCase(Locale.ROOT);
    }
}
