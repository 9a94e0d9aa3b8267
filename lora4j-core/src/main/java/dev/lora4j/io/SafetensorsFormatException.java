package dev.lora4j.io;

import java.io.IOException;

/**
 * A safetensors file, shard index or model folder that does not follow the format. The message names the file,
 * the tensor or field, what is wrong and what to do about it.
 */
public final class SafetensorsFormatException extends IOException {

    public SafetensorsFormatException(String message) {
        super(message);
    }

    public SafetensorsFormatException(String message, Throwable cause) {
        super(message, cause);
    }
}
