package dev.lora4j.train;

/** The loss or the gradient became NaN or infinite: the message says at which step and what to change. */
public final class TrainingDivergedException extends RuntimeException {
    public TrainingDivergedException(String message) {
        super(message);
    }
}
