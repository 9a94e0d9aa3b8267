package dev.lora4j.train;

import dev.lora4j.api.Device;
import dev.lora4j.lora.LoraConfig;
import dev.lora4j.lora.TargetModules;
import dev.lora4j.model.RandomModelWriter;
import dev.lora4j.tensor.DType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Training on real English text lowers the loss on held-out text (lm_head trains too, through modules_to_save: a
 * random model's frozen output layer, with weights of std 0.02 behind an RMSNorm, cannot express a word
 * distribution however its inputs are adapted): passages of Moby-Dick built from
 * ../shared/assets/text when it is there (chapters other than the bundled ones), else the bundled passages.
 */
class RealTextTrainingTest {
    @TempDir
    Path dir;

    @Test
    void trainingOnMobyDickLowersTheLossOnPassagesItHasNotSeen() throws IOException {
        Path model = dir.resolve("model");
        RandomModelWriter.write(model, TinyModel.config(2), RandomModelWriter.Options.of(DType.F32, 11), null);
        List<String> passages = SharedText.mobyDickPassages(60, 240).orElseGet(SharedText::bundledPassages);
        Path train = dir.resolve("train.jsonl"), eval = dir.resolve("eval.jsonl");
        Files.write(train, passages.subList(0, passages.size() - 12).stream().map(SharedText::textRecord).toList());
        Files.write(eval, passages.subList(passages.size() - 12, passages.size()).stream().map(SharedText::textRecord).toList());
        LoraConfig lora = LoraConfig.defaults().withR(8).withLoraAlpha(16).withTargetModules(TargetModules.fromString("all-linear"))
                .withModulesToSave(List.of("lm_head"));
        SftConfig config = SftConfig.builder().outputDir(dir.resolve("out")).learningRate(1e-2).perDeviceTrainBatchSize(8)
                .numTrainEpochs(2).maxLength(48).gradientCheckpointing(false).loggingSteps(100).saveStrategy("no")
                .reportTo(List.of("none")).evalStrategy("no").build();
        try (SftTrainer trainer = SftTrainer.builder().model(model, Device.CPU).lora(lora).trainDataset(train)
                .evalDataset(eval).config(config).build()) {
            double before = trainer.evaluate();
            trainer.train();
            double after = trainer.evaluate();
            assertThat(after).as("eval loss %.3f -> %.3f", before, after).isLessThan(before - 0.5);
        }
    }
}
