package dev.lora4j.train.data;

import dev.lora4j.chat.ChatTemplate;
import dev.lora4j.tokenizer.BpeTrainer;
import dev.lora4j.tokenizer.Tokenizer;

/** The byte-level BPE tokenizer that init-model writes (Llama-3-style specials and chat template), trained once. */
final class TestTokenizers {
    private static Tokenizer tiny;

    private TestTokenizers() {}

    static synchronized Tokenizer tiny() {
        if (tiny == null) tiny = BpeTrainer.trainDefault(2048).tokenizer();
        return tiny;
    }

    static ChatTemplate chatTemplate(Tokenizer t) {
        return ChatTemplate.of(t.chatTemplate().orElseThrow(), t.bosToken(), t.eosToken());
    }
}
