package dev.lora4j.tokenizer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.PriorityQueue;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Trains a small byte-level BPE tokenizer in the Llama 3 style and writes it as Hugging Face files: GPT-2's byte
 * alphabet (so any text encodes, no unknown token), Llama 3's split regex, merges learned by counting adjacent
 * pairs over the corpus words, and a few special tokens at the end of the vocabulary with a Llama-3-style chat
 * template. Training is deterministic: ties between equally frequent pairs go to the pair of smaller ids.
 *
 * <p>The written tokenizer.json adds {@value #BOS} in front of every encoded text (a TemplateProcessing
 * post-processor, like current Llama 3 files); the chat template also writes the BOS, so encode a rendered chat
 * with addSpecialTokens false.
 */
public final class BpeTrainer {
    public static final String BOS = "<|begin_of_text|>";
    public static final String EOS = "<|end_of_text|>";
    public static final String START_HEADER = "<|start_header_id|>";
    public static final String END_HEADER = "<|end_header_id|>";
    public static final String EOT = "<|eot_id|>";
    public static final String PAD = "<|pad|>";
    /** The special tokens, in id order after the learned vocabulary. */
    public static final List<String> SPECIAL_TOKENS = List.of(BOS, EOS, START_HEADER, END_HEADER, EOT, PAD);

    static final String LLAMA3_SPLIT = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    static final String CHAT_TEMPLATE = "{{- bos_token }}{%- for message in messages %}"
            + "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
            + "{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}";
    private static final String CORPUS_RESOURCE = "corpus.txt";
    public static final int MIN_VOCAB = 256 + 6 + 1;
    public static final int MAX_VOCAB = 65_536;

    private BpeTrainer() {}

    /** The files of a trained tokenizer. */
    public record TrainedTokenizer(String tokenizerJson, String tokenizerConfigJson) {
        /** Writes tokenizer.json and tokenizer_config.json into the folder (created if needed), each atomically. */
        public void writeTo(Path folder) throws IOException {
            Files.createDirectories(folder);
            write(folder.resolve("tokenizer.json"), tokenizerJson);
            write(folder.resolve("tokenizer_config.json"), tokenizerConfigJson);
        }

        public Tokenizer tokenizer() {
            return Tokenizer.fromJson(tokenizerJson, tokenizerConfigJson);
        }

        private static void write(Path target, String content) throws IOException {
            Path tmp = target.resolveSibling(target.getFileName() + ".tmp");
            Files.writeString(tmp, content, StandardCharsets.UTF_8);
            Files.move(tmp, target, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        }
    }

    /** Trains on the public-domain English corpus that ships with lora4j (Moby-Dick, chapters 1 to 15). */
    public static TrainedTokenizer trainDefault(int vocabSize) {
        try (InputStream in = BpeTrainer.class.getResourceAsStream(CORPUS_RESOURCE)) {
            if (in == null) throw new IllegalStateException("the training corpus " + CORPUS_RESOURCE + " is missing from lora4j-core's resources");
            return train(new String(in.readAllBytes(), StandardCharsets.UTF_8), vocabSize);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /**
     * Trains on the corpus until the vocabulary (256 bytes, the merges and the special tokens) has vocabSize
     * entries, or until every word of the corpus is a single token.
     */
    public static TrainedTokenizer train(String corpus, int vocabSize) {
        if (vocabSize < MIN_VOCAB || vocabSize > MAX_VOCAB) {
            throw new IllegalArgumentException("vocabulary size " + vocabSize + " is out of range: choose between " + MIN_VOCAB + " and " + MAX_VOCAB
                    + " (256 bytes + " + SPECIAL_TOKENS.size() + " special tokens + at least one merge)");
        }
        List<String> tokens = new ArrayList<>(vocabSize);
        for (int b = 0; b < 256; b++) tokens.add(String.valueOf(ByteLevelAlphabet.charOf(b)));
        List<int[]> merges = learnMerges(wordCounts(corpus), tokens, vocabSize - SPECIAL_TOKENS.size());
        return new TrainedTokenizer(tokenizerJson(tokens, merges), tokenizerConfigJson(tokens.size()));
    }

    /** The corpus split as Llama 3 splits text, each word as its bytes (alphabet ids), with its count. */
    private static Map<String, Integer> wordCounts(String corpus) {
        Pattern split = SplitRegex.compile(LLAMA3_SPLIT, "BpeTrainer");
        Map<String, Integer> counts = new LinkedHashMap<>();
        Matcher m = split.matcher(Utf8.sanitize(corpus));
        while (m.find()) {
            if (m.end() > m.start()) counts.merge(m.group(), 1, Integer::sum);
        }
        return counts;
    }

    /**
     * Classic BPE training with incremental pair counts: each merge updates only the words that contain the
     * pair, and a lazy max-heap (stale entries skipped on pop) finds the next most frequent pair.
     */
    private static List<int[]> learnMerges(Map<String, Integer> wordCounts, List<String> tokens, int targetTokens) {
        int n = wordCounts.size();
        int[][] words = new int[n][];
        int[] freq = new int[n];
        int w = 0;
        for (Map.Entry<String, Integer> e : wordCounts.entrySet()) {
            byte[] bytes = Utf8.encode(e.getKey());
            int[] ids = new int[bytes.length];
            for (int i = 0; i < bytes.length; i++) ids[i] = bytes[i] & 0xFF;
            words[w] = ids;
            freq[w++] = e.getValue();
        }
        Map<Long, long[]> pairCount = new HashMap<>();           // pair -> {count}
        Map<Long, IntSet> pairWords = new HashMap<>();           // pair -> words holding it
        for (int i = 0; i < n; i++) addPairs(words[i], freq[i], i, pairCount, pairWords);
        PriorityQueue<long[]> heap = new PriorityQueue<>(BpeTrainer::compareCandidates);
        pairCount.forEach((pair, c) -> heap.add(new long[] {c[0], pair}));

        Map<String, Integer> ids = new HashMap<>();
        for (int i = 0; i < tokens.size(); i++) ids.put(tokens.get(i), i);
        List<int[]> merges = new ArrayList<>();
        Map<Long, Integer> merged = new HashMap<>();
        while (tokens.size() < targetTokens && !heap.isEmpty()) {
            long[] top = heap.poll();
            long pair = top[1];
            long[] current = pairCount.get(pair);
            if (current == null || current[0] != top[0] || current[0] <= 0) continue;
            int a = (int) (pair >>> 32), b = (int) pair;
            int c;
            if (merged.containsKey(pair)) {
                // The pair formed again after its merge (a later merge built one of its sides): merge it in those
                // words too, without a second entry.
                c = merged.get(pair);
            } else {
                String text = tokens.get(a) + tokens.get(b);
                Integer existing = ids.get(text);
                if (existing != null) {
                    c = existing;
                } else {
                    c = tokens.size();
                    tokens.add(text);
                    ids.put(text, c);
                }
                merges.add(new int[] {a, b, c});
                merged.put(pair, c);
            }
            IntSet holders = pairWords.remove(pair);
            Map<Long, long[]> changed = new HashMap<>();
            for (int wi : holders.toSortedArray()) {
                removePairs(words[wi], freq[wi], wi, pairCount, pairWords, changed);
                words[wi] = mergeIn(words[wi], a, b, c);
                addPairs(words[wi], freq[wi], wi, pairCount, pairWords);
                recordChanged(words[wi], pairCount, changed);
            }
            pairCount.remove(pair);
            changed.remove(pair);
            changed.forEach((p, cnt) -> {
                long[] now = pairCount.get(p);
                if (now != null && now[0] > 0) heap.add(new long[] {now[0], p});
            });
        }
        return merges;
    }

    /** Higher count first; among equal counts the smaller (left, right) pair, so training is deterministic. */
    private static int compareCandidates(long[] x, long[] y) {
        if (x[0] != y[0]) return Long.compare(y[0], x[0]);
        return Long.compare(x[1], y[1]);
    }

    private static long pairKey(int a, int b) {
        return ((long) a << 32) | (b & 0xFFFFFFFFL);
    }

    private static void addPairs(int[] word, int freq, int wi, Map<Long, long[]> counts, Map<Long, IntSet> where) {
        for (int i = 0; i + 1 < word.length; i++) {
            long p = pairKey(word[i], word[i + 1]);
            counts.computeIfAbsent(p, k -> new long[1])[0] += freq;
            where.computeIfAbsent(p, k -> new IntSet()).add(wi);
        }
    }

    private static void removePairs(int[] word, int freq, int wi, Map<Long, long[]> counts, Map<Long, IntSet> where, Map<Long, long[]> changed) {
        for (int i = 0; i + 1 < word.length; i++) {
            long p = pairKey(word[i], word[i + 1]);
            long[] c = counts.get(p);
            if (c != null) {
                c[0] -= freq;
                changed.put(p, c);
            }
            IntSet s = where.get(p);
            if (s != null) s.remove(wi);
        }
    }

    private static void recordChanged(int[] word, Map<Long, long[]> counts, Map<Long, long[]> changed) {
        for (int i = 0; i + 1 < word.length; i++) {
            long p = pairKey(word[i], word[i + 1]);
            changed.put(p, counts.get(p));
        }
    }

    /** Replaces each non-overlapping (a, b), left to right, by c. */
    private static int[] mergeIn(int[] word, int a, int b, int c) {
        int[] out = new int[word.length];
        int k = 0;
        for (int i = 0; i < word.length; i++) {
            if (i + 1 < word.length && word[i] == a && word[i + 1] == b) {
                out[k++] = c;
                i++;
            } else {
                out[k++] = word[i];
            }
        }
        return Arrays.copyOf(out, k);
    }

    /** A small growable set of word indices. */
    private static final class IntSet {
        private final java.util.BitSet bits = new java.util.BitSet();

        void add(int i) {
            bits.set(i);
        }

        void remove(int i) {
            bits.clear(i);
        }

        int[] toSortedArray() {
            return bits.stream().toArray();
        }
    }

    // ---- the files ----

    private static String tokenizerJson(List<String> tokens, List<int[]> merges) {
        JsonNodeFactory f = JsonNodeFactory.instance;
        ObjectNode root = f.objectNode();
        root.put("version", "1.0");
        root.putNull("truncation");
        root.putNull("padding");
        ArrayNode added = root.putArray("added_tokens");
        for (int i = 0; i < SPECIAL_TOKENS.size(); i++) {
            ObjectNode t = added.addObject();
            t.put("id", tokens.size() + i);
            t.put("content", SPECIAL_TOKENS.get(i));
            t.put("single_word", false);
            t.put("lstrip", false);
            t.put("rstrip", false);
            t.put("normalized", false);
            t.put("special", true);
        }
        root.putNull("normalizer");
        ObjectNode pre = root.putObject("pre_tokenizer");
        pre.put("type", "Sequence");
        ArrayNode steps = pre.putArray("pretokenizers");
        ObjectNode split = steps.addObject();
        split.put("type", "Split");
        split.putObject("pattern").put("Regex", LLAMA3_SPLIT);
        split.put("behavior", "Isolated");
        split.put("invert", false);
        ObjectNode byteLevel = steps.addObject();
        byteLevel.put("type", "ByteLevel");
        byteLevel.put("add_prefix_space", false);
        byteLevel.put("trim_offsets", true);
        byteLevel.put("use_regex", false);

        int bosId = tokens.size();
        ObjectNode post = root.putObject("post_processor");
        post.put("type", "TemplateProcessing");
        ArrayNode single = post.putArray("single");
        single.add(specialPiece(f, 0));
        single.add(sequencePiece(f, "A", 0));
        ArrayNode pair = post.putArray("pair");
        pair.add(specialPiece(f, 0));
        pair.add(sequencePiece(f, "A", 0));
        pair.add(specialPiece(f, 1));
        pair.add(sequencePiece(f, "B", 1));
        ObjectNode bos = post.putObject("special_tokens").putObject(BOS);
        bos.put("id", BOS);
        bos.putArray("ids").add(bosId);
        bos.putArray("tokens").add(BOS);

        ObjectNode decoder = root.putObject("decoder");
        decoder.put("type", "ByteLevel");
        decoder.put("add_prefix_space", true);
        decoder.put("trim_offsets", true);
        decoder.put("use_regex", true);

        ObjectNode model = root.putObject("model");
        model.put("type", "BPE");
        model.putNull("dropout");
        model.putNull("unk_token");
        model.putNull("continuing_subword_prefix");
        model.putNull("end_of_word_suffix");
        model.put("fuse_unk", false);
        model.put("byte_fallback", false);
        model.put("ignore_merges", true);
        ObjectNode vocab = model.putObject("vocab");
        for (int i = 0; i < tokens.size(); i++) vocab.put(tokens.get(i), i);
        ArrayNode mergeList = model.putArray("merges");
        for (int[] m : merges) mergeList.addArray().add(tokens.get(m[0])).add(tokens.get(m[1]));
        return pretty(root);
    }

    private static JsonNode specialPiece(JsonNodeFactory f, int typeId) {
        ObjectNode piece = f.objectNode();
        ObjectNode s = piece.putObject("SpecialToken");
        s.put("id", BOS);
        s.put("type_id", typeId);
        return piece;
    }

    private static JsonNode sequencePiece(JsonNodeFactory f, String id, int typeId) {
        ObjectNode piece = f.objectNode();
        ObjectNode s = piece.putObject("Sequence");
        s.put("id", id);
        s.put("type_id", typeId);
        return piece;
    }

    private static String tokenizerConfigJson(int firstSpecialId) {
        ObjectNode c = JsonNodeFactory.instance.objectNode();
        ObjectNode decoder = c.putObject("added_tokens_decoder");
        for (int i = 0; i < SPECIAL_TOKENS.size(); i++) {
            ObjectNode t = decoder.putObject(Integer.toString(firstSpecialId + i));
            t.put("content", SPECIAL_TOKENS.get(i));
            t.put("lstrip", false);
            t.put("normalized", false);
            t.put("rstrip", false);
            t.put("single_word", false);
            t.put("special", true);
        }
        c.put("bos_token", BOS);
        c.put("eos_token", EOS);
        c.put("pad_token", PAD);
        c.put("chat_template", CHAT_TEMPLATE);
        c.put("clean_up_tokenization_spaces", false);
        c.put("model_max_length", 8192);
        c.put("tokenizer_class", "PreTrainedTokenizerFast");
        return pretty(c);
    }

    private static String pretty(JsonNode node) {
        try {
            return TokenizerJsonReader.JSON.writerWithDefaultPrettyPrinter().writeValueAsString(node) + "\n";
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** Writes a trained tokenizer: {@code BpeTrainer <output folder> <vocab size> [corpus.txt]}. */
    public static void main(String[] args) throws IOException {
        if (args.length < 2) {
            System.err.println("usage: BpeTrainer <output folder> <vocab size> [corpus text file]");
            System.exit(2);
        }
        int size = Integer.parseInt(args[1]);
        TrainedTokenizer t = args.length > 2 ? train(Files.readString(Path.of(args[2])), size) : trainDefault(size);
        t.writeTo(Path.of(args[0]));
        System.out.println("wrote " + Path.of(args[0]).resolve("tokenizer.json") + " (" + t.tokenizer().vocabSize() + " tokens)");
    }
}
