package dev.lora4j.generate;

import dev.lora4j.tokenizer.Tokenizer;

/** A 61-token character-level tokenizer.json for tests: ids 0 and 1 are the special BOS and EOS. */
final class CharTokenizer {
    static final String CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,!?'\u00e9";

    private CharTokenizer() {}

    static Tokenizer create() {
        StringBuilder vocab = new StringBuilder("{\"<s>\": 0, \"</s>\": 1");
        for (int i = 0; i < CHARS.length(); i++) {
            vocab.append(", \"").append(CHARS.charAt(i) == '\'' ? "'" : String.valueOf(CHARS.charAt(i))).append("\": ").append(i + 2);
        }
        vocab.append('}');
        String json = """
                {"version": "1.0", "truncation": null, "padding": null,
                 "added_tokens": [
                   {"id": 0, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                   {"id": 1, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
                 "normalizer": null, "pre_tokenizer": null, "post_processor": null,
                 "decoder": {"type": "Fuse"},
                 "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                           "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                           "vocab": %s, "merges": []}}
                """.formatted(vocab);
        String config = """
                {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": false}
                """;
        return Tokenizer.fromJson(json, config);
    }
}
