package dev.lora4j.train;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.lora4j.backend.Backend;
import dev.lora4j.chat.ChatMessage;
import dev.lora4j.chat.ChatTemplate;
import dev.lora4j.generate.GenerationOptions;
import dev.lora4j.io.SafetensorsModel;
import dev.lora4j.io.TensorInfo;
import dev.lora4j.model.FineTuneMethod;
import dev.lora4j.model.LossSum;
import dev.lora4j.model.MemoryReport;
import dev.lora4j.model.TrainableLlama;
import dev.lora4j.model.TrainableParameter;
import dev.lora4j.model.TrainingBatch;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import dev.lora4j.tokenizer.Tokenizer;
import dev.lora4j.train.checkpoint.CheckpointFolders;
import dev.lora4j.train.checkpoint.TrainerState;
import dev.lora4j.train.data.DataOrder;
import dev.lora4j.train.data.DataPosition;
import dev.lora4j.train.data.DatasetReader;
import dev.lora4j.train.data.DatasetRecord;
import dev.lora4j.train.data.ExampleTokenizer;
import dev.lora4j.train.data.SftDataset;
import dev.lora4j.train.data.SftRecords;
import dev.lora4j.train.data.SplitMix64;
import dev.lora4j.train.data.TokenizedSequence;
import dev.lora4j.train.data.TrainingSample;
import dev.lora4j.train.metrics.MetricsLog;
import dev.lora4j.train.metrics.TensorBoardWriter;
import dev.lora4j.train.optim.AdamW;
import dev.lora4j.train.optim.GradientClipping;
import dev.lora4j.train.optim.Optimizer;
import dev.lora4j.train.schedule.LearningRateSchedule;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.LocalDateTime;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * Supervised fine-tuning as TRL's SFTTrainer does it, on a {@link TrainableLlama}:
 * <pre>{@code
 * try (SftTrainer trainer = SftTrainer.builder()
 *         .model(Path.of("my-model"), Device.AUTO)
 *         .lora(LoraConfig.defaults().withR(16).withLoraAlpha(32))
 *         .trainDataset(Path.of("train.jsonl"))
 *         .config(SftConfig.builder().learningRate(2e-4).outputDir(Path.of("out")).build())
 *         .build()) {
 *     System.out.println(trainer.model().trainableParameters());
 *     trainer.train();
 * }
 * }</pre>
 *
 * <p>Each optimizer step runs up to gradient_accumulation_steps micro-batches of per_device_train_batch_size
 * samples; the loss of every micro-batch is scaled by 1 / (the target tokens of the whole step), so the gradient is
 * that of the step's mean token loss whatever the accumulation (transformers' num_items_in_batch). Then the
 * gradients are clipped to max_grad_norm, AdamW steps at the schedule's learning rate, and every logging_steps the
 * mean step loss, the learning rate of the last step, its gradient norm and the throughput are logged to
 * {@code metrics.jsonl} and TensorBoard. Checkpoints ({@code checkpoint-N}: adapter, optimizer moments,
 * trainer_state.json) are written atomically every save_steps and at the end; a run resumed from one continues
 * with the same batches, dropout masks and learning rates, so on the CPU it ends bit for bit where an uninterrupted
 * run ends. At the end {@code memory_report.json} says where the device memory went ({@link MemoryReport}).
 */
public final class SftTrainer implements AutoCloseable {
    public static final String METRICS_FILE = "metrics.jsonl";
    public static final String OPTIMIZER_FILE = "optimizer.safetensors";
    private static final ObjectMapper JSON = new ObjectMapper();

    private final TrainableLlama model;
    private final Tokenizer tokenizer;
    private final SftConfig config;
    private final SftDataset train;
    private final SftDataset eval;
    private final List<TrainingListener> listeners = new ArrayList<>();
    private final List<AutoCloseable> owned = new ArrayList<>();
    private Optimizer optimizer;
    private boolean trained;

    /**
     * A trainer over a model and prepared datasets. The trainer does not own the model: close the model after the
     * trainer. {@code eval} may be null.
     */
    public SftTrainer(TrainableLlama model, Tokenizer tokenizer, SftConfig config, SftDataset train, SftDataset eval) {
        this.model = Objects.requireNonNull(model, "model");
        this.tokenizer = tokenizer;
        this.config = Objects.requireNonNull(config, "config");
        this.train = Objects.requireNonNull(train, "train dataset");
        this.eval = eval;
        model.setGradientCheckpointing(config.gradientCheckpointing());
        this.optimizer = Optimizer.create(config.optim(), model.backend(), model.parameters(),
                new AdamW.Hyperparameters(config.adamBeta1(), config.adamBeta2(), config.adamEpsilon(), config.weightDecay()));
    }

    public static SftTrainerBuilder builder() {
        return new SftTrainerBuilder();
    }

    /** Prepares a dataset file with this configuration's data options (packing per eval_packing for eval). */
    public static SftDataset prepareDataset(Path file, Tokenizer tokenizer, SftConfig config, boolean forEvaluation) {
        boolean packing = forEvaluation && config.evalPacking() != null ? config.evalPacking() : config.packing();
        ChatTemplate template = tokenizer.chatTemplate()
                .map(t -> ChatTemplate.of(t, tokenizer.bosToken(), tokenizer.eosToken())).orElse(null);
        ExampleTokenizer exampleTokenizer = new ExampleTokenizer(tokenizer, template, config.eosToken(),
                config.completionOnlyLoss(), config.assistantOnlyLoss());
        List<DatasetRecord> records = DatasetReader.read(file);
        if (config.shuffleDataset() && !forEvaluation) records = shuffled(records, config.seed());
        return SftDataset.prepare(file.toString(), records, exampleTokenizer,
                new SftDataset.Options(config.datasetTextField(), config.maxLength(), packing, config.packingStrategy()));
    }

    /** TRL's shuffle_dataset: the records shuffled once, before packing, from the seed. */
    private static <T> List<T> shuffled(List<T> records, long seed) {
        int[] perm = new DataOrder(records.size(), 1, seed ^ 0x5DEECE66DL, true).permutation(0);
        List<T> out = new ArrayList<>(records.size());
        for (int i : perm) out.add(records.get(i));
        return out;
    }

    public TrainableLlama model() { return model; }

    public SftConfig config() { return config; }

    /** The optimizer config.optim names, over the model's trainable parameters. */
    public Optimizer optimizer() { return optimizer; }

    public SftDataset trainDataset() { return train; }

    public SftDataset evalDataset() { return eval; }

    public SftTrainer addListener(TrainingListener listener) {
        listeners.add(Objects.requireNonNull(listener));
        return this;
    }

    /** Closed with the trainer (the builder hands over the model and backend it made). */
    void own(AutoCloseable resource) {
        owned.add(resource);
    }

    /** The steps, epochs and intervals this run will take. */
    public TrainingPlan plan() {
        return TrainingPlan.of(config, train.size(), eval != null);
    }

    // ---- training ------------------------------------------------------------------------------------------------

    /** Mutable bookkeeping of a run, what a checkpoint saves. */
    private static final class RunState {
        long globalStep;
        DataPosition position = DataPosition.START;
        long tokensSeen;
        double trainLossSum;
        Double bestMetric;
        Long bestStep;
        final List<JsonNode> history = new ArrayList<>();
    }

    /**
     * Trains for the configured steps (resuming first when resume_from_checkpoint says so), then writes the adapter
     * (or the model) into output_dir. A trainer trains once.
     */
    public TrainResult train() throws IOException {
        if (trained) throw new IllegalStateException("a trainer trains once; build a new one (with resume_from_checkpoint to continue)");
        trained = true;
        TrainingPlan plan = plan();
        Backend backend = model.backend();
        Path out = config.outputDir();
        Files.createDirectories(out);
        CheckpointFolders.removeLeftovers(out);
        LearningRateSchedule schedule = new LearningRateSchedule(config.lrSchedulerType(), config.learningRate(),
                plan.warmupSteps(), plan.totalSteps());
        DataOrder order = new DataOrder(train.size(), config.perDeviceTrainBatchSize(), config.seed(), true);
        RunState st = new RunState();
        Path resumeFrom = resolveResume();
        if (resumeFrom != null) resume(resumeFrom, st, plan);

        long start = System.nanoTime();
        double lastEval = Double.NaN;
        try (MetricsLog metrics = resumeFrom == null ? MetricsLog.create(out.resolve(METRICS_FILE))
                : MetricsLog.resume(out.resolve(METRICS_FILE), st.globalStep);
             TensorBoardWriter tb = config.reportsToTensorBoard() ? TensorBoardWriter.create(runFolder(out)) : null) {
            Logger log = new Logger(metrics, tb, st);
            for (TrainingListener l : listeners) l.onStart(plan, st.globalStep);

            double intervalLoss = 0;
            long intervalSteps = 0, intervalTokens = 0;
            long intervalStart = System.nanoTime();
            while (st.globalStep < plan.totalSteps()) {
                if (st.position.batch() >= plan.batchesPerEpoch()) st.position = new DataPosition(st.position.epoch() + 1, 0);
                long stepStart = System.nanoTime();
                int micro = Math.min(config.gradientAccumulationSteps(), plan.batchesPerEpoch() - st.position.batch());
                List<TrainingBatch> batches = new ArrayList<>(micro);
                long targets = 0, tokens = 0;
                for (int j = 0; j < micro; j++) {
                    TrainingBatch b = batch(order.batch(train.samples(), st.position.epoch(), st.position.batch() + j),
                            dropoutSeed(st.globalStep, j));
                    batches.add(b);
                    targets += b.targetCount();
                    tokens += b.totalTokens();
                }
                LossSum loss = LossSum.ZERO;
                // A step without a single target (every label masked) has no gradient; it still counts as a step.
                if (targets > 0) {
                    // The first micro-batch writes the products' weight gradients instead of adding to zeros.
                    model.zeroGradOnNextBackward();
                    for (TrainingBatch b : batches) loss = loss.plus(model.forwardBackward(b, (float) (1.0 / targets)));
                } else {
                    model.zeroGrad();
                }
                double gradNorm = GradientClipping.clip(backend, model.parameters(), config.maxGradNorm());
                double stepLoss = targets > 0 ? loss.sum() / targets : 0.0;
                requireFinite(st.globalStep + 1, stepLoss, gradNorm, config.learningRate(), out);
                double lr = schedule.learningRate(st.globalStep);
                optimizer.step(lr);
                st.globalStep++;
                st.position = new DataPosition(st.position.epoch(), st.position.batch() + micro);
                st.tokensSeen += tokens;
                st.trainLossSum += stepLoss;
                double epoch = st.position.epoch() + (double) st.position.batch() / plan.batchesPerEpoch();
                intervalLoss += stepLoss;
                intervalSteps++;
                intervalTokens += tokens;
                var report = new TrainingListener.StepReport(st.globalStep, plan.totalSteps(), epoch, stepLoss, gradNorm, lr,
                        tokens, targets, (System.nanoTime() - stepStart) / 1e9, backend.peakMemoryInUse());
                for (TrainingListener l : listeners) l.onStep(report);

                boolean last = st.globalStep == plan.totalSteps();
                if (st.globalStep % plan.loggingSteps() == 0 || (config.loggingFirstStep() && st.globalStep == 1)) {
                    double seconds = (System.nanoTime() - intervalStart) / 1e9;
                    Map<String, Object> rec = new LinkedHashMap<>();
                    rec.put("loss", intervalLoss / intervalSteps);
                    rec.put("grad_norm", gradNorm);
                    rec.put("learning_rate", lr);
                    rec.put("epoch", epoch);
                    rec.put("num_tokens", st.tokensSeen);
                    rec.put("tokens_per_second", seconds > 0 ? intervalTokens / seconds : 0.0);
                    rec.put("peak_memory_bytes", backend.peakMemoryInUse());
                    log.write(rec, "train/");
                    intervalLoss = 0;
                    intervalSteps = 0;
                    intervalTokens = 0;
                    intervalStart = System.nanoTime();
                }
                if (plan.evalSteps() > 0 && (st.globalStep % plan.evalSteps() == 0 || last)) {
                    lastEval = evaluateAndLog(log, st, epoch);
                }
                if (plan.saveSteps() > 0 && (st.globalStep % plan.saveSteps() == 0 || last)) {
                    Path folder = saveCheckpoint(st, plan, schedule);
                    for (TrainingListener l : listeners) l.onCheckpoint(st.globalStep, folder);
                }
            }
            double runtime = (System.nanoTime() - start) / 1e9;
            double trainLoss = st.globalStep == 0 ? Double.NaN : st.trainLossSum / st.globalStep;
            Map<String, Object> summary = new LinkedHashMap<>();
            summary.put("train_runtime", runtime);
            summary.put("train_tokens_per_second", runtime > 0 ? st.tokensSeen / runtime : 0.0);
            summary.put("train_steps_per_second", runtime > 0 ? st.globalStep / runtime : 0.0);
            summary.put("train_loss", trainLoss);
            summary.put("epoch", st.position.epoch() + (double) st.position.batch() / plan.batchesPerEpoch());
            log.write(summary, null);
            MemoryReport memory = memoryReport();
            memory.write(out.resolve(MemoryReport.FILE_NAME));
            saveFinal(out);
            TrainResult result = new TrainResult(st.globalStep, trainLoss, lastEval, runtime, st.tokensSeen, out, memory);
            for (TrainingListener l : listeners) l.onEnd(result);
            return result;
        }
    }

    /**
     * The model's device memory by part, measured now, with the optimizer's state as it reports it (see
     * {@link MemoryReport}); {@link #train()} writes the one measured at its end into output_dir as
     * {@value MemoryReport#FILE_NAME}.
     */
    public MemoryReport memoryReport() {
        return model.memoryReport(optimizer.stateBytes());
    }

    /** The mean token loss over the eval dataset, as transformers' evaluation loop averages it (see the class comment). */
    public double evaluate() {
        if (eval == null) throw new IllegalStateException("no eval dataset was given");
        DataOrder order = new DataOrder(eval.size(), config.perDeviceEvalBatchSize(), config.seed(), false);
        // transformers repeats each batch's mean loss once per example and averages: a mean of batch means
        // weighted by batch size.
        double weighted = 0;
        long examples = 0;
        for (int b = 0; b < order.batchesPerEpoch(); b++) {
            List<TrainingSample> samples = order.batch(eval.samples(), 0, b);
            LossSum loss = model.evaluate(batch(samples, 0));
            if (loss.tokens() == 0) continue;
            weighted += loss.mean() * samples.size();
            examples += samples.size();
        }
        return examples == 0 ? Double.NaN : weighted / examples;
    }

    private double evaluateAndLog(Logger log, RunState st, double epoch) throws IOException {
        long t0 = System.nanoTime();
        double evalLoss = evaluate();
        Map<String, Object> rec = new LinkedHashMap<>();
        rec.put("eval_loss", evalLoss);
        rec.put("eval_runtime", (System.nanoTime() - t0) / 1e9);
        rec.put("epoch", epoch);
        log.write(rec, "eval/");
        if (Double.isFinite(evalLoss) && (st.bestMetric == null || evalLoss < st.bestMetric)) {
            st.bestMetric = evalLoss;
            st.bestStep = st.globalStep;
        }
        for (TrainingListener l : listeners) l.onEvaluate(st.globalStep, evalLoss);
        return evalLoss;
    }

    /** A micro-batch: each sample's sequences become rows (a packed bin's sequences stay separate). */
    static TrainingBatch batch(List<TrainingSample> samples, long dropoutSeed) {
        List<int[]> ids = new ArrayList<>(), labels = new ArrayList<>();
        for (TrainingSample s : samples) {
            for (TokenizedSequence q : s.sequences()) {
                ids.add(q.inputIds());
                labels.add(q.labels());
            }
        }
        return new TrainingBatch(ids.toArray(new int[0][]), labels.toArray(new int[0][]), dropoutSeed);
    }

    /** A seed per (step, micro-batch), from the run's seed: the dropout masks a resumed run must see again. */
    private long dropoutSeed(long step, int micro) {
        return SplitMix64.mix(SplitMix64.mix(config.seed() ^ 0x3C6EF372FE94F82BL) + step * 0x100000001B3L + micro);
    }

    // ---- logging -------------------------------------------------------------------------------------------------

    /** Writes one record to metrics.jsonl, the log history and TensorBoard (as transformers' TensorBoardCallback names tags). */
    private final class Logger {
        private final MetricsLog metrics;
        private final TensorBoardWriter tb;
        private final RunState st;

        Logger(MetricsLog metrics, TensorBoardWriter tb, RunState st) {
            this.metrics = metrics;
            this.tb = tb;
            this.st = st;
        }

        /** {@code tagPrefix}: "train/" or "eval/" for TensorBoard (an "eval_" prefix of a key is dropped); null: not to TensorBoard. */
        void write(Map<String, Object> values, String tagPrefix) throws IOException {
            Map<String, Object> rec = new LinkedHashMap<>();
            rec.put("step", st.globalStep);
            rec.putAll(values);
            metrics.write(rec);
            st.history.add(JSON.valueToTree(sanitized(rec)));
            if (tb != null && tagPrefix != null) {
                Map<String, Number> scalars = new LinkedHashMap<>();
                for (Map.Entry<String, Object> e : values.entrySet()) {
                    if (!(e.getValue() instanceof Number n)) continue;
                    String key = e.getKey().startsWith("eval_") ? e.getKey().substring(5) : e.getKey();
                    scalars.put(tagPrefix + key, n);
                }
                tb.scalars(st.globalStep, scalars);
            }
            for (TrainingListener l : listeners) l.onLog(rec);
        }

        private Map<String, Object> sanitized(Map<String, Object> rec) {
            Map<String, Object> out = new LinkedHashMap<>();
            rec.forEach((k, v) -> out.put(k, v instanceof Double d && !Double.isFinite(d) ? String.valueOf(d) : v));
            return out;
        }
    }

    private static Path runFolder(Path out) {
        String stamp = LocalDateTime.now().format(DateTimeFormatter.ofPattern("yyyy-MM-dd_HH-mm-ss"));
        Path folder = out.resolve("runs").resolve(stamp);
        for (int i = 1; Files.exists(folder); i++) folder = out.resolve("runs").resolve(stamp + "_" + i);
        return folder;
    }

    // ---- checkpoints ---------------------------------------------------------------------------------------------

    private Path saveCheckpoint(RunState st, TrainingPlan plan, LearningRateSchedule schedule) throws IOException {
        Path out = config.outputDir();
        TrainerState state = new TrainerState(st.globalStep,
                st.position.epoch() + (double) st.position.batch() / plan.batchesPerEpoch(), plan.totalSteps(),
                plan.epochs(), (int) plan.loggingSteps(), (int) plan.evalSteps(), (int) plan.saveSteps(),
                config.perDeviceTrainBatchSize(), st.bestMetric, st.bestStep, null, st.history, st.position, config.seed(),
                train.fingerprint(), train.size(), config.gradientAccumulationSteps(), schedule.type().configName(),
                schedule.baseLearningRate(), schedule.warmupSteps(), st.tokensSeen, st.trainLossSum, methodName());
        Path folder = CheckpointFolders.write(out, st.globalStep, dir -> {
            saveWeights(dir);
            optimizer.save(dir.resolve(OPTIMIZER_FILE));
            state.write(dir.resolve(CheckpointFolders.STATE_FILE));
        });
        if (config.saveTotalLimit() != null) CheckpointFolders.rotate(out, config.saveTotalLimit(), null);
        return folder;
    }

    private void saveWeights(Path dir) throws IOException {
        if (model.method() instanceof FineTuneMethod.Lora) model.saveAdapter(dir);
        else model.saveModel(dir);
    }

    private void saveFinal(Path out) throws IOException {
        saveWeights(out);
    }

    private String methodName() {
        return model.method().name();
    }

    /** A NaN or infinite loss or gradient norm ends the run, with the step and what to change. */
    static void requireFinite(long step, double loss, double gradNorm, double learningRate, Path outputDir) {
        if (Double.isFinite(gradNorm) && Double.isFinite(loss)) return;
        String what = Double.isFinite(loss) ? "gradient norm is " + gradNorm : "loss is " + loss;
        throw new TrainingDivergedException("step " + step + ": the " + what + "; training has diverged. Lower"
                + " learning_rate (now " + learningRate + ") or max_grad_norm, and resume from the last checkpoint"
                + lastCheckpointHint(outputDir));
    }

    private static String lastCheckpointHint(Path out) {
        try {
            return CheckpointFolders.latest(out).map(p -> " (" + p + ")").orElse(" (none was saved yet)");
        } catch (IOException e) {
            return "";
        }
    }

    /** resume_from_checkpoint: a checkpoint folder, or "latest"/"true" for the newest one in output_dir. */
    private Path resolveResume() throws IOException {
        String r = config.resumeFromCheckpoint();
        if (r == null || r.isBlank() || r.equalsIgnoreCase("false")) return null;
        if (r.equalsIgnoreCase("latest") || r.equalsIgnoreCase("true")) {
            return CheckpointFolders.latest(config.outputDir()).orElseThrow(() -> new IllegalArgumentException(
                    "resume_from_checkpoint is \"" + r + "\", but " + config.outputDir() + " has no complete checkpoint-N folder;"
                            + " start without resume_from_checkpoint, or point it at a checkpoint folder"));
        }
        Path p = Path.of(r);
        if (!Files.isRegularFile(p.resolve(CheckpointFolders.STATE_FILE))) {
            throw new IllegalArgumentException("resume_from_checkpoint " + p + " is not a complete checkpoint: it has no "
                    + CheckpointFolders.STATE_FILE + "; give a checkpoint-N folder of a previous run, or \"latest\"");
        }
        return p;
    }

    private void resume(Path folder, RunState st, TrainingPlan plan) throws IOException {
        TrainerState s = TrainerState.read(folder.resolve(CheckpointFolders.STATE_FILE));
        List<String> differences = new ArrayList<>();
        if (!s.datasetFingerprint().equals(train.fingerprint()) || s.datasetSize() != train.size()) {
            differences.add("the training data differ (" + s.datasetSize() + " samples then, " + train.size() + " now, or other tokens)");
        }
        if (s.trainBatchSize() != config.perDeviceTrainBatchSize()) {
            differences.add("per_device_train_batch_size was " + s.trainBatchSize() + ", now " + config.perDeviceTrainBatchSize());
        }
        if (s.gradientAccumulationSteps() != config.gradientAccumulationSteps()) {
            differences.add("gradient_accumulation_steps was " + s.gradientAccumulationSteps() + ", now " + config.gradientAccumulationSteps());
        }
        if (s.seed() != config.seed()) differences.add("seed was " + s.seed() + ", now " + config.seed());
        if (!s.method().equals(methodName())) differences.add("method was " + s.method() + ", now " + methodName());
        if (!differences.isEmpty()) {
            throw new IllegalArgumentException("cannot resume from " + folder + " exactly: " + String.join("; ", differences)
                    + ". Resume with the settings and data of the run that wrote it, or start a new run in another output_dir");
        }
        if (s.position().batch() > plan.batchesPerEpoch()) {
            throw new IllegalArgumentException(folder + " is at batch " + s.position().batch() + " of an epoch of " + plan.batchesPerEpoch());
        }
        loadWeights(folder);
        optimizer.load(folder.resolve(OPTIMIZER_FILE));
        if (optimizer.steps() != s.globalStep()) {
            throw new IOException(folder + ": the optimizer took " + optimizer.steps() + " steps but trainer_state.json says "
                    + s.globalStep() + "; the checkpoint is inconsistent");
        }
        st.globalStep = s.globalStep();
        st.position = s.position();
        st.tokensSeen = s.tokensSeen();
        st.trainLossSum = s.trainLossSum();
        st.bestMetric = s.bestMetric();
        st.bestStep = s.bestGlobalStep();
        st.history.addAll(s.logHistory());
    }

    private void loadWeights(Path folder) throws IOException {
        if (model.method() instanceof FineTuneMethod.Lora) {
            model.loadAdapter(folder);
            return;
        }
        Backend backend = model.backend();
        try (SafetensorsModel weights = SafetensorsModel.open(folder)) {
            for (TrainableParameter p : model.parameters()) {
                if (!weights.contains(p.name())) throw new IOException(folder + " has no weight " + p.name() + " to resume from");
                TensorInfo info = weights.info(p.name());
                if (!Arrays.equals(info.shape(), p.value().shape())) {
                    throw new IOException(folder + ": " + p.name() + " has shape " + Arrays.toString(info.shape())
                            + " but the model needs " + Arrays.toString(p.value().shape()));
                }
                try (Tensor t = backend.upload(weights.data(p.name()), info.dtype(), p.value().dtype(), p.value().shape())) {
                    backend.copy(t, p.value());
                }
            }
        }
    }

    // ---- samples -------------------------------------------------------------------------------------------------

    /**
     * Greedy continuations of prompts, to compare the model before and after training. Prompts are encoded as the
     * training data were: rendered as a user turn with the chat template for conversational datasets, else as
     * plain text with the tokenizer's special tokens.
     */
    public List<String> samples(List<String> prompts, int maxNewTokens) {
        if (tokenizer == null) throw new IllegalStateException("samples need the tokenizer");
        SftRecords.Kind kind = train.stats().kind();
        boolean chat = (kind == SftRecords.Kind.CONVERSATIONAL || kind == SftRecords.Kind.CONVERSATIONAL_PROMPT_COMPLETION)
                && tokenizer.chatTemplate().isPresent();
        List<String> out = new ArrayList<>();
        for (String prompt : prompts) {
            int[] ids = chat
                    ? tokenizer.encode(ChatTemplate.of(tokenizer.chatTemplate().get(), tokenizer.bosToken(), tokenizer.eosToken())
                            .render(List.of(ChatMessage.user(prompt)), true), false)
                    : tokenizer.encode(prompt, true);
            out.add(model.generate(ids, GenerationOptions.greedy(maxNewTokens), tokenizer, null).text());
        }
        return out;
    }

    @Override
    public void close() {
        if (optimizer != null) optimizer.close();
        optimizer = null;
        for (int i = owned.size() - 1; i >= 0; i--) {
            try {
                owned.get(i).close();
            } catch (Exception e) {
                throw new IllegalStateException("closing " + owned.get(i) + " failed: " + e.getMessage(), e);
            }
        }
        owned.clear();
    }
}
