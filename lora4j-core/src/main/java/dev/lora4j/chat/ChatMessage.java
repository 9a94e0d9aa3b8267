package dev.lora4j.chat;

import java.util.Objects;

/** One turn of a conversation, as chat templates see it: {"role": ..., "content": ...}. */
public record ChatMessage(String role, String content) {
    public ChatMessage {
        Objects.requireNonNull(role, "a chat message needs a role (system, user, assistant, ...)");
        Objects.requireNonNull(content, "a chat message needs content (use \"\" for none)");
    }

    public static ChatMessage system(String content) {
        return new ChatMessage("system", content);
    }

    public static ChatMessage user(String content) {
        return new ChatMessage("user", content);
    }

    public static ChatMessage assistant(String content) {
        return new ChatMessage("assistant", content);
    }
}
