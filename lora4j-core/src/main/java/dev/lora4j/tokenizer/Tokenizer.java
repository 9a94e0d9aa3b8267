package dev.lora4j.tokenizer;

import com.fasterxml.jackson.databind.JsonNode;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.OptionalInt;

/**
 * A Hugging Face fast tokenizer (tokenizer.json) implemented in Java, encoding and decoding exactly as the
 * reference `tokenizers` library does for BPE vocabularies: byte-level ones (GPT-2, Llama 3, Qwen2) and
 * SentencePiece-style ones with byte fallback (Llama 2, Mistral).
 *
 * <p>Encoding runs the reference's stages in order: added tokens are found in the raw text; each run between
 * them is normalized, searched again for normalized added tokens, split into words by the pre-tokenizer, and
 * each word is turned into ids by the BPE model; the post-processor then adds special tokens such as BOS.
 * Instances are immutable and safe to share between threads.
 */
public final class Tokenizer {
    private static final String FILE = "tokenizer.json";
    private static final String CONFIG = "tokenizer_config.json";

    private final BpeModel model;
    private final Normalizer normalizer;
    private final PreTokenizer preTokenizer;
    private final PostProcessor postProcessor;
    private final Decoder decoder;
    private final AddedTokenMatcher rawTokens;
    private final AddedTokenMatcher normalizedTokens;
    private final String[] idToToken;
    /** What decode emits for each id: the token's text, or an added token's normalized form. */
    private final String[] decodeText;
    private final boolean[] special;
    private final Map<String, Integer> addedIds;
    private final String bosToken;
    private final String eosToken;
    private final String chatTemplate;

    private Tokenizer(JsonNode root, JsonNode config, String chatTemplateFromFolder) {
        model = TokenizerJsonReader.model(root);
        normalizer = TokenizerJsonReader.normalizer(root.get("normalizer"), "normalizer");
        preTokenizer = TokenizerJsonReader.preTokenizer(root.get("pre_tokenizer"), "pre_tokenizer");
        decoder = TokenizerJsonReader.decoder(root.get("decoder"), "decoder");

        // Added tokens of tokenizer.json, plus any that only tokenizer_config.json declares (transformers adds those too).
        Map<Integer, AddedToken> added = new LinkedHashMap<>();
        for (AddedToken t : TokenizerJsonReader.addedTokens(root)) added.put(t.id(), t);
        for (AddedToken t : TokenizerJsonReader.configAddedTokens(config)) {
            if (!added.containsKey(t.id()) && added.values().stream().noneMatch(a -> a.content().equals(t.content()))) added.put(t.id(), t);
        }
        int maxId = -1;
        for (int id : model.vocab().values()) maxId = Math.max(maxId, id);
        for (int id : added.keySet()) maxId = Math.max(maxId, id);
        idToToken = new String[maxId + 1];
        for (Map.Entry<String, Integer> e : model.vocab().entrySet()) idToToken[e.getValue()] = e.getKey();
        decodeText = idToToken.clone();
        special = new boolean[maxId + 1];
        addedIds = new HashMap<>();
        Map<String, AddedToken> rawPatterns = new HashMap<>(), normalizedPatterns = new HashMap<>();
        for (AddedToken t : added.values()) {
            if (t.content().isEmpty()) continue;
            idToToken[t.id()] = t.content();
            addedIds.put(t.content(), t.id());
            special[t.id()] = t.special();
            if (t.normalized() && normalizer != null) {
                String normalized = normalizer.normalize(t.content());
                normalizedPatterns.put(normalized, t);
                decodeText[t.id()] = normalized;
            } else if (t.normalized()) {
                normalizedPatterns.put(t.content(), t);
                decodeText[t.id()] = t.content();
            } else {
                rawPatterns.put(t.content(), t);
                decodeText[t.id()] = t.content();
            }
        }
        rawTokens = new AddedTokenMatcher(rawPatterns);
        normalizedTokens = new AddedTokenMatcher(normalizedPatterns);

        Map<String, Integer> allIds = new HashMap<>(model.vocab());
        allIds.putAll(addedIds);
        PostProcessor fromFile = TokenizerJsonReader.postProcessor(root.get("post_processor"), "post_processor", allIds);
        String bos = TokenizerJsonReader.configToken(config, "bos_token");
        eosToken = TokenizerJsonReader.configToken(config, "eos_token");
        postProcessor = choosePostProcessor(fromFile, config, bos);
        // Without tokenizer_config.json, the one token a template puts before the text is the BOS.
        if (bos == null && postProcessor instanceof PostProcessor.Surround(int[] before, int[] after) && before.length == 1) bos = idToToken[before[0]];
        bosToken = bos;

        String template = chatTemplateFrom(config);
        chatTemplate = template != null ? template : chatTemplateFromFolder;
    }

    /**
     * The file's post-processor when it adds tokens; otherwise tokenizer_config.json's add_bos_token /
     * add_eos_token flags, which is how Llama-2-era folders ask for BOS.
     */
    private PostProcessor choosePostProcessor(PostProcessor fromFile, JsonNode config, String bosToken) {
        boolean fileAddsTokens = fromFile != null && !(fromFile instanceof PostProcessor.None)
                && fromFile.process(new int[0]).length > 0;
        if (fileAddsTokens) return fromFile;
        boolean addBos = config != null && config.path("add_bos_token").asBoolean(false);
        boolean addEos = config != null && config.path("add_eos_token").asBoolean(false);
        if (!addBos && !addEos) return fromFile == null ? new PostProcessor.None() : fromFile;
        int[] before = addBos ? new int[] {requiredId(bosToken, "bos_token")} : new int[0];
        int[] after = addEos ? new int[] {requiredId(eosToken, "eos_token")} : new int[0];
        return new PostProcessor.Surround(before, after);
    }

    private int requiredId(String token, String field) {
        if (token == null) throw new TokenizerException(CONFIG + ": add_" + field + " is true but " + field + " is not set; set " + field + " or the flag to false");
        return tokenId(token).orElseThrow(() -> new TokenizerException(CONFIG + ": " + field + " \"" + token + "\" is not in the vocabulary of tokenizer.json"));
    }

    private static String chatTemplateFrom(JsonNode config) {
        JsonNode t = config == null ? null : config.get("chat_template");
        if (t == null || t.isNull()) return null;
        if (t.isTextual()) return t.asText();
        if (t.isArray()) {
            for (JsonNode named : t) {
                if ("default".equals(named.path("name").asText(null)) && named.path("template").isTextual()) return named.get("template").asText();
            }
            return null;
        }
        throw new TokenizerException(CONFIG + ": chat_template must be a string or a list of {\"name\", \"template\"}, found " + t.getNodeType());
    }

    /**
     * Loads tokenizer.json, and tokenizer_config.json when present, from a model folder. The chat template comes
     * from tokenizer_config.json, or else from chat_template.jinja or chat_template.json beside it.
     */
    public static Tokenizer load(Path folder) {
        if (!Files.isDirectory(folder)) throw new TokenizerException("model folder " + folder + " does not exist or is not a folder; pass the folder that holds tokenizer.json");
        Path json = folder.resolve(FILE);
        if (!Files.isRegularFile(json)) {
            String hint = Files.exists(folder.resolve("tokenizer.model"))
                    ? "the folder has only a SentencePiece tokenizer.model; save it as tokenizer.json with transformers (AutoTokenizer.from_pretrained(folder).save_pretrained(folder))"
                    : "copy the tokenizer.json of this model from its Hugging Face repository into the folder";
            throw new TokenizerException("no tokenizer.json in " + folder + ": " + hint);
        }
        Path configPath = folder.resolve(CONFIG);
        String config = Files.isRegularFile(configPath) ? read(configPath) : null;
        String folderTemplate = null;
        Path jinja = folder.resolve("chat_template.jinja");
        Path templateJson = folder.resolve("chat_template.json");
        if (Files.isRegularFile(jinja)) {
            folderTemplate = read(jinja);
        } else if (Files.isRegularFile(templateJson)) {
            JsonNode node = TokenizerJsonReader.parse(read(templateJson), templateJson.toString());
            folderTemplate = chatTemplateFrom(node);
        }
        try {
            return create(read(json), config, folderTemplate);
        } catch (TokenizerException e) {
            throw new TokenizerException(folder + ": " + e.getMessage(), e);
        }
    }

    /** Builds a tokenizer from the text of tokenizer.json and, optionally, of tokenizer_config.json. */
    public static Tokenizer fromJson(String tokenizerJson, String tokenizerConfigJsonOrNull) {
        return create(tokenizerJson, tokenizerConfigJsonOrNull, null);
    }

    private static Tokenizer create(String json, String config, String folderTemplate) {
        JsonNode root = TokenizerJsonReader.parse(json, FILE);
        JsonNode cfg = config == null ? null : TokenizerJsonReader.parse(config, CONFIG);
        return new Tokenizer(root, cfg, folderTemplate);
    }

    private static String read(Path p) {
        try {
            return Files.readString(p, StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new TokenizerException("cannot read " + p + ": " + e.getMessage() + "; check that the file exists and is readable UTF-8", e);
        }
    }

    // ---- encoding ----

    /** Encodes the text with the special tokens the tokenizer adds by default (for example BOS). */
    public int[] encode(String text) {
        return encode(text, true);
    }

    /**
     * Encodes the text. Special tokens written in the text (such as "&lt;|eot_id|&gt;") are recognised as such;
     * addSpecialTokens controls only what the post-processor adds around the sequence.
     */
    public int[] encode(String text, boolean addSpecialTokens) {
        List<Piece> pieces = words(text);
        int[] ids = new int[Math.max(16, pieces.size() * 2)];
        int n = 0;
        for (Piece p : pieces) {
            if (p.isToken()) {
                if (n == ids.length) ids = Arrays.copyOf(ids, n * 2);
                ids[n++] = p.tokenId();
                continue;
            }
            int[] word = model.tokenize(p.text());
            if (n + word.length > ids.length) ids = Arrays.copyOf(ids, Math.max(ids.length * 2, n + word.length));
            System.arraycopy(word, 0, ids, n, word.length);
            n += word.length;
        }
        ids = Arrays.copyOf(ids, n);
        return addSpecialTokens ? postProcessor.process(ids) : ids;
    }

    /** The words the model will tokenize, after added tokens, normalization and pre-tokenization. */
    List<Piece> words(String text) {
        if (text == null) throw new IllegalArgumentException("text to encode is null");
        List<Piece> pieces = rawTokens.split(Piece.text(Utf8.sanitize(text), true));
        List<Piece> normalized = new ArrayList<>(pieces.size());
        for (Piece p : pieces) {
            if (p.isToken()) {
                normalized.add(p);
                continue;
            }
            String t = normalizer == null ? p.text() : normalizer.normalize(p.text());
            normalized.addAll(normalizedTokens.split(Piece.text(t, p.atTextStart())));
        }
        return preTokenizer == null ? normalized : preTokenizer.apply(normalized);
    }

    // ---- decoding ----

    public String decode(int[] ids) {
        return decode(ids, false);
    }

    /** Decodes ids to text as the reference does; ids that name no token are skipped. */
    public String decode(int[] ids, boolean skipSpecialTokens) {
        return decode(ids, 0, ids.length, skipSpecialTokens);
    }

    String decode(int[] ids, int from, int to, boolean skipSpecialTokens) {
        List<String> tokens = new ArrayList<>(to - from);
        for (int i = from; i < to; i++) {
            int id = ids[i];
            if (id < 0 || id >= decodeText.length || decodeText[id] == null) continue;
            if (skipSpecialTokens && special[id]) continue;
            tokens.add(decodeText[id]);
        }
        return decoder == null ? String.join(" ", tokens) : decoder.decode(tokens);
    }

    /**
     * A decoder for tokens that arrive one at a time, such as during generation: each push returns the text that
     * token completes, so that concatenating the results gives the same text as decoding all ids at once.
     */
    public StreamingDecoder streamingDecoder(boolean skipSpecialTokens) {
        return new StreamingDecoder(this, skipSpecialTokens);
    }

    // ---- vocabulary ----

    /** Number of ids, counting added tokens: one more than the largest id. */
    public int vocabSize() {
        return idToToken.length;
    }

    public OptionalInt bosTokenId() {
        return bosToken == null ? OptionalInt.empty() : tokenId(bosToken);
    }

    public OptionalInt eosTokenId() {
        return eosToken == null ? OptionalInt.empty() : tokenId(eosToken);
    }

    /** The BOS token's text from tokenizer_config.json, or null when it names none. */
    public String bosToken() {
        return bosToken;
    }

    /** The EOS token's text from tokenizer_config.json, or null when it names none. */
    public String eosToken() {
        return eosToken;
    }

    public OptionalInt tokenId(String token) {
        Integer id = addedIds.get(token);
        if (id == null) id = model.vocab().get(token);
        return id == null ? OptionalInt.empty() : OptionalInt.of(id);
    }

    /** The token's text as stored in the vocabulary (byte-level tokens in their byte alphabet), or null for an unknown id. */
    public String token(int id) {
        return id >= 0 && id < idToToken.length ? idToToken[id] : null;
    }

    /** Whether the id is a special added token (one that decode can skip). */
    public boolean isSpecial(int id) {
        return id >= 0 && id < special.length && special[id];
    }

    /** The chat template of tokenizer_config.json ("default" of the named-template list form), if any. */
    public Optional<String> chatTemplate() {
        return Optional.ofNullable(chatTemplate);
    }
}
