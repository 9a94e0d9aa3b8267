package dev.lora4j.train;

import dev.lora4j.train.schedule.LearningRateSchedule;

/**
 * The shape of a run, worked out as transformers' Trainer works it out: micro-batches per epoch
 * {@code ceil(samples / batch)}, optimizer steps per epoch {@code ceil(batches / accumulation)} (the last step of an
 * epoch takes the remaining micro-batches), total steps max_steps or {@code ceil(epochs * steps per epoch)}, and the
 * warmup, logging, eval and save intervals in steps.
 *
 * @param evalSteps 0 when there is no evaluation
 * @param saveSteps 0 when no checkpoints are saved
 */
public record TrainingPlan(int samples, int batchesPerEpoch, long stepsPerEpoch, long totalSteps, double epochs,
                           long warmupSteps, long loggingSteps, long evalSteps, long saveSteps) {

    static TrainingPlan of(SftConfig c, int samples, boolean hasEval) {
        int batches = (samples + c.perDeviceTrainBatchSize() - 1) / c.perDeviceTrainBatchSize();
        long perEpoch = Math.max(1, (batches + c.gradientAccumulationSteps() - 1) / c.gradientAccumulationSteps());
        long total = c.maxSteps() > 0 ? c.maxSteps() : (long) Math.ceil(c.numTrainEpochs() * perEpoch);
        double epochs = c.maxSteps() > 0 ? Math.ceil((double) total / perEpoch) : c.numTrainEpochs();
        long warmup = LearningRateSchedule.warmupSteps(c.warmupSteps(), c.warmupRatio(), total);
        long logging = SftConfig.resolveSteps(c.loggingSteps(), total);
        boolean evaluate = hasEval && !"no".equals(c.evalStrategy());
        long eval = evaluate ? SftConfig.resolveSteps(c.evalSteps() != null ? c.evalSteps() : c.loggingSteps(), total) : 0;
        long save = "no".equals(c.saveStrategy()) ? 0 : SftConfig.resolveSteps(c.saveSteps(), total);
        return new TrainingPlan(samples, batches, perEpoch, total, epochs, warmup, logging, eval, save);
    }
}
