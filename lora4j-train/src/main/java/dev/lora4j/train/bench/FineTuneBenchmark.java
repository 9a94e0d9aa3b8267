package dev.lora4j.train.bench;

import dev.lora4j.backend.Backend;
import dev.lora4j.model.FineTuneMethod;
import dev.lora4j.model.LlamaShape;
import dev.lora4j.model.LlamaWeights;
import dev.lora4j.model.LossSum;
import dev.lora4j.model.MemoryReport;
import dev.lora4j.model.TrainableLlama;
import dev.lora4j.model.TrainableParameterReport;
import dev.lora4j.model.TrainablePlan;
import dev.lora4j.model.TrainingBatch;
import dev.lora4j.quant.QuantSpec;
import dev.lora4j.tensor.DType;
import dev.lora4j.train.optim.AdamW;
import dev.lora4j.train.optim.GradientClipping;
import dev.lora4j.train.optim.Optimizer;
import dev.lora4j.train.optim.OptimizerType;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;
import java.util.function.Consumer;
import java.util.function.Supplier;

/**
 * Measures fine-tuning as the reference benchmark ({@code reference/hf_peft_bench.py}) does: the base weights go
 * onto a fresh backend, the adapters (or every weight) train on synthetic batches of uniformly random token ids,
 * with labels equal to the inputs; after the warm-up steps, optimizer steps of {@code accum} micro-batches are timed,
 * each ending when the device has finished it. Each configuration gets its own backend, so memory figures never
 * carry over from one to the next.
 *
 * <p>The gradients are those of the mean token loss of the whole optimizer step, as lora4j's trainer computes them;
 * AdamW steps at a constant learning rate.
 *
 * <p>With {@link BenchInputs} the batches come from a file and the adapters start from a saved PEFT adapter, so that
 * the losses of every step and micro-batch, which the result keeps, can be compared with another implementation's
 * on the same data ({@code tools/same_data_losses.py}).
 */
public final class FineTuneBenchmark {

    private FineTuneBenchmark() {}

    /**
     * Checks that a configuration can be built for this model (target modules, optimizer name, method), without
     * touching a device: so that a mistake in the settings stops the command before minutes of other runs.
     */
    public static void check(BenchSettings s, ModelSource source) {
        check(s, source, BenchInputs.NONE);
    }

    /**
     * As {@link #check(BenchSettings, ModelSource)}, and that the token file and initial adapter fit the configuration.
     *
     * @return a note worth printing, or null
     */
    public static String check(BenchSettings s, ModelSource source, BenchInputs inputs) {
        LlamaShape shape = LlamaShape.of(source.config());
        TrainablePlan.of(shape, s.fineTuneMethod());
        optimizerType(s);
        return inputs.checkFits(s, shape);
    }

    /**
     * Runs one configuration on a backend from {@code backends} (opened here and closed before returning). A failure
     * on the device (out of memory, ...) is reported in the result, not thrown.
     *
     * @param peak the measured GEMM peak for MFU; null leaves MFU out
     * @param log  progress lines, may be null
     */
    public static BenchResult run(BenchSettings s, ModelSource source, Supplier<Backend> backends, GemmPeak peak,
                                  Consumer<String> log) {
        return run(s, source, backends, peak, log, BenchInputs.NONE);
    }

    /**
     * As {@link #run(BenchSettings, ModelSource, Supplier, GemmPeak, Consumer)}, on the given token batches and from
     * the given initial adapter (checked with {@link #check(BenchSettings, ModelSource, BenchInputs)} first).
     */
    public static BenchResult run(BenchSettings s, ModelSource source, Supplier<Backend> backends, GemmPeak peak,
                                  Consumer<String> log, BenchInputs inputs) {
        Consumer<String> say = log == null ? line -> {} : log;
        FineTuneMethod method = s.fineTuneMethod();
        LlamaShape shape = LlamaShape.of(source.config());
        TrainablePlan plan = TrainablePlan.of(shape, method);
        TrainingFlops flops = TrainingFlops.of(plan, s.seq(), s.samplesPerStep());
        TrainableParameterReport params = TrainableParameterReport.of(plan);
        QuantSpec quantization = method.quantization();
        DType storage = s.method() == BenchMethod.FULL ? s.fullPrecision() : DType.BF16;
        String precision = precision(s.method(), storage, quantization);
        List<Double> losses = new ArrayList<>(), times = new ArrayList<>();
        List<List<Double>> microBatchLosses = new ArrayList<>();
        String device = null;
        long loadBytes = 0, peakBytes = 0;
        double loadSeconds = Double.NaN;
        MemoryReport memory = null;
        String optimizerState = null;
        try (Backend backend = backends.get()) {
            device = backend.description();
            long t0 = System.nanoTime();
            say.accept(String.format(Locale.ROOT, "%s: putting %s weights of %s on %s", s.label(), source.random() ? "random" : "the",
                    source.shapeName(), backend.name()));
            LlamaWeights weights = source.load(backend, storage, quantization, s.seed(), null);
            try (TrainableLlama model = TrainableLlama.fromWeights(backend, weights, method, s.seed())) {
                backend.synchronize();
                loadSeconds = (System.nanoTime() - t0) / 1e9;
                // Measured by the model after its base is on the device and, for QLoRA, quantized; before adapters.
                loadBytes = model.baseMemoryAtLoad();
                model.setGradientCheckpointing(s.gradientCheckpointing());
                if (inputs.initialAdapter() != null) {
                    inputs.initialAdapter().applyTo(model);
                    say.accept(s.label() + ": initial adapter from " + inputs.initialAdapter().folder());
                }
                AdamW.Hyperparameters d = AdamW.Hyperparameters.defaults();
                try (Optimizer optimizer = Optimizer.create(optimizerType(s), backend, model.parameters(),
                        new AdamW.Hyperparameters(d.beta1(), d.beta2(), d.eps(), s.weightDecay()))) {
                    int[][][] synthetic = inputs.tokens() == null ? syntheticBatches(s, shape.vocabSize()) : null;
                    long targets = (long) s.samplesPerStep() * (s.seq() - 1);
                    for (int step = 0; step < s.warmupSteps() + s.steps(); step++) {
                        boolean timed = step >= s.warmupSteps();
                        int[][][] ids = synthetic != null ? synthetic : inputs.tokens().forStep(step, s.accum());
                        long start = System.nanoTime();
                        List<LossSum> parts = step(model, optimizer, ids, targets, s, step);
                        backend.synchronize();
                        double seconds = (System.nanoTime() - start) / 1e9;
                        LossSum total = LossSum.ZERO;
                        List<Double> each = new ArrayList<>();
                        for (LossSum part : parts) {
                            total = total.plus(part);
                            each.add(part.mean());
                        }
                        double loss = total.mean();
                        losses.add(loss);
                        microBatchLosses.add(each);
                        if (timed) times.add(seconds);
                        say.accept(String.format(Locale.ROOT, "%s: %s step %d: %.3f s, loss %.4f", s.label(),
                                timed ? "timed" : "warm-up", timed ? step - s.warmupSteps() + 1 : step + 1, seconds, loss));
                    }
                    peakBytes = backend.peakMemoryInUse();
                    memory = model.memoryReport(optimizer.stateBytes());
                    optimizerState = optimizer.describe();
                }
            }
            return new BenchResult(s, source.shapeName(), device, precision, loadBytes, peakBytes, params.trainable(),
                    params.all(), loadSeconds, losses, microBatchLosses, times, flops, mfu(flops, times, peak), memory,
                    optimizerState, inputs.tokensSource(), inputs.initialAdapterSource(), null);
        } catch (RuntimeException | OutOfMemoryError e) {
            String why = e.getMessage() == null ? e.getClass().getSimpleName() : e.getMessage();
            say.accept(s.label() + ": failed: " + why);
            return new BenchResult(s, source.shapeName(), device, precision, loadBytes, peakBytes, params.trainable(),
                    params.all(), loadSeconds, losses, microBatchLosses, List.of(), flops, Double.NaN, memory, optimizerState,
                    inputs.tokensSource(), inputs.initialAdapterSource(), why);
        }
    }

    /** The optimizer of {@code --optim}, by transformers' names (adamw_torch, paged_adamw_32bit, adamw_8bit, ...). */
    static OptimizerType optimizerType(BenchSettings s) {
        try {
            return OptimizerType.parse(s.optim());
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("--optim '" + s.optim() + "': " + e.getMessage(), e);
        }
    }

    /** One optimizer step; returns the loss of each micro-batch, in order. */
    private static List<LossSum> step(TrainableLlama model, Optimizer optimizer, int[][][] ids, long targets, BenchSettings s,
                                      int step) {
        model.zeroGradOnNextBackward(); // as the trainer starts a step (there is always a micro-batch here)
        List<LossSum> losses = new ArrayList<>(ids.length);
        for (int i = 0; i < ids.length; i++) {
            // Each micro-batch of each step draws its own dropout masks, as a training run does.
            TrainingBatch batch = TrainingBatch.languageModelling(ids[i], s.seed() * 1_000_003L + (long) step * ids.length + i);
            losses.add(model.forwardBackward(batch, (float) (1.0 / targets)));
        }
        if (s.maxGradNorm() > 0) GradientClipping.clip(model.backend(), model.parameters(), s.maxGradNorm());
        optimizer.step(s.learningRate());
        return losses;
    }

    /**
     * The micro-batches of a step, reused by every step: {@code accum} × {@code microBatch} rows of {@code seq}
     * token ids drawn uniformly from the vocabulary with the configuration's seed (the reference draws one batch
     * with torch.randint and reuses it for every micro-batch).
     */
    static int[][][] syntheticBatches(BenchSettings s, int vocab) {
        SplittableRandom random = new SplittableRandom(s.seed());
        int[][][] ids = new int[s.accum()][s.microBatch()][s.seq()];
        for (int[][] batch : ids) for (int[] row : batch) for (int t = 0; t < row.length; t++) row[t] = random.nextInt(vocab);
        return ids;
    }

    private static double mfu(TrainingFlops flops, List<Double> times, GemmPeak peak) {
        if (peak == null || times.isEmpty()) return Double.NaN;
        double seconds = 0;
        for (double t : times) seconds += t;
        return flops.perStep() * times.size() / seconds / peak.flopsPerSecond();
    }

    /** "BF16", "NF4 + double quant (BF16 compute)", "F32". */
    static String precision(BenchMethod method, DType storage, QuantSpec q) {
        if (q != null) {
            return q.type() + (q.doubleQuant() ? " + double quant" : "") + " (" + q.computeType() + " compute)";
        }
        return storage.toString();
    }
}
