package dev.lora4j.cli;

import dev.lora4j.io.ModelConfig;
import dev.lora4j.lora.LoraConfig;
import dev.lora4j.lora.TargetModules;
import dev.lora4j.model.FineTuneMethod;
import dev.lora4j.model.LlamaShape;
import dev.lora4j.model.RandomModelWriter;
import dev.lora4j.model.TrainableLlama;
import dev.lora4j.model.TrainableParameterReport;
import dev.lora4j.model.TrainablePlan;
import dev.lora4j.model.TrainingMemory;
import dev.lora4j.quant.QuantSpec;
import dev.lora4j.quant.QuantType;
import dev.lora4j.tensor.DType;
import dev.lora4j.train.optim.OptimizerType;
import picocli.CommandLine.ArgGroup;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;

@Command(name = "plan",
        description = {"Estimate, before any allocation, what a fine-tuning run needs: trainable parameters (as PEFT's",
                "print_trainable_parameters counts them) and device memory by part. Works for any size, from a model",
                "folder's config.json or a shape preset, so it tells whether a 7B full fine-tune fits before trying."})
final class PlanCommand implements Callable<Integer> {

    @ArgGroup(multiplicity = "1")
    Source source;

    static final class Source {
        @Option(names = {"-m", "--model"}, description = "Model folder (only config.json is read).")
        Path model;

        @Option(names = "--preset", description = "A shape preset of init-model: tiny, 100m, llama2-7b, mistral-7b, llama3-8b, ...")
        String preset;
    }

    @Option(names = "--method", defaultValue = "lora", description = "lora, qlora (LoRA over a 4-bit base) or full (default: ${DEFAULT-VALUE}).")
    String method;

    @Option(names = {"--dtype", "--torch-dtype"}, defaultValue = "float32",
            description = "Full fine-tuning: the weights' dtype, float32 or bfloat16 (BF16 weights, gradients and moments) (default: ${DEFAULT-VALUE}).")
    String dtype;

    @Option(names = "--quant-type", defaultValue = "nf4", description = "QLoRA's 4-bit code: nf4 or fp4 (default: ${DEFAULT-VALUE}).")
    String quantType;

    @Option(names = "--double-quant", defaultValue = "true", arity = "1",
            description = "QLoRA: quantize the 4-bit scales again, to 8 bits (default: ${DEFAULT-VALUE}).")
    boolean doubleQuant;

    @Option(names = {"--r", "--lora-r"}, defaultValue = "16", description = "LoRA rank (default: ${DEFAULT-VALUE}).")
    int r;

    @Option(names = "--lora-alpha", defaultValue = "32", description = "LoRA alpha (default: ${DEFAULT-VALUE}).")
    double alpha;

    @Option(names = "--target-modules", defaultValue = "all-linear",
            description = "Names (q_proj,v_proj), a regex, or all-linear (default: ${DEFAULT-VALUE}).")
    String targetModules;

    @Option(names = "--max-length", defaultValue = "1024", description = "Sequence length in tokens (default: ${DEFAULT-VALUE}).")
    int maxLength;

    @Option(names = {"--per-device-train-batch-size", "--batch-size"}, defaultValue = "4",
            description = "Sequences per micro-batch (default: ${DEFAULT-VALUE}).")
    int batchSize;

    @Option(names = "--gradient-checkpointing", defaultValue = "true", arity = "1",
            description = "Keep only each layer's input and recompute the rest (default: ${DEFAULT-VALUE}).")
    boolean gradientCheckpointing;

    @Option(names = "--base-dtype", defaultValue = "bf16", description = "Dtype of the frozen weights (default: ${DEFAULT-VALUE}).")
    String baseDtype;

    @Option(names = "--bf16", defaultValue = "false", arity = "0..1", fallbackValue = "true",
            description = "Activations in BF16, as training with bf16: true on CUDA keeps them (default: ${DEFAULT-VALUE}: F32).")
    boolean bf16;

    @Option(names = "--optim", defaultValue = "adamw_torch",
            description = "adamw_torch, paged_adamw_32bit, adamw_8bit or paged_adamw_8bit: the optimizer whose state is counted (default: ${DEFAULT-VALUE}).")
    String optim;

    @Option(names = "--budget-gib", description = "Say whether the run fits in this much device memory.")
    Double budgetGib;

    @Override
    public Integer call() throws IOException {
        ModelConfig config = source.model != null ? ModelConfig.load(source.model.resolve("config.json"))
                : RandomModelWriter.preset(source.preset);
        LoraConfig lora = LoraConfig.defaults().withR(r).withLoraAlpha(alpha).withTargetModules(targets());
        FineTuneMethod m = switch (method.toLowerCase(Locale.ROOT)) {
            case "lora" -> new FineTuneMethod.Lora(lora);
            case "qlora" -> new FineTuneMethod.Lora(lora, new QuantSpec(QuantType.parse(quantType), QuantSpec.DEFAULT_BLOCK_SIZE,
                    doubleQuant, QuantSpec.QLORA.computeType()));
            case "full" -> new FineTuneMethod.Full(fullPrecision());
            default -> throw new IllegalArgumentException("unknown --method '" + method + "': use lora, qlora or full");
        };
        if (!(m instanceof FineTuneMethod.Full) && fullPrecision() != DType.F32) {
            throw new IllegalArgumentException("--dtype sets the weights' dtype of full fine-tuning; a LoRA base keeps"
                    + " --base-dtype: plan --method full, or drop --dtype");
        }
        boolean bf16Full = m instanceof FineTuneMethod.Full f && f.precision() == DType.BF16;
        if (config.isQuantized()) {
            // A model saved in 4 bits trains over its stored quantization.
            if (m instanceof FineTuneMethod.Full) {
                throw new IllegalArgumentException(source.model + " is saved in 4 bits (" + config.quantizationConfig()
                        + "): full fine-tuning needs 16- or 32-bit weights; plan --method qlora");
            }
            m = new FineTuneMethod.Lora(lora, config.quantizationConfig().spec(QuantSpec.DEFAULT_BLOCK_SIZE));
        }
        DType base = DType.parse(baseDtype.toUpperCase(Locale.ROOT).equals("BF16") ? "BF16" : baseDtype);
        TrainableParameterReport params = TrainableParameterReport.estimate(config, m);
        DType activations = bf16 ? DType.BF16 : DType.F32;
        TrainingMemory mem = TrainingMemory.estimate(config, m, base, activations, batchSize * maxLength,
                gradientCheckpointing, TrainableLlama.DEFAULT_LOSS_CHUNK_BYTES);
        System.out.printf(Locale.ROOT, "%s, %d layers, hidden %d; %s; micro-batch %d x %d tokens, gradient checkpointing %s%n",
                config.architecture(), config.numHiddenLayers(), config.hiddenSize(),
                m instanceof FineTuneMethod.Full ? "full fine-tuning" : (m.quantization() != null ? "QLoRA" : "LoRA") + " r=" + r
                        + " alpha " + trim(alpha) + " on " + targetModules,
                batchSize, maxLength, gradientCheckpointing ? "on" : "off");
        System.out.println(params);
        System.out.println();
        System.out.println("device memory (" + activations + " activations; backend workspaces come on top)");
        QuantSpec q = m.quantization();
        row("frozen weights (" + base + (q == null ? "" : ", projections " + q.type() + (q.doubleQuant() ? "+dq" : "")) + ")",
                mem.frozenWeights());
        row(bf16Full ? "trainable weights (BF16; norms F32)" : bf16 && m instanceof FineTuneMethod.Full
                ? "trainable weights (F32, BF16 working copies)" : "trainable weights (F32)", mem.trainableWeights());
        row(bf16Full ? "gradients (BF16; F32 embedding, norms, biases)" : "gradients (F32)", mem.gradients());
        OptimizerType optimizer = OptimizerType.parse(optim);
        long states;
        if (bf16Full) {
            if (optimizer != OptimizerType.ADAMW_TORCH) {
                throw new IllegalArgumentException("--optim " + optimizer + " updates F32 weights; full fine-tuning in bfloat16"
                        + " takes adamw_torch (BF16 moments), or plan --dtype float32");
            }
            states = mem.optimizerStates();
        } else {
            // The optimizer's own rule per tensor (8-bit states only for tensors of 4096 elements or more, as bitsandbytes).
            states = 0;
            for (long size : TrainablePlan.of(LlamaShape.of(config), m).trainableTensorSizes()) states += optimizer.stateBytes(size);
        }
        long total = mem.total() - mem.optimizerStates() + states;
        row(optimizer + " states" + (optimizer.eightBit() ? " (8-bit)" : bf16Full ? " (BF16)" : " (F32)"), states);
        row("activations", mem.activations());
        row("total", total);
        if (budgetGib != null) {
            boolean fits = total <= budgetGib * (1L << 30);
            System.out.printf(Locale.ROOT, "%s a %s GiB budget%s%n", fits ? "fits in" : "does NOT fit in", trim(budgetGib),
                    fits ? "" : ": try LoRA instead of full, QLoRA instead of LoRA, gradient checkpointing, a smaller micro-batch or a shorter max length");
            return fits ? 0 : 3;
        }
        return 0;
    }

    private DType fullPrecision() {
        return FineTuneMethod.Full.precisionNamed(dtype).orElseThrow(() -> new IllegalArgumentException(
                "unknown --dtype '" + dtype + "': use " + FineTuneMethod.Full.PRECISION_NAMES));
    }

    private TargetModules targets() {
        List<String> names = Arrays.stream(targetModules.split(",")).map(String::strip).filter(s -> !s.isEmpty()).toList();
        boolean plainNames = names.size() > 1 || names.getFirst().matches("[A-Za-z0-9_.]+") && !names.getFirst().equalsIgnoreCase("all-linear");
        return plainNames ? TargetModules.names(names) : TargetModules.fromString(targetModules);
    }

    private static void row(String what, long bytes) {
        System.out.printf(Locale.ROOT, "  %-46s %12s%n", what, Sizes.bytes(bytes));
    }

    private static String trim(double d) {
        return d == Math.rint(d) ? Long.toString((long) d) : Double.toString(d);
    }
}
