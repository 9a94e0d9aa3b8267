package dev.lora4j.cli;

import dev.lora4j.lora.TargetModules;
import dev.lora4j.model.FineTuneMethod;
import dev.lora4j.model.MemoryReport;
import dev.lora4j.quant.QuantSpec;
import dev.lora4j.train.SftTrainer;
import dev.lora4j.train.TrainResult;
import dev.lora4j.train.config.ConfigFields;
import dev.lora4j.train.config.TrainConfig;
import dev.lora4j.train.config.TrainConfigReader;
import dev.lora4j.train.data.SftDataset;
import dev.lora4j.train.metrics.ConsoleProgress;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Model.OptionSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;

/**
 * {@code lora4j train}: supervised fine-tuning as TRL's SFTTrainer does it, configured by a YAML or JSON file with
 * TRL's and PEFT's field names; every field is also an option (--learning-rate for learning_rate) that overrides
 * the file.
 */
@Command(name = "train", sortOptions = false, mixinStandardHelpOptions = true,
        description = {"Fine-tune a model with LoRA (or in full) on a JSONL/JSON dataset, as TRL's SFTTrainer does.",
                "Settings come from --config FILE (YAML or JSON, TRL/PEFT field names) and are overridden by the",
                "options below; output_dir receives checkpoints, metrics.jsonl, TensorBoard logs and the adapter."})
final class TrainCommand implements Callable<Integer> {

    @Spec
    CommandSpec spec;

    @Option(names = {"-c", "--config"}, paramLabel = "FILE", description = "Training configuration (.yaml, .yml or .json).")
    Path config;

    @Option(names = {"-m", "--model-name-or-path", "--model"}, paramLabel = "PATH", description = "Model folder to fine-tune (config.json, safetensors, tokenizer.json).")
    String modelNameOrPath;

    @Option(names = {"--dataset", "--train-file", "--dataset-name"}, paramLabel = "PATH", description = "Training data: a .jsonl or .json file of text, prompt/completion or messages records.")
    String dataset;

    @Option(names = {"--eval-file", "--eval-dataset"}, paramLabel = "PATH", description = "Evaluation data, in the same format.")
    String evalFile;

    @Option(names = {"-o", "--output-dir"}, paramLabel = "PATH", description = "Where checkpoints, logs and the trained adapter go (default trainer_output).")
    String outputDir;

    @Option(names = {"--method"}, paramLabel = "TEXT", description = "lora (default), qlora (LoRA over a 4-bit base) or full (every weight trains).")
    String method;

    @Option(names = {"--dtype", "--torch-dtype"}, paramLabel = "TEXT", description = "Full fine-tuning: the weights' dtype, float32 (default: F32 weights, gradients and AdamW moments) or bfloat16 (BF16 weights, gradients and moments, as a model loaded with dtype=bfloat16 trains: half the memory).")
    String dtype;

    @Option(names = {"--load-in-4bit"}, arity = "0..1", fallbackValue = "true", paramLabel = "BOOL", description = "Keep the base's projections in 4 bits: LoRA becomes QLoRA (as --method qlora).")
    String loadIn4bit;

    @Option(names = {"--quant-type", "--bnb-4bit-quant-type"}, paramLabel = "TEXT", description = "QLoRA's 4-bit code: nf4 (default) or fp4.")
    String quantType;

    @Option(names = {"--double-quant", "--bnb-4bit-use-double-quant", "--use-bnb-nested-quant"}, arity = "0..1", fallbackValue = "true", paramLabel = "BOOL", description = "QLoRA: quantize the 4-bit scales again, to 8 bits (default true).")
    String doubleQuant;

    @Option(names = {"--no-double-quant"}, description = "QLoRA: keep the 4-bit scales in F32 (as --double-quant false).")
    boolean noDoubleQuant;

    @Option(names = {"--compute-dtype", "--bnb-4bit-compute-dtype"}, paramLabel = "TEXT", description = "QLoRA: dtype the 4-bit weights are dequantized to for products: bf16 (default), fp16 or fp32.")
    String computeDtype;

    @Option(names = {"--device"}, paramLabel = "TEXT", description = "cpu, cuda or auto (default auto).")
    String device;

    @Option(names = {"--sample-prompts"}, paramLabel = "A,B", description = "Prompts to generate from before and after training (lora4j).")
    String samplePrompts;

    @Option(names = {"--sample-max-new-tokens"}, paramLabel = "N", description = "Tokens generated per sample prompt (default 32; lora4j).")
    String sampleMaxNewTokens;

    @Option(names = {"--r", "--lora-r"}, paramLabel = "N", description = "LoRA rank (default 8).")
    String r;

    @Option(names = {"--lora-alpha"}, paramLabel = "X", description = "LoRA alpha; the adapter is scaled by alpha/r (default 8).")
    String loraAlpha;

    @Option(names = {"--lora-dropout"}, paramLabel = "X", description = "Dropout on the adapters' input (default 0).")
    String loraDropout;

    @Option(names = {"--target-modules", "--lora-target-modules"}, paramLabel = "A,B", description = "Modules that get adapters: names (q_proj,v_proj), a regex, or all-linear.")
    String targetModules;

    @Option(names = {"--bias"}, paramLabel = "TEXT", description = "none (default), all or lora_only: which biases train.")
    String bias;

    @Option(names = {"--use-rslora"}, arity = "0..1", fallbackValue = "true", paramLabel = "BOOL", description = "Rank-stabilised scaling alpha/sqrt(r).")
    String useRslora;

    @Option(names = {"--modules-to-save"}, paramLabel = "A,B", description = "Modules trained in full beside the adapters (e.g. lm_head).")
    String modulesToSave;

    @Option(names = {"--init-lora-weights"}, paramLabel = "TEXT", description = "true (default), gaussian or false.")
    String initLoraWeights;

    @Option(names = {"--rank-pattern"}, paramLabel = "JSON", description = "Per-module ranks: {regex: rank}.")
    String rankPattern;

    @Option(names = {"--alpha-pattern"}, paramLabel = "JSON", description = "Per-module alphas: {regex: alpha}.")
    String alphaPattern;

    @Option(names = {"--layers-to-transform"}, paramLabel = "A,B", description = "Only these layer indexes get adapters.")
    String layersToTransform;

    @Option(names = {"--dataset-text-field"}, paramLabel = "TEXT", description = "The text field of language-modelling records (default text).")
    String datasetTextField;

    @Option(names = {"--max-length", "--max-seq-length"}, paramLabel = "N", description = "Longest sequence in tokens; longer ones are truncated (default 1024; none: no limit).")
    String maxLength;

    @Option(names = {"--packing"}, arity = "0..1", fallbackValue = "true", paramLabel = "BOOL", description = "Pack examples into sequences of max_length tokens.")
    String packing;

    @Option(names = {"--packing-strategy"}, paramLabel = "TEXT", description = "bfd (default), bfd_split or wrapped.")
    String packingStrategy;

    @Option(names = {"--eval-packing"}, arity = "0..1", fallbackValue = "true", paramLabel = "BOOL", description = "Pack the eval dataset (default: as packing).")
    String evalPacking;

    @Option(names = {"--completion-only-loss"}, arity = "0..1", fallbackValue = "true", paramLabel = "BOOL", description = "Loss on completions only (default: true for prompt/completion data).")
    String completionOnlyLoss;

    @Option(names = {"--assistant-only-loss"}, arity = "0..1", fallbackValue = "true", paramLabel = "BOOL", description = "Loss on assistant turns only (conversational data).")
    String assistantOnlyLoss;

    @Option(names = {"--eos-token"}, paramLabel = "TEXT", description = "Token appended to texts and completions (default: the tokenizer's EOS).")
    String eosToken;

    @Option(names = {"--shuffle-dataset"}, arity = "0..1", fallbackValue = "true", paramLabel = "BOOL", description = "Shuffle the records once before packing.")
    String shuffleDataset;

    @Option(names = {"--learning-rate"}, paramLabel = "X", description = "Peak learning rate of AdamW (default 2e-5, as TRL).")
    String learningRate;

    @Option(names = {"--lr-scheduler-type"}, paramLabel = "TEXT", description = "linear (default), cosine, constant or constant_with_warmup.")
    String lrSchedulerType;

    @Option(names = {"--warmup-steps"}, paramLabel = "X", description = "Warmup steps (below 1: a ratio of the total steps).")
    String warmupSteps;

    @Option(names = {"--warmup-ratio"}, paramLabel = "X", description = "Warmup as a ratio of the total steps.")
    String warmupRatio;

    @Option(names = {"--num-train-epochs"}, paramLabel = "X", description = "Epochs (default 3; may be fractional).")
    String numTrainEpochs;

    @Option(names = {"--max-steps"}, paramLabel = "N", description = "Total optimizer steps; overrides num_train_epochs (default -1).")
    String maxSteps;

    @Option(names = {"--per-device-train-batch-size", "--batch-size"}, paramLabel = "N", description = "Samples per micro-batch (default 8).")
    String perDeviceTrainBatchSize;

    @Option(names = {"--per-device-eval-batch-size"}, paramLabel = "N", description = "Samples per evaluation batch (default 8).")
    String perDeviceEvalBatchSize;

    @Option(names = {"--gradient-accumulation-steps"}, paramLabel = "N", description = "Micro-batches per optimizer step (default 1).")
    String gradientAccumulationSteps;

    @Option(names = {"--max-grad-norm"}, paramLabel = "X", description = "Gradient clipping norm (default 1.0; 0 disables).")
    String maxGradNorm;

    @Option(names = {"--weight-decay"}, paramLabel = "X", description = "AdamW weight decay, not on biases and norms (default 0).")
    String weightDecay;

    @Option(names = {"--adam-beta1"}, paramLabel = "X", description = "AdamW beta1 (default 0.9).")
    String adamBeta1;

    @Option(names = {"--adam-beta2"}, paramLabel = "X", description = "AdamW beta2 (default 0.999).")
    String adamBeta2;

    @Option(names = {"--adam-epsilon"}, paramLabel = "X", description = "AdamW epsilon (default 1e-8).")
    String adamEpsilon;

    @Option(names = {"--optim"}, paramLabel = "TEXT", description = "adamw_torch (default), paged_adamw_32bit, adamw_8bit or paged_adamw_8bit (bitsandbytes' 8-bit states).")
    String optim;

    @Option(names = {"--seed"}, paramLabel = "N", description = "Seed of adapter initialisation, shuffling and dropout (default 42).")
    String seed;

    @Option(names = {"--gradient-checkpointing"}, arity = "0..1", fallbackValue = "true", paramLabel = "BOOL", description = "Recompute activations in the backward pass to save memory (default true, as TRL).")
    String gradientCheckpointing;

    @Option(names = {"--bf16"}, arity = "0..1", fallbackValue = "true", paramLabel = "BOOL", description = "Keep activations and their gradients in BF16 on CUDA: half their memory, products on the tensor cores (default false: F32; the CPU keeps F32).")
    String bf16;

    @Option(names = {"--logging-steps"}, paramLabel = "X", description = "Log every N steps (default 10; below 1: a ratio of the total).")
    String loggingSteps;

    @Option(names = {"--logging-first-step"}, arity = "0..1", fallbackValue = "true", paramLabel = "BOOL", description = "Also log the first step.")
    String loggingFirstStep;

    @Option(names = {"--eval-strategy", "--evaluation-strategy"}, paramLabel = "TEXT", description = "steps or no (default: steps when an eval dataset is given).")
    String evalStrategy;

    @Option(names = {"--eval-steps"}, paramLabel = "X", description = "Evaluate every N steps (default: logging_steps).")
    String evalSteps;

    @Option(names = {"--save-strategy"}, paramLabel = "TEXT", description = "steps (default) or no.")
    String saveStrategy;

    @Option(names = {"--save-steps"}, paramLabel = "X", description = "Save a checkpoint every N steps (default 500).")
    String saveSteps;

    @Option(names = {"--save-total-limit"}, paramLabel = "N", description = "Keep only the newest N checkpoints.")
    String saveTotalLimit;

    @Option(names = {"--report-to"}, paramLabel = "A,B", description = "tensorboard (default) or none.")
    String reportTo;

    @Option(names = {"--resume-from-checkpoint"}, paramLabel = "TEXT", description = "A checkpoint folder, or latest (true) for the newest in output_dir.")
    String resumeFromCheckpoint;

    @Option(names = {"--disable-tqdm"}, arity = "0..1", fallbackValue = "true", paramLabel = "BOOL", description = "No progress bar; one line per logging step instead.")
    String disableTqdm;

    @Override
    public Integer call() throws IOException {
        TrainConfigReader reader = new TrainConfigReader();
        if (config != null) reader.file(config);
        // Options override the file; each option's first long name is its field's name.
        for (OptionSpec o : spec.commandLine().getParseResult().matchedOptions()) {
            for (String n : o.names()) {
                var field = n.startsWith("--") ? ConfigFields.byName(n.substring(2).replace('-', '_')) : null;
                if (field != null) {
                    reader.override(field.name(), o.getValue());
                    break;
                }
            }
        }
        if (noDoubleQuant) {
            if (doubleQuant != null) throw new IllegalArgumentException("--double-quant and --no-double-quant contradict each other; give one");
            reader.override("bnb_4bit_use_double_quant", "false");
        }
        TrainConfig run = reader.build();
        PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
        boolean interactive = System.console() != null && !run.sft().disableTqdm();
        var builder = SftTrainer.builder().model(run.modelNameOrPath(), run.device()).method(run.method())
                .trainDataset(run.trainFile()).evalDataset(run.evalFile()).config(run.sft())
                .listener(new ConsoleProgress(out, interactive));
        try (SftTrainer trainer = builder.build()) {
            var model = trainer.model();
            out.printf(Locale.ROOT, "model %s (%d layers, hidden %d) on %s%n", run.modelNameOrPath(), model.shape().numLayers(),
                    model.shape().hiddenSize(), model.backend().description());
            out.println(describe(model.method()) + (model.gradientCheckpointing() ? "; gradient checkpointing" : ""));
            out.println(model.trainableParameters());
            out.println(trainer.optimizer().describe());
            describe(out, "train", trainer.trainDataset());
            if (trainer.evalDataset() != null) describe(out, "eval", trainer.evalDataset());
            var plan = trainer.plan();
            out.printf(Locale.ROOT, "%d steps (%s epoch%s of %d steps; micro-batches of %d, accumulation %d), %s schedule, lr %s, warmup %d%n",
                    plan.totalSteps(), trimmed(plan.epochs()), plan.epochs() == 1 ? "" : "s", plan.stepsPerEpoch(), run.sft().perDeviceTrainBatchSize(),
                    run.sft().gradientAccumulationSteps(), run.sft().lrSchedulerType(), run.sft().learningRate(), plan.warmupSteps());
            Files.createDirectories(run.sft().outputDir());
            Files.writeString(run.sft().outputDir().resolve("training_config.json"), TrainConfigReader.toJson(run));
            List<String> before = run.samplePrompts().isEmpty() ? List.of() : trainer.samples(run.samplePrompts(), run.sampleMaxNewTokens());
            printSamples(out, "before training", run.samplePrompts(), before);
            if (trainer.evalDataset() != null) out.printf(Locale.ROOT, "eval_loss before training %.4f%n", trainer.evaluate());
            TrainResult result = trainer.train();
            List<String> after = run.samplePrompts().isEmpty() ? List.of() : trainer.samples(run.samplePrompts(), run.sampleMaxNewTokens());
            printSamples(out, "after training", run.samplePrompts(), after);
            out.printf(Locale.ROOT, "trained %d steps in %s: train_loss %.4f%s%n", result.globalStep(), seconds(result.runtimeSeconds()),
                    result.trainLoss(), Double.isNaN(result.evalLoss()) ? "" : String.format(Locale.ROOT, ", eval_loss %.4f", result.evalLoss()));
            out.println((run.method() instanceof FineTuneMethod.Lora ? "adapter" : "model") + " written to " + result.output()
                    + (run.method() instanceof FineTuneMethod.Lora ? " (adapter_config.json, adapter_model.safetensors)" : ""));
            out.print(result.memory().table());
            out.println("memory report written to " + result.output().resolve(MemoryReport.FILE_NAME));
        }
        return 0;
    }

    private static String describe(FineTuneMethod method) {
        if (!(method instanceof FineTuneMethod.Lora l)) {
            return "full fine-tuning: every weight trains, in " + ((FineTuneMethod.Full) method).precision();
        }
        var c = l.config();
        String base = l.quantized() ? "QLoRA over a 4-bit base (" + describe(l.quantization()) + "), " : "";
        String targets = switch (c.targetModules()) {
            case TargetModules.Names n -> String.join(",", n.names());
            case TargetModules.Regex r -> r.pattern();
            case TargetModules.AllLinear a -> "all-linear";
        };
        return base + String.format(Locale.ROOT, "LoRA r=%d lora_alpha=%s lora_dropout=%s target_modules=%s%s%s", c.r(), trimmed(c.loraAlpha()),
                trimmed(c.loraDropout()), targets, c.useRslora() ? " use_rslora" : "",
                c.modulesToSave().isEmpty() ? "" : " modules_to_save=" + String.join(",", c.modulesToSave()));
    }

    /** "nf4 with double quantization, bf16 compute", in BitsAndBytesConfig's words. */
    static String describe(QuantSpec q) {
        return q.type().bnbName() + (q.doubleQuant() ? " with" : " without") + " double quantization, "
                + switch (q.computeType()) {
                    case F16 -> "float16";
                    case F32 -> "float32";
                    default -> "bfloat16";
                } + " compute";
    }

    private static void describe(PrintStream out, String which, SftDataset d) {
        var s = d.stats();
        out.printf(Locale.ROOT, "%s data %s: %,d records (%s), %,d samples, %,d tokens, %,d with loss%s%s%n", which, s.name(), s.records(),
                s.kind() == null ? "prepared" : s.kind().label(), s.samples(), s.tokens(), s.targetTokens(),
                s.truncated() > 0 ? String.format(Locale.ROOT, ", %,d truncated", s.truncated()) : "",
                s.dropped() > 0 ? String.format(Locale.ROOT, ", %,d dropped (no labels left)", s.dropped()) : "");
    }

    private static void printSamples(PrintStream out, String when, List<String> prompts, List<String> completions) {
        for (int i = 0; i < completions.size(); i++) {
            out.printf("sample %s: %s|%s%n", when, prompts.get(i), completions.get(i).replace("\n", "\\n"));
        }
    }

    private static String trimmed(double v) {
        return v == Math.rint(v) ? Long.toString((long) v) : Double.toString(v);
    }

    private static String seconds(double s) {
        return s < 60 ? String.format(Locale.ROOT, "%.1f s", s) : String.format(Locale.ROOT, "%dm%02ds", (long) s / 60, (long) s % 60);
    }
}
