package dev.lora4j.train.bench;

import dev.lora4j.lora.LoraConfig;
import dev.lora4j.lora.TargetModules;
import dev.lora4j.model.FineTuneMethod;
import dev.lora4j.tensor.DType;

import java.util.Arrays;
import java.util.List;
import java.util.Locale;

/**
 * One configuration of {@code lora4j bench}: what trains, the batch shape and how many optimizer steps are timed.
 * The defaults are those of the reference benchmark ({@code reference/hf_peft_bench.py}): r=16, lora_alpha=2r,
 * dropout 0.05, q_proj and v_proj, sequences of 1024, micro-batches of 4, 4 accumulation steps, one warm-up step
 * and two timed steps, AdamW at lr 2e-4 with torch's default weight decay 0.01 and no gradient clipping.
 *
 * @param targetModules as given: names separated by commas (q_proj,v_proj), all-linear, or a regular expression;
 *                      ignored (null) for full fine-tuning
 * @param maxGradNorm   gradient clipping by global norm; 0 disables it (the reference does not clip)
 * @param fullPrecision full fine-tuning's weight dtype: F32 (lora4j's default: F32 weights and moments, BF16
 *                      working copies) or BF16 (the reference's: BF16 weights, gradients and moments); null means F32
 */
public record BenchSettings(BenchMethod method, String targetModules, int rank, double alpha, double dropout,
                            int seq, int microBatch, int accum, int steps, int warmupSteps,
                            boolean gradientCheckpointing, String optim, double learningRate, double weightDecay,
                            double maxGradNorm, long seed, DType fullPrecision) {

    public static final String DEFAULT_TARGETS = "q_proj,v_proj";
    public static final String DEFAULT_OPTIM = "adamw_torch";

    public BenchSettings {
        if (method == null) throw new IllegalArgumentException("--method is required: full, lora or qlora");
        if (method == BenchMethod.FULL) {
            targetModules = null;
        } else {
            if (targetModules == null || targetModules.isBlank()) targetModules = DEFAULT_TARGETS;
            targetModules = targetModules.strip();
            if (rank < 1) throw new IllegalArgumentException("--rank must be a positive integer, got " + rank);
            if (!Double.isFinite(alpha) || alpha <= 0) throw new IllegalArgumentException("--alpha must be a positive number, got " + alpha);
            if (!(dropout >= 0 && dropout < 1)) throw new IllegalArgumentException("--dropout must be in [0, 1), got " + dropout);
        }
        if (seq < 2) {
            throw new IllegalArgumentException("--seq must be at least 2 tokens (each position predicts the next one), got " + seq);
        }
        if (microBatch < 1) throw new IllegalArgumentException("--micro-batch must be at least 1 sequence, got " + microBatch);
        if (accum < 1) throw new IllegalArgumentException("--accum must be at least 1 micro-batch per optimizer step, got " + accum);
        if ((long) seq * microBatch > Integer.MAX_VALUE / 2) {
            throw new IllegalArgumentException("--seq " + seq + " x --micro-batch " + microBatch + " is too many tokens for one micro-batch");
        }
        if (steps < 1) throw new IllegalArgumentException("--steps must be at least 1 timed optimizer step, got " + steps);
        if (warmupSteps < 0) throw new IllegalArgumentException("--warmup-steps must be 0 or more, got " + warmupSteps);
        if (optim == null || optim.isBlank()) optim = DEFAULT_OPTIM;
        optim = optim.strip().toLowerCase(Locale.ROOT);
        if (!(learningRate > 0) || !Double.isFinite(learningRate)) {
            throw new IllegalArgumentException("--lr must be a positive number, got " + learningRate);
        }
        if (!(weightDecay >= 0)) throw new IllegalArgumentException("--weight-decay must be 0 or more, got " + weightDecay);
        if (!(maxGradNorm >= 0)) throw new IllegalArgumentException("--max-grad-norm must be 0 (off) or more, got " + maxGradNorm);
        if (fullPrecision == null) fullPrecision = DType.F32;
        if (fullPrecision != DType.F32 && fullPrecision != DType.BF16) {
            throw new IllegalArgumentException("--dtype must be float32 or bfloat16, got " + fullPrecision);
        }
        if (fullPrecision == DType.BF16 && method != BenchMethod.FULL) {
            throw new IllegalArgumentException("--dtype bfloat16 sets the weights of full fine-tuning; --method " + method.label()
                    + " keeps a BF16 base already");
        }
        if (fullPrecision == DType.BF16 && !optim.equals(DEFAULT_OPTIM)) {
            throw new IllegalArgumentException("--optim " + optim + " updates F32 weights; full fine-tuning in bfloat16 takes "
                    + DEFAULT_OPTIM + " (BF16 moments, as torch keeps them)");
        }
    }

    /** Full fine-tuning in {@code precision} (F32 or BF16). */
    public BenchSettings withFullPrecision(DType precision) {
        return new BenchSettings(method, targetModules, rank, alpha, dropout, seq, microBatch, accum, steps, warmupSteps,
                gradientCheckpointing, optim, learningRate, weightDecay, maxGradNorm, seed, precision);
    }

    /** The reference's settings for a method: everything at its default but the method. */
    public static BenchSettings defaults(BenchMethod method) {
        return new BenchSettings(method, DEFAULT_TARGETS, 16, 32, 0.05, 1024, 4, 4, 2, 1, false, DEFAULT_OPTIM, 2e-4,
                0.01, 0, 0, DType.F32);
    }

    public BenchSettings withMethod(BenchMethod m) {
        return new BenchSettings(m, m == BenchMethod.FULL ? null : targetModules == null ? DEFAULT_TARGETS : targetModules,
                rank, alpha, dropout, seq, microBatch, accum, steps, warmupSteps, gradientCheckpointing, optim,
                learningRate, weightDecay, maxGradNorm, seed, m == BenchMethod.FULL ? fullPrecision : DType.F32);
    }

    public BenchSettings withTargetModules(String t) {
        return new BenchSettings(method, t, rank, alpha, dropout, seq, microBatch, accum, steps, warmupSteps,
                gradientCheckpointing, optim, learningRate, weightDecay, maxGradNorm, seed, fullPrecision);
    }

    public BenchSettings withBatch(int newSeq, int newMicroBatch, int newAccum) {
        return new BenchSettings(method, targetModules, rank, alpha, dropout, newSeq, newMicroBatch, newAccum, steps,
                warmupSteps, gradientCheckpointing, optim, learningRate, weightDecay, maxGradNorm, seed, fullPrecision);
    }

    public BenchSettings withSteps(int newSteps, int newWarmupSteps) {
        return new BenchSettings(method, targetModules, rank, alpha, dropout, seq, microBatch, accum, newSteps,
                newWarmupSteps, gradientCheckpointing, optim, learningRate, weightDecay, maxGradNorm, seed, fullPrecision);
    }

    public BenchSettings withGradientCheckpointing(boolean on) {
        return new BenchSettings(method, targetModules, rank, alpha, dropout, seq, microBatch, accum, steps, warmupSteps,
                on, optim, learningRate, weightDecay, maxGradNorm, seed, fullPrecision);
    }

    public BenchSettings withLora(int newRank, double newAlpha, double newDropout) {
        return new BenchSettings(method, targetModules, newRank, newAlpha, newDropout, seq, microBatch, accum, steps,
                warmupSteps, gradientCheckpointing, optim, learningRate, weightDecay, maxGradNorm, seed, fullPrecision);
    }

    public BenchSettings withOptimizer(String newOptim, double lr, double wd, double clip) {
        return new BenchSettings(method, targetModules, rank, alpha, dropout, seq, microBatch, accum, steps, warmupSteps,
                gradientCheckpointing, newOptim, lr, wd, clip, seed, fullPrecision);
    }

    public BenchSettings withSeed(long newSeed) {
        return new BenchSettings(method, targetModules, rank, alpha, dropout, seq, microBatch, accum, steps, warmupSteps,
                gradientCheckpointing, optim, learningRate, weightDecay, maxGradNorm, newSeed, fullPrecision);
    }

    /** Sequences per optimizer step. */
    public int samplesPerStep() {
        return microBatch * accum;
    }

    /** Tokens per optimizer step. */
    public long tokensPerStep() {
        return (long) samplesPerStep() * seq;
    }

    /** The adapters' target modules as PEFT reads them (null for full fine-tuning). */
    public TargetModules targets() {
        if (targetModules == null) return null;
        List<String> names = Arrays.stream(targetModules.split(",")).map(String::strip).filter(s -> !s.isEmpty()).toList();
        if (names.isEmpty()) throw new IllegalArgumentException("--target-modules is empty: give names (q_proj,v_proj) or all-linear");
        if (names.size() > 1) {
            for (String n : names) {
                if (!n.matches("[A-Za-z0-9_.]+")) {
                    throw new IllegalArgumentException("--target-modules '" + targetModules + "': '" + n + "' is not a module"
                            + " name; give names separated by commas, all-linear, or one regular expression");
                }
            }
            return TargetModules.names(names);
        }
        String one = names.getFirst();
        if (one.equalsIgnoreCase(TargetModules.ALL_LINEAR)) return TargetModules.allLinear();
        return one.matches("[A-Za-z0-9_.]+") ? TargetModules.names(one) : TargetModules.regex(one);
    }

    /** The adapter configuration of the LoRA and QLoRA methods. */
    public LoraConfig loraConfig() {
        return LoraConfig.defaults().withR(rank).withLoraAlpha(alpha).withLoraDropout(dropout).withTargetModules(targets());
    }

    /** The model's fine-tuning method. */
    public FineTuneMethod fineTuneMethod() {
        return switch (method) {
            case FULL -> FineTuneMethod.full(fullPrecision);
            case LORA -> FineTuneMethod.lora(loraConfig());
            case QLORA -> FineTuneMethod.qlora(loraConfig());
        };
    }

    /**
     * The reference benchmark's name for this configuration ({@code --mode} of hf_peft_bench.py): full, lora-qv,
     * lora-all, qlora-qv or qlora-all; null when it has none (other target modules).
     */
    public String referenceMode() {
        if (method == BenchMethod.FULL) return "full";
        TargetModules t = targets();
        String which;
        if (t instanceof TargetModules.AllLinear) which = "all";
        else if (t instanceof TargetModules.Names n && n.names().size() == 2 && n.names().containsAll(List.of("q_proj", "v_proj"))) which = "qv";
        else return null;
        return method.label() + "-" + which;
    }

    /** A short name for tables: "LoRA q_proj,v_proj", "QLoRA all-linear + checkpointing", "full + checkpointing". */
    public String label() {
        String what = switch (method) {
            case FULL -> fullPrecision == DType.BF16 ? "full BF16" : "full";
            case LORA -> "LoRA " + targetModules;
            case QLORA -> "QLoRA " + targetModules;
        };
        return what + (gradientCheckpointing ? " + checkpointing" : "");
    }
}
