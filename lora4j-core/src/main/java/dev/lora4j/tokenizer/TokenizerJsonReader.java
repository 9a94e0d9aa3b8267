package dev.lora4j.tokenizer;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;

/**
 * Reads the stages of a Hugging Face tokenizer.json (and the few tokenizer_config.json fields that change
 * behaviour). Every complaint names the file and the JSON path of the field at fault.
 */
final class TokenizerJsonReader {
    static final ObjectMapper JSON = new ObjectMapper();
    private static final String FILE = "tokenizer.json";
    private static final String CONFIG = "tokenizer_config.json";

    private TokenizerJsonReader() {}

    static JsonNode parse(String json, String file) {
        if (json == null) throw new TokenizerException(file + ": no content was given");
        try {
            JsonNode node = JSON.readTree(json);
            if (node == null || !node.isObject()) throw new TokenizerException(file + ": expected a JSON object at the top level; is this a Hugging Face " + file + "?");
            return node;
        } catch (JsonProcessingException e) {
            throw new TokenizerException(file + ": not valid JSON (" + e.getOriginalMessage() + " at line "
                    + e.getLocation().getLineNr() + ", column " + e.getLocation().getColumnNr() + "); replace the file with an intact copy", e);
        }
    }

    // ---- model ----

    static BpeModel model(JsonNode root) {
        JsonNode model = root.get("model");
        if (model == null || !model.isObject()) throw new TokenizerException(FILE + ": the field \"model\" is missing; the file must describe its model (BPE)");
        String type = text(model, "type", "model.type", null);
        if (type == null) type = model.has("merges") ? "BPE" : null;
        if (!"BPE".equals(type)) {
            throw new TokenizerException(FILE + ": model.type is \"" + type + "\"; only BPE models are supported (Llama, Mistral, Qwen and GPT-2 families use BPE)");
        }
        JsonNode vocabNode = model.get("vocab");
        if (vocabNode == null || !vocabNode.isObject()) throw new TokenizerException(FILE + ": model.vocab is missing or not an object of token -> id");
        Map<String, Integer> vocab = new HashMap<>(vocabNode.size() * 2);
        for (Map.Entry<String, JsonNode> e : vocabNode.properties()) {
            if (!e.getValue().canConvertToInt() || e.getValue().asInt() < 0) {
                throw new TokenizerException(FILE + ": model.vocab[\"" + e.getKey() + "\"] must be a non-negative integer id, found " + e.getValue());
            }
            vocab.put(e.getKey(), e.getValue().asInt());
        }
        JsonNode mergesNode = model.get("merges");
        if (mergesNode == null || !mergesNode.isArray()) throw new TokenizerException(FILE + ": model.merges is missing or not a list");
        String prefix = text(model, "continuing_subword_prefix", "model.continuing_subword_prefix", null);
        String suffix = text(model, "end_of_word_suffix", "model.end_of_word_suffix", null);
        MergeTable merges = new MergeTable(Math.max(1, mergesNode.size()));
        int rank = 0;
        for (int i = 0; i < mergesNode.size(); i++) {
            JsonNode m = mergesNode.get(i);
            String left, right;
            if (m.isTextual()) {
                String line = m.asText();
                if (line.startsWith("#version")) continue;
                int space = line.indexOf(' ');
                if (space < 0 || line.indexOf(' ', space + 1) >= 0) {
                    throw new TokenizerException(FILE + ": model.merges[" + i + "] is \"" + line + "\"; a merge must be two tokens separated by one space");
                }
                left = line.substring(0, space);
                right = line.substring(space + 1);
            } else if (m.isArray() && m.size() == 2 && m.get(0).isTextual() && m.get(1).isTextual()) {
                left = m.get(0).asText();
                right = m.get(1).asText();
            } else {
                throw new TokenizerException(FILE + ": model.merges[" + i + "] is " + m + "; expected \"a b\" or [\"a\", \"b\"]");
            }
            String merged = left + (prefix != null && right.startsWith(prefix) ? right.substring(prefix.length()) : right);
            Integer a = vocab.get(left), b = vocab.get(right), c = vocab.get(merged);
            if (a == null || b == null || c == null) {
                String missing = a == null ? left : b == null ? right : merged;
                throw new TokenizerException(FILE + ": model.merges[" + i + "] uses the token \"" + missing + "\", which is not in model.vocab; the file is inconsistent");
            }
            merges.put(a, b, rank++, c);
        }
        String unk = text(model, "unk_token", "model.unk_token", null);
        if (model.hasNonNull("dropout") && model.get("dropout").asDouble() > 0) {
            throw new TokenizerException(FILE + ": model.dropout is " + model.get("dropout") + "; BPE dropout is for training only, set it to null");
        }
        return new BpeModel(vocab, merges, unk, bool(model, "fuse_unk", false), bool(model, "byte_fallback", false),
                bool(model, "ignore_merges", false), prefix, suffix);
    }

    // ---- added tokens ----

    static List<AddedToken> addedTokens(JsonNode root) {
        List<AddedToken> out = new ArrayList<>();
        JsonNode list = root.get("added_tokens");
        if (list == null || list.isNull()) return out;
        if (!list.isArray()) throw new TokenizerException(FILE + ": added_tokens must be a list");
        for (int i = 0; i < list.size(); i++) {
            JsonNode t = list.get(i);
            String where = "added_tokens[" + i + "]";
            if (!t.has("id") || !t.get("id").canConvertToInt()) throw new TokenizerException(FILE + ": " + where + ".id is missing or not an integer");
            String content = text(t, "content", where + ".content", null);
            if (content == null) throw new TokenizerException(FILE + ": " + where + ".content is missing");
            boolean special = bool(t, "special", false);
            out.add(new AddedToken(t.get("id").asInt(), content, bool(t, "single_word", false), bool(t, "lstrip", false),
                    bool(t, "rstrip", false), bool(t, "normalized", !special), special));
        }
        return out;
    }

    /** tokenizer_config.json's added_tokens_decoder: {"128000": {"content": ..., "special": true, ...}}. */
    static List<AddedToken> configAddedTokens(JsonNode config) {
        List<AddedToken> out = new ArrayList<>();
        JsonNode map = config == null ? null : config.get("added_tokens_decoder");
        if (map == null || !map.isObject()) return out;
        for (Map.Entry<String, JsonNode> e : map.properties()) {
            String where = "added_tokens_decoder[\"" + e.getKey() + "\"]";
            int id;
            try {
                id = Integer.parseInt(e.getKey());
            } catch (NumberFormatException ex) {
                throw new TokenizerException(CONFIG + ": " + where + ": the key must be a token id");
            }
            JsonNode t = e.getValue();
            if (!t.path("content").isTextual()) throw new TokenizerException(CONFIG + ": " + where + ".content is missing or not a string");
            String content = t.get("content").asText();
            boolean special = bool(t, "special", false);
            out.add(new AddedToken(id, content, bool(t, "single_word", false), bool(t, "lstrip", false),
                    bool(t, "rstrip", false), bool(t, "normalized", !special), special));
        }
        return out;
    }

    // ---- normalizer ----

    static Normalizer normalizer(JsonNode node, String where) {
        if (node == null || node.isNull()) return null;
        String type = type(node, where);
        return switch (type) {
            case "Sequence" -> {
                JsonNode list = node.get("normalizers");
                if (list == null || !list.isArray()) throw new TokenizerException(FILE + ": " + where + ".normalizers must be a list");
                List<Normalizer> steps = new ArrayList<>();
                for (int i = 0; i < list.size(); i++) steps.add(normalizer(list.get(i), where + ".normalizers[" + i + "]"));
                yield new Normalizer.Sequence(List.copyOf(steps));
            }
            case "Prepend" -> new Normalizer.Prepend(requiredText(node, "prepend", where));
            case "Replace" -> new Normalizer.Replace(pattern(node.get("pattern"), where + ".pattern"), requiredText(node, "content", where));
            case "NFC" -> new Normalizer.Unicode(java.text.Normalizer.Form.NFC);
            case "NFD" -> new Normalizer.Unicode(java.text.Normalizer.Form.NFD);
            case "NFKC" -> new Normalizer.Unicode(java.text.Normalizer.Form.NFKC);
            case "NFKD" -> new Normalizer.Unicode(java.text.Normalizer.Form.NFKD);
            case "Lowercase" -> new Normalizer.Lowercase();
            case "Strip" -> new Normalizer.Strip(bool(node, "strip_left", true), bool(node, "strip_right", true));
            default -> throw unsupported(where, type, "Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, Lowercase, Strip");
        };
    }

    // ---- pre-tokenizer ----

    static PreTokenizer preTokenizer(JsonNode node, String where) {
        if (node == null || node.isNull()) return null;
        String type = type(node, where);
        return switch (type) {
            case "Sequence" -> {
                JsonNode list = node.get("pretokenizers");
                if (list == null || !list.isArray()) throw new TokenizerException(FILE + ": " + where + ".pretokenizers must be a list");
                List<PreTokenizer> steps = new ArrayList<>();
                for (int i = 0; i < list.size(); i++) steps.add(preTokenizer(list.get(i), where + ".pretokenizers[" + i + "]"));
                yield new PreTokenizer.Sequence(List.copyOf(steps));
            }
            case "Split" -> new PreTokenizer.Split(pattern(node.get("pattern"), where + ".pattern"),
                    SplitBehavior.fromJson(requiredText(node, "behavior", where), FILE + ": " + where + ".behavior"), bool(node, "invert", false));
            case "ByteLevel" -> new PreTokenizer.ByteLevel(bool(node, "add_prefix_space", true), bool(node, "use_regex", true));
            case "Metaspace" -> new PreTokenizer.Metaspace(replacement(node, where), prependScheme(node, where), bool(node, "split", true));
            case "Digits" -> new PreTokenizer.Digits(bool(node, "individual_digits", false));
            case "WhitespaceSplit" -> new PreTokenizer.WhitespaceSplit();
            case "Whitespace" -> new PreTokenizer.Whitespace();
            default -> throw unsupported(where, type, "Sequence, Split, ByteLevel, Metaspace, Digits, Whitespace, WhitespaceSplit");
        };
    }

    private static int replacement(JsonNode node, String where) {
        String r = requiredText(node, "replacement", where);
        if (r.codePointCount(0, r.length()) != 1) throw new TokenizerException(FILE + ": " + where + ".replacement must be one character, found \"" + r + "\"");
        return r.codePointAt(0);
    }

    private static PreTokenizer.PrependScheme prependScheme(JsonNode node, String where) {
        PreTokenizer.PrependScheme scheme;
        String s = text(node, "prepend_scheme", where + ".prepend_scheme", "always");
        scheme = switch (s) {
            case "first" -> PreTokenizer.PrependScheme.FIRST;
            case "always" -> PreTokenizer.PrependScheme.ALWAYS;
            case "never" -> PreTokenizer.PrependScheme.NEVER;
            default -> throw new TokenizerException(FILE + ": " + where + ".prepend_scheme is \"" + s + "\"; expected first, always or never");
        };
        // Older files say add_prefix_space: false instead of prepend_scheme: never.
        if (node.has("add_prefix_space") && !node.get("add_prefix_space").asBoolean(true)) scheme = PreTokenizer.PrependScheme.NEVER;
        return scheme;
    }

    // ---- decoder ----

    static Decoder decoder(JsonNode node, String where) {
        if (node == null || node.isNull()) return null;
        String type = type(node, where);
        return switch (type) {
            case "Sequence" -> {
                JsonNode list = node.get("decoders");
                if (list == null || !list.isArray()) throw new TokenizerException(FILE + ": " + where + ".decoders must be a list");
                List<Decoder> steps = new ArrayList<>();
                for (int i = 0; i < list.size(); i++) steps.add(decoder(list.get(i), where + ".decoders[" + i + "]"));
                yield new Decoder.Sequence(List.copyOf(steps));
            }
            case "Replace" -> new Decoder.Replace(pattern(node.get("pattern"), where + ".pattern"), requiredText(node, "content", where));
            case "ByteFallback" -> new Decoder.ByteFallback();
            case "Fuse" -> new Decoder.Fuse();
            case "Strip" -> {
                String content = requiredText(node, "content", where);
                if (content.codePointCount(0, content.length()) != 1) throw new TokenizerException(FILE + ": " + where + ".content must be one character");
                yield new Decoder.Strip(content.codePointAt(0), node.path("start").asInt(0), node.path("stop").asInt(0));
            }
            case "Metaspace" -> new Decoder.Metaspace(replacement(node, where), prependScheme(node, where));
            case "ByteLevel" -> new Decoder.ByteLevel();
            default -> throw unsupported(where, type, "Sequence, Replace, ByteFallback, Fuse, Strip, Metaspace, ByteLevel");
        };
    }

    // ---- post-processor ----

    static PostProcessor postProcessor(JsonNode node, String where, Map<String, Integer> tokenIds) {
        if (node == null || node.isNull()) return null;
        String type = type(node, where);
        return switch (type) {
            case "Sequence" -> {
                JsonNode list = node.get("processors");
                if (list == null || !list.isArray()) throw new TokenizerException(FILE + ": " + where + ".processors must be a list");
                List<PostProcessor> steps = new ArrayList<>();
                for (int i = 0; i < list.size(); i++) {
                    PostProcessor p = postProcessor(list.get(i), where + ".processors[" + i + "]", tokenIds);
                    if (p != null) steps.add(p);
                }
                yield new PostProcessor.Sequence(List.copyOf(steps));
            }
            case "ByteLevel" -> new PostProcessor.None();
            case "TemplateProcessing" -> template(node, where);
            case "BertProcessing", "RobertaProcessing" -> {
                int[] cls = tokenAndId(node.get("cls"), where + ".cls");
                int[] sep = tokenAndId(node.get("sep"), where + ".sep");
                yield new PostProcessor.Surround(cls, sep);
            }
            default -> throw unsupported(where, type, "TemplateProcessing, ByteLevel, Sequence, BertProcessing, RobertaProcessing");
        };
    }

    private static int[] tokenAndId(JsonNode pair, String where) {
        if (pair == null || !pair.isArray() || pair.size() != 2 || !pair.get(1).canConvertToInt()) {
            throw new TokenizerException(FILE + ": " + where + " must be [token, id]");
        }
        return new int[] {pair.get(1).asInt()};
    }

    private static PostProcessor template(JsonNode node, String where) {
        Map<String, int[]> specials = new LinkedHashMap<>();
        JsonNode st = node.get("special_tokens");
        if (st != null && st.isObject()) {
            for (Map.Entry<String, JsonNode> e : st.properties()) {
                JsonNode ids = e.getValue().get("ids");
                if (ids == null || !ids.isArray()) throw new TokenizerException(FILE + ": " + where + ".special_tokens[\"" + e.getKey() + "\"].ids must be a list of ids");
                int[] a = new int[ids.size()];
                for (int i = 0; i < a.length; i++) a[i] = ids.get(i).asInt();
                specials.put(e.getKey(), a);
            }
        }
        JsonNode single = node.get("single");
        if (single == null || !single.isArray()) throw new TokenizerException(FILE + ": " + where + ".single must be a list of template pieces");
        List<Integer> before = new ArrayList<>(), after = new ArrayList<>();
        boolean seenSequence = false;
        for (int i = 0; i < single.size(); i++) {
            JsonNode piece = single.get(i);
            String at = where + ".single[" + i + "]";
            if (piece.has("Sequence")) {
                if (seenSequence) throw new TokenizerException(FILE + ": " + at + ": the single template may hold the sequence only once");
                seenSequence = true;
            } else if (piece.has("SpecialToken")) {
                String id = piece.get("SpecialToken").path("id").asText(null);
                int[] ids = specials.get(id);
                if (ids == null) throw new TokenizerException(FILE + ": " + at + " uses the special token \"" + id + "\", which " + where + ".special_tokens does not define");
                for (int x : ids) (seenSequence ? after : before).add(x);
            } else {
                throw new TokenizerException(FILE + ": " + at + " is " + piece + "; expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
            }
        }
        if (!seenSequence) throw new TokenizerException(FILE + ": " + where + ".single has no {\"Sequence\": ...} piece");
        return new PostProcessor.Surround(before.stream().mapToInt(Integer::intValue).toArray(), after.stream().mapToInt(Integer::intValue).toArray());
    }

    // ---- helpers ----

    static Pattern pattern(JsonNode node, String where) {
        if (node == null || !node.isObject()) throw new TokenizerException(FILE + ": " + where + " must be {\"String\": ...} or {\"Regex\": ...}");
        if (node.has("String")) return SplitRegex.literal(node.get("String").asText());
        if (node.has("Regex")) return SplitRegex.compile(node.get("Regex").asText(), FILE + ": " + where);
        throw new TokenizerException(FILE + ": " + where + " must be {\"String\": ...} or {\"Regex\": ...}, found " + node);
    }

    private static String type(JsonNode node, String where) {
        if (!node.isObject()) throw new TokenizerException(FILE + ": " + where + " must be an object with a \"type\"");
        String t = node.path("type").asText(null);
        if (t == null) throw new TokenizerException(FILE + ": " + where + ".type is missing");
        return t;
    }

    private static TokenizerException unsupported(String where, String type, String supported) {
        return new TokenizerException(FILE + ": " + where + ".type \"" + type + "\" is not supported; supported: " + supported);
    }

    static String text(JsonNode node, String field, String where, String fallback) {
        JsonNode v = node == null ? null : node.get(field);
        if (v == null || v.isNull()) return fallback;
        if (!v.isTextual()) throw new TokenizerException(FILE + ": " + where + " must be a string, found " + v);
        return v.asText();
    }

    private static String requiredText(JsonNode node, String field, String where) {
        String s = text(node, field, where + "." + field, null);
        if (s == null) throw new TokenizerException(FILE + ": " + where + "." + field + " is missing");
        return s;
    }

    static boolean bool(JsonNode node, String field, boolean fallback) {
        JsonNode v = node.get(field);
        return v == null || v.isNull() ? fallback : v.asBoolean(fallback);
    }

    /** A special token given in tokenizer_config.json as a string or as {"content": ...}. */
    static String configToken(JsonNode config, String field) {
        if (config == null) return null;
        JsonNode v = config.get(field);
        if (v == null || v.isNull()) return null;
        if (v.isTextual()) return v.asText();
        if (v.isObject() && v.get("content") != null && v.get("content").isTextual()) return v.get("content").asText();
        throw new TokenizerException(CONFIG + ": " + field + " must be a string or {\"content\": ...}, found " + v);
    }
}
