package dev.lora4j.train.bench;

import dev.lora4j.model.MemoryReport;

import java.util.List;
import java.util.Locale;

/**
 * What one benchmark configuration measured. Memory figures are bytes of the backend's tensor memory (what torch's
 * {@code memory_allocated} counts in the reference): {@code loadBytes} once the base weights are on the device (and
 * quantized, for QLoRA), {@code peakBytes} the most held at once during the run, weights, adapters, gradients,
 * optimizer state, activations and backend workspaces included.
 *
 * @param shape          the model shape's name (a preset's, or the model folder's)
 * @param device         the backend's description
 * @param basePrecision  how the frozen base is stored (BF16, NF4 + double quant, ...); for full fine-tuning how the
 *                       trained weights are
 * @param losses         the mean token loss of every optimizer step, the warm-up steps first
 * @param microBatchLosses the mean token loss of each micro-batch of each step, in the order of {@code losses}
 * @param stepSeconds    the time of each timed step
 * @param flops          the model FLOPs of a step (see {@link TrainingFlops})
 * @param mfu            model FLOPs per second over the measured GEMM peak; NaN when no peak was measured
 * @param memory         the peak split by part, as the model reports it; null when the run failed before it
 * @param optimizer      the optimizer and where its state lives (paged state in host memory is not device memory)
 * @param tokens         the token file the batches came from ({@code --tokens}), or null for synthetic batches
 * @param initialAdapter the adapter folder the adapters started from ({@code --init-adapter}), or null
 * @param error          why the run stopped (out of memory, ...), or null when it measured everything
 */
public record BenchResult(BenchSettings settings, String shape, String device, String basePrecision, long loadBytes,
                          long peakBytes, long trainableParameters, long allParameters, double loadSeconds,
                          List<Double> losses, List<List<Double>> microBatchLosses, List<Double> stepSeconds,
                          TrainingFlops flops, double mfu, MemoryReport memory, String optimizer, String tokens,
                          String initialAdapter, String error) {

    /** The most a 24 GB GPU leaves for tensors: 24 GiB less about 1 GiB the CUDA context and libraries hold. */
    public static final long BYTES_ON_A_24_GB_GPU = 23L << 30;

    public BenchResult {
        losses = List.copyOf(losses);
        microBatchLosses = microBatchLosses.stream().map(List::copyOf).toList();
        stepSeconds = List.copyOf(stepSeconds);
    }

    public boolean failed() {
        return error != null;
    }

    /** Whether the peak leaves room for the CUDA context on a 24 GB GPU (see {@link #BYTES_ON_A_24_GB_GPU}). */
    public boolean fitsOn24GbGpu() {
        return peakBytes > 0 && peakBytes <= BYTES_ON_A_24_GB_GPU;
    }

    public double timedSeconds() {
        double t = 0;
        for (double s : stepSeconds) t += s;
        return t;
    }

    public double samplesPerSecond() {
        return stepSeconds.isEmpty() ? Double.NaN : (double) settings.samplesPerStep() * stepSeconds.size() / timedSeconds();
    }

    public double tokensPerSecond() {
        return stepSeconds.isEmpty() ? Double.NaN : (double) settings.tokensPerStep() * stepSeconds.size() / timedSeconds();
    }

    /** The mean token loss of the last step, or NaN. */
    public double lastLoss() {
        return losses.isEmpty() ? Double.NaN : losses.getLast();
    }

    /**
     * "step losses (1 warm-up + 2 timed): 10.373012 10.371958 10.370551": every step's mean token loss with six
     * decimals, enough to compare with another implementation's to a millionth of a nat.
     */
    public String stepLossLine() {
        int warmup = Math.min(settings.warmupSteps(), losses.size());
        StringBuilder sb = new StringBuilder(String.format(Locale.ROOT, "step losses (%d warm-up + %d timed):", warmup,
                losses.size() - warmup));
        for (double l : losses) sb.append(String.format(Locale.ROOT, " %.6f", l));
        return sb.toString();
    }

    /** Model FLOPs per second over the timed steps. */
    public double modelFlopsPerSecond() {
        return stepSeconds.isEmpty() ? Double.NaN : flops.perStep() * stepSeconds.size() / timedSeconds();
    }
}
