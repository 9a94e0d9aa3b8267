package dev.lora4j.chat;

/**
 * A chat template that cannot be parsed or rendered, or that refused the conversation (its raise_exception, for
 * example "Conversation roles must alternate user/assistant/..."). The message names the template.
 */
public class ChatTemplateException extends RuntimeException {
    public ChatTemplateException(String message) {
        super(message);
    }

    public ChatTemplateException(String message, Throwable cause) {
        super(message, cause);
    }
}
