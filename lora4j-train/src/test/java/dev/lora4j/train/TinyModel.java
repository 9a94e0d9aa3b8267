package dev.lora4j.train;

import dev.lora4j.api.Device;
import dev.lora4j.io.ModelConfig;
import dev.lora4j.lora.LoraConfig;
import dev.lora4j.lora.TargetModules;
import dev.lora4j.model.RandomModelWriter;
import dev.lora4j.tensor.DType;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/**
 * A very small random Llama model folder (hidden 64, 2 layers, vocabulary 512) and a small consistent
 * prompt-completion task ("Who is number 3?" -> " Queequeg.") for trainer tests.
 */
final class TinyModel {
    static final String[] NAMES = {"Ishmael", "Ahab", "Starbuck", "Queequeg", "Stubb"};

    final Path folder, trainFile, evalFile;

    private TinyModel(Path folder, Path trainFile, Path evalFile) {
        this.folder = folder;
        this.trainFile = trainFile;
        this.evalFile = evalFile;
    }

    static ModelConfig config(int layers) {
        return new ModelConfig(List.of("LlamaForCausalLM"), "llama", 512, 64, 128, layers, 4, 2, 16, 1e-5, 10000.0,
                null, 512, 0, 0, false, false, false, 1, List.of(2), null, "float32", "silu");
    }

    /** Writes the model and 22 training and 5 eval records into {@code dir}. */
    static TinyModel write(Path dir) throws IOException {
        Path folder = dir.resolve("model");
        RandomModelWriter.write(folder, config(2), RandomModelWriter.Options.of(DType.F32, 7), null);
        StringBuilder train = new StringBuilder(), eval = new StringBuilder();
        for (int i = 0; i < 22; i++) train.append(record(i % 5));
        for (int i = 0; i < 5; i++) eval.append(record(i));
        return new TinyModel(folder, Files.writeString(dir.resolve("train.jsonl"), train),
                Files.writeString(dir.resolve("eval.jsonl"), eval));
    }

    private static String record(int n) {
        return "{\"prompt\": \"Who is number " + n + "?\", \"completion\": \" " + NAMES[n] + ".\"}\n";
    }

    /** LoRA r=4 on q, v and down projections, with dropout so that resumed runs must replay the masks. */
    static LoraConfig lora() {
        return LoraConfig.defaults().withR(4).withLoraAlpha(8).withLoraDropout(0.1)
                .withTargetModules(new TargetModules.Names(List.of("q_proj", "v_proj", "down_proj")));
    }

    /**
     * 22 samples in micro-batches of 3 with 2 accumulation steps: 8 micro-batches and 4 optimizer steps per epoch,
     * the last step of each epoch taking the remaining 2 micro-batches. Checkpoints every 2 steps.
     */
    static SftConfig.Builder config(Path out) {
        return SftConfig.builder().outputDir(out).learningRate(1e-2).perDeviceTrainBatchSize(3).gradientAccumulationSteps(2)
                .numTrainEpochs(2).loggingSteps(1).saveSteps(2).maxLength(32).seed(5).gradientCheckpointing(false)
                .warmupSteps(1).reportTo(List.of("tensorboard"));
    }

    SftTrainer trainer(SftConfig config, boolean withEval) {
        return trainer(config, withEval, lora());
    }

    SftTrainer trainer(SftConfig config, boolean withEval, LoraConfig lora) {
        var b = SftTrainer.builder().model(folder, Device.CPU).lora(lora).trainDataset(trainFile).config(config);
        if (withEval) b.evalDataset(evalFile);
        return b.build();
    }
}
