package dev.lora4j.io;

import java.io.IOException;

/**
 * A model folder's JSON file (config.json, generation_config.json) that lora4j cannot use: malformed JSON, a
 * field of the wrong type, a missing field, or a model lora4j does not run. The message names the file and field.
 */
public final class ConfigFormatException extends IOException {

    public ConfigFormatException(String message) {
        super(message);
    }

    public ConfigFormatException(String message, Throwable cause) {
        super(message, cause);
    }
}
