package dev.lora4j.train.schedule;

/**
 * The learning rate of each optimizer step, with transformers' {@code get_scheduler} formulas. Step k counts
 * optimizer steps from 0: torch's LambdaLR gives the first step {@code lr * lambda(0)}, so a warmup starts at 0.
 *
 * <ul>
 *   <li>constant: 1</li>
 *   <li>constant_with_warmup: {@code k / max(1, warmup)} while {@code k < warmup}, then 1</li>
 *   <li>linear: the warmup, then {@code max(0, (total - k) / max(1, total - warmup))}</li>
 *   <li>cosine: the warmup, then {@code max(0, 0.5 * (1 + cos(pi * 2 * 0.5 * progress)))},
 *       {@code progress = (k - warmup) / max(1, total - warmup)}</li>
 * </ul>
 * As in transformers, the plain constant schedule ignores warmup.
 */
public record LearningRateSchedule(SchedulerType type, double baseLearningRate, long warmupSteps, long totalSteps) {
    /** num_cycles of transformers' cosine schedule: half a cosine wave, from the peak down to 0. */
    private static final double COSINE_CYCLES = 0.5;

    public LearningRateSchedule {
        if (warmupSteps < 0) throw new IllegalArgumentException("warmup steps must be >= 0, got " + warmupSteps);
        if (totalSteps < 0) throw new IllegalArgumentException("total steps must be >= 0, got " + totalSteps);
    }

    /** The multiplier of the base learning rate at optimizer step {@code k} (from 0). */
    public double factor(long k) {
        return switch (type) {
            case CONSTANT -> 1.0;
            case CONSTANT_WITH_WARMUP -> k < warmupSteps ? (double) k / Math.max(1.0, warmupSteps) : 1.0;
            case LINEAR -> k < warmupSteps ? (double) k / Math.max(1, warmupSteps)
                    : Math.max(0.0, (double) (totalSteps - k) / Math.max(1, totalSteps - warmupSteps));
            case COSINE -> {
                if (k < warmupSteps) yield (double) k / Math.max(1, warmupSteps);
                double progress = (double) (k - warmupSteps) / Math.max(1, totalSteps - warmupSteps);
                yield Math.max(0.0, 0.5 * (1.0 + Math.cos(Math.PI * COSINE_CYCLES * 2.0 * progress)));
            }
        };
    }

    /** The learning rate of optimizer step {@code k} (from 0). */
    public double learningRate(long k) {
        return baseLearningRate * factor(k);
    }

    /**
     * Warmup steps as transformers computes them. transformers 4 has {@code warmup_steps} (an int) and
     * {@code warmup_ratio}: the steps win when positive, else {@code ceil(total * ratio)}. transformers 5 dropped
     * warmup_ratio and reads a {@code warmup_steps} below 1 as a ratio: {@code ceil(total * warmup_steps)}.
     * Both readings are honoured; giving both a positive warmup_steps and a positive warmup_ratio is an error.
     */
    public static long warmupSteps(double warmupStepsOrRatio, double warmupRatio, long totalSteps) {
        if (warmupStepsOrRatio < 0) throw new IllegalArgumentException("warmup_steps must be >= 0, got " + warmupStepsOrRatio);
        if (warmupRatio < 0 || warmupRatio > 1) throw new IllegalArgumentException("warmup_ratio must be in [0, 1], got " + warmupRatio);
        if (warmupStepsOrRatio >= 1 && warmupStepsOrRatio != Math.floor(warmupStepsOrRatio)) {
            throw new IllegalArgumentException("warmup_steps must be a whole number of steps, or a ratio below 1, got " + warmupStepsOrRatio);
        }
        if (warmupStepsOrRatio > 0 && warmupRatio > 0) {
            throw new IllegalArgumentException("give warmup_steps or warmup_ratio, not both (warmup_steps "
                    + warmupStepsOrRatio + ", warmup_ratio " + warmupRatio + ")");
        }
        if (warmupStepsOrRatio >= 1) return (long) warmupStepsOrRatio;
        double ratio = warmupStepsOrRatio > 0 ? warmupStepsOrRatio : warmupRatio;
        return (long) Math.ceil(totalSteps * ratio);
    }
}
