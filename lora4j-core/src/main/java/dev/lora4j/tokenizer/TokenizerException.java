package dev.lora4j.tokenizer;

/**
 * A tokenizer file that cannot be used, or a request the tokenizer cannot serve. The message names the file and
 * the field at fault and says what to do about it.
 */
public class TokenizerException extends RuntimeException {
    public TokenizerException(String message) {
        super(message);
    }

    public TokenizerException(String message, Throwable cause) {
        super(message, cause);
    }
}
