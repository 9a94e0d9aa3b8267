package dev.lora4j.train;

import dev.lora4j.train.data.PackingStrategy;
import dev.lora4j.train.optim.OptimizerType;
import dev.lora4j.train.schedule.SchedulerType;

import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.Objects;

/**
 * The training arguments of an SFT run, with the names and defaults of TRL's {@code SFTConfig} (which extends
 * transformers' {@code TrainingArguments}); where TRL overrides a TrainingArguments default, TRL's wins:
 * learning_rate 2e-5 (TrainingArguments: 5e-5), logging_steps 10 (500), gradient_checkpointing true (false),
 * max_length 1024. Differences: report_to defaults to "tensorboard" (the one integration there is); eval_strategy
 * defaults to "steps" when an eval dataset is given (transformers: "no"); logging, eval and save steps below 1 are
 * ratios of the total steps, as in transformers.
 */
public record SftConfig(
        Path outputDir,
        // data preparation
        String datasetTextField, Integer maxLength, boolean packing, PackingStrategy packingStrategy, Boolean evalPacking,
        Boolean completionOnlyLoss, boolean assistantOnlyLoss, String eosToken, boolean shuffleDataset,
        // optimisation
        double learningRate, SchedulerType lrSchedulerType, double warmupSteps, double warmupRatio, double numTrainEpochs,
        long maxSteps, int perDeviceTrainBatchSize, int perDeviceEvalBatchSize, int gradientAccumulationSteps,
        double maxGradNorm, double weightDecay, double adamBeta1, double adamBeta2, double adamEpsilon, OptimizerType optim, long seed,
        boolean gradientCheckpointing, boolean bf16,
        // logging, evaluation, checkpoints
        double loggingSteps, boolean loggingFirstStep, String evalStrategy, Double evalSteps, String saveStrategy,
        double saveSteps, Integer saveTotalLimit, List<String> reportTo, String resumeFromCheckpoint, boolean disableTqdm) {

    public SftConfig {
        Objects.requireNonNull(outputDir, "output_dir");
        Objects.requireNonNull(datasetTextField, "dataset_text_field");
        Objects.requireNonNull(packingStrategy, "packing_strategy");
        Objects.requireNonNull(lrSchedulerType, "lr_scheduler_type");
        Objects.requireNonNull(optim, "optim");
        reportTo = List.copyOf(reportTo == null ? List.of() : reportTo);
        positive("per_device_train_batch_size", perDeviceTrainBatchSize);
        positive("per_device_eval_batch_size", perDeviceEvalBatchSize);
        positive("gradient_accumulation_steps", gradientAccumulationSteps);
        if (maxLength != null && maxLength < 1) throw new IllegalArgumentException("max_length must be >= 1 (or null for no truncation), got " + maxLength);
        if (packing && maxLength == null) throw new IllegalArgumentException("packing needs max_length: set max_length");
        if (!(learningRate >= 0) || !Double.isFinite(learningRate)) throw new IllegalArgumentException("learning_rate must be a finite number >= 0, got " + learningRate);
        if (!(numTrainEpochs > 0) && maxSteps <= 0) {
            throw new IllegalArgumentException("num_train_epochs must be > 0 when max_steps is not set, got " + numTrainEpochs);
        }
        if (maxSteps == 0 || maxSteps < -1) throw new IllegalArgumentException("max_steps must be a positive number of steps, or -1 to use num_train_epochs; got " + maxSteps);
        if (!(maxGradNorm >= 0)) throw new IllegalArgumentException("max_grad_norm must be >= 0 (0 disables clipping), got " + maxGradNorm);
        if (!(loggingSteps > 0)) throw new IllegalArgumentException("logging_steps must be > 0, got " + loggingSteps);
        if (!(saveSteps > 0)) throw new IllegalArgumentException("save_steps must be > 0, got " + saveSteps);
        if (evalSteps != null && !(evalSteps > 0)) throw new IllegalArgumentException("eval_steps must be > 0, got " + evalSteps);
        stepsOrRatio("logging_steps", loggingSteps);
        stepsOrRatio("save_steps", saveSteps);
        if (evalSteps != null) stepsOrRatio("eval_steps", evalSteps);
        if (saveTotalLimit != null && saveTotalLimit < 1) throw new IllegalArgumentException("save_total_limit must be >= 1 (or null for no limit), got " + saveTotalLimit);
        saveStrategy = oneOf("save_strategy", saveStrategy == null ? "steps" : saveStrategy, "steps", "no");
        if (evalStrategy != null) evalStrategy = oneOf("eval_strategy", evalStrategy, "steps", "no");
        for (String r : reportTo) oneOf("report_to", r, "tensorboard", "none", "all");
    }

    private static void positive(String name, int v) {
        if (v < 1) throw new IllegalArgumentException(name + " must be >= 1, got " + v);
    }

    private static void stepsOrRatio(String name, double v) {
        if (v >= 1 && v != Math.floor(v)) throw new IllegalArgumentException(name + " must be a whole number of steps, or a ratio of the total below 1, got " + v);
    }

    private static String oneOf(String name, String value, String... allowed) {
        String v = value.trim().toLowerCase(Locale.ROOT);
        for (String a : allowed) if (a.equals(v)) return v;
        throw new IllegalArgumentException(name + " must be one of " + String.join(", ", allowed) + "; got \"" + value + "\"");
    }

    /** TRL's defaults (see the class comment), writing into {@code trainer_output} as transformers does. */
    public static SftConfig defaults() {
        return builder().build();
    }

    public static Builder builder() {
        return new Builder();
    }

    public Builder toBuilder() {
        return new Builder(this);
    }

    /** Whether TensorBoard event files are written. */
    public boolean reportsToTensorBoard() {
        return reportTo.contains("tensorboard") || reportTo.contains("all");
    }

    /** transformers resolves steps below 1 as a ratio of the total: {@code ceil(total * ratio)}. */
    public static long resolveSteps(double stepsOrRatio, long totalSteps) {
        return stepsOrRatio < 1 ? Math.max(1, (long) Math.ceil(totalSteps * stepsOrRatio)) : (long) stepsOrRatio;
    }

    /** Fluent construction with the defaults of {@link #defaults()}; method names are the TRL names in camel case. */
    public static final class Builder {
        private Path outputDir = Path.of("trainer_output");
        private String datasetTextField = "text";
        private Integer maxLength = 1024;
        private boolean packing;
        private PackingStrategy packingStrategy = PackingStrategy.BFD;
        private Boolean evalPacking;
        private Boolean completionOnlyLoss;
        private boolean assistantOnlyLoss;
        private String eosToken;
        private boolean shuffleDataset;
        private double learningRate = 2e-5;
        private SchedulerType lrSchedulerType = SchedulerType.LINEAR;
        private double warmupSteps;
        private double warmupRatio;
        private double numTrainEpochs = 3.0;
        private long maxSteps = -1;
        private int perDeviceTrainBatchSize = 8;
        private int perDeviceEvalBatchSize = 8;
        private int gradientAccumulationSteps = 1;
        private double maxGradNorm = 1.0;
        private double weightDecay = 0.0;
        private double adamBeta1 = 0.9;
        private double adamBeta2 = 0.999;
        private double adamEpsilon = 1e-8;
        private OptimizerType optim = OptimizerType.ADAMW_TORCH;
        private long seed = 42;
        private boolean gradientCheckpointing = true;
        private boolean bf16;
        private double loggingSteps = 10;
        private boolean loggingFirstStep;
        private String evalStrategy;
        private Double evalSteps;
        private String saveStrategy = "steps";
        private double saveSteps = 500;
        private Integer saveTotalLimit;
        private List<String> reportTo = List.of("tensorboard");
        private String resumeFromCheckpoint;
        private boolean disableTqdm;

        Builder() {}

        Builder(SftConfig c) {
            outputDir = c.outputDir; datasetTextField = c.datasetTextField; maxLength = c.maxLength; packing = c.packing;
            packingStrategy = c.packingStrategy; evalPacking = c.evalPacking; completionOnlyLoss = c.completionOnlyLoss;
            assistantOnlyLoss = c.assistantOnlyLoss; eosToken = c.eosToken; shuffleDataset = c.shuffleDataset;
            learningRate = c.learningRate; lrSchedulerType = c.lrSchedulerType; warmupSteps = c.warmupSteps;
            warmupRatio = c.warmupRatio; numTrainEpochs = c.numTrainEpochs; maxSteps = c.maxSteps;
            perDeviceTrainBatchSize = c.perDeviceTrainBatchSize; perDeviceEvalBatchSize = c.perDeviceEvalBatchSize;
            gradientAccumulationSteps = c.gradientAccumulationSteps; maxGradNorm = c.maxGradNorm; weightDecay = c.weightDecay;
            adamBeta1 = c.adamBeta1; adamBeta2 = c.adamBeta2; adamEpsilon = c.adamEpsilon; optim = c.optim; seed = c.seed;
            gradientCheckpointing = c.gradientCheckpointing; bf16 = c.bf16; loggingSteps = c.loggingSteps; loggingFirstStep = c.loggingFirstStep;
            evalStrategy = c.evalStrategy; evalSteps = c.evalSteps; saveStrategy = c.saveStrategy; saveSteps = c.saveSteps;
            saveTotalLimit = c.saveTotalLimit; reportTo = c.reportTo; resumeFromCheckpoint = c.resumeFromCheckpoint;
            disableTqdm = c.disableTqdm;
        }

        public Builder outputDir(Path v) { outputDir = v; return this; }
        public Builder datasetTextField(String v) { datasetTextField = v; return this; }
        public Builder maxLength(Integer v) { maxLength = v; return this; }
        public Builder packing(boolean v) { packing = v; return this; }
        public Builder packingStrategy(PackingStrategy v) { packingStrategy = v; return this; }
        public Builder evalPacking(Boolean v) { evalPacking = v; return this; }
        public Builder completionOnlyLoss(Boolean v) { completionOnlyLoss = v; return this; }
        public Builder assistantOnlyLoss(boolean v) { assistantOnlyLoss = v; return this; }
        public Builder eosToken(String v) { eosToken = v; return this; }
        public Builder shuffleDataset(boolean v) { shuffleDataset = v; return this; }
        public Builder learningRate(double v) { learningRate = v; return this; }
        public Builder lrSchedulerType(SchedulerType v) { lrSchedulerType = v; return this; }
        public Builder warmupSteps(double v) { warmupSteps = v; return this; }
        public Builder warmupRatio(double v) { warmupRatio = v; return this; }
        public Builder numTrainEpochs(double v) { numTrainEpochs = v; return this; }
        public Builder maxSteps(long v) { maxSteps = v; return this; }
        public Builder perDeviceTrainBatchSize(int v) { perDeviceTrainBatchSize = v; return this; }
        public Builder perDeviceEvalBatchSize(int v) { perDeviceEvalBatchSize = v; return this; }
        public Builder gradientAccumulationSteps(int v) { gradientAccumulationSteps = v; return this; }
        public Builder maxGradNorm(double v) { maxGradNorm = v; return this; }
        public Builder weightDecay(double v) { weightDecay = v; return this; }
        public Builder adamBeta1(double v) { adamBeta1 = v; return this; }
        public Builder adamBeta2(double v) { adamBeta2 = v; return this; }
        public Builder adamEpsilon(double v) { adamEpsilon = v; return this; }
        public Builder optim(OptimizerType v) { optim = v; return this; }
        public Builder seed(long v) { seed = v; return this; }
        public Builder gradientCheckpointing(boolean v) { gradientCheckpointing = v; return this; }
        /** TrainingArguments' bf16: activations in BF16 (on CUDA; the CPU keeps F32). */
        public Builder bf16(boolean v) { bf16 = v; return this; }
        public Builder loggingSteps(double v) { loggingSteps = v; return this; }
        public Builder loggingFirstStep(boolean v) { loggingFirstStep = v; return this; }
        public Builder evalStrategy(String v) { evalStrategy = v; return this; }
        public Builder evalSteps(Double v) { evalSteps = v; return this; }
        public Builder saveStrategy(String v) { saveStrategy = v; return this; }
        public Builder saveSteps(double v) { saveSteps = v; return this; }
        public Builder saveTotalLimit(Integer v) { saveTotalLimit = v; return this; }
        public Builder reportTo(List<String> v) { reportTo = v; return this; }
        public Builder resumeFromCheckpoint(String v) { resumeFromCheckpoint = v; return this; }
        public Builder disableTqdm(boolean v) { disableTqdm = v; return this; }

        public SftConfig build() {
            return new SftConfig(outputDir, datasetTextField, maxLength, packing, packingStrategy, evalPacking,
                    completionOnlyLoss, assistantOnlyLoss, eosToken, shuffleDataset, learningRate, lrSchedulerType,
                    warmupSteps, warmupRatio, numTrainEpochs, maxSteps, perDeviceTrainBatchSize, perDeviceEvalBatchSize,
                    gradientAccumulationSteps, maxGradNorm, weightDecay, adamBeta1, adamBeta2, adamEpsilon, optim, seed,
                    gradientCheckpointing, bf16, loggingSteps, loggingFirstStep, evalStrategy, evalSteps, saveStrategy, saveSteps,
                    saveTotalLimit, reportTo, resumeFromCheckpoint, disableTqdm);
        }
    }
}
