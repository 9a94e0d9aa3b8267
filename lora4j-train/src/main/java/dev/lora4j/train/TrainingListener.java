package dev.lora4j.train;

import java.nio.file.Path;
import java.util.Map;

/** What a training run reports as it goes; every method does nothing unless overridden. */
public interface TrainingListener {

    /** Before the first step; {@code startStep} is above 0 when the run resumes from a checkpoint. */
    default void onStart(TrainingPlan plan, long startStep) {}

    /** After each optimizer step. */
    default void onStep(StepReport step) {}

    /** A record written to the metrics log (training logs, evaluations, the final summary). */
    default void onLog(Map<String, Object> record) {}

    default void onEvaluate(long step, double evalLoss) {}

    default void onCheckpoint(long step, Path folder) {}

    default void onEnd(TrainResult result) {}

    /**
     * One optimizer step: its loss (mean over the step's target tokens), gradient norm before clipping, learning
     * rate, tokens processed, and the backend's peak memory so far.
     */
    record StepReport(long step, long totalSteps, double epoch, double loss, double gradNorm, double learningRate,
                      long tokens, long targetTokens, double seconds, long peakMemoryBytes) {}
}
