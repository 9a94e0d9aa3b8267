package dev.lora4j.train.config;

/** A training configuration that cannot be used: the message names the file or option, the field and the fix. */
public final class TrainConfigException extends IllegalArgumentException {
    public TrainConfigException(String message) {
        super(message);
    }

    public TrainConfigException(String message, Throwable cause) {
        super(message, cause);
    }
}
