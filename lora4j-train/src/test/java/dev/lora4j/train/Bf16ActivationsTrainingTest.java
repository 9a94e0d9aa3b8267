package dev.lora4j.train;

import dev.lora4j.api.Device;
import dev.lora4j.tensor.DType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

/** TrainingArguments' bf16 opens the backend with BF16 activations; the CPU keeps F32 and says so. */
class Bf16ActivationsTrainingTest {
    @TempDir
    Path dir;

    @Test
    void onTheCpuBf16TrainsWithF32ActivationsAfterOneNotice() throws IOException {
        TinyModel tiny = TinyModel.write(dir);
        List<String> notices = new ArrayList<>();
        SftConfig config = TinyModel.config(dir.resolve("out")).bf16(true).maxSteps(1).saveStrategy("no").build();
        try (SftTrainer trainer = SftTrainer.builder().model(tiny.folder, Device.CPU).lora(TinyModel.lora())
                .trainDataset(tiny.trainFile).config(config).notices(notices::add).build()) {
            assertThat(trainer.model().backend().activationType()).isEqualTo(DType.F32);
            assertThat(trainer.train().globalStep()).isEqualTo(1);
        }
        assertThat(notices).singleElement().asString().contains("keeps activations in F32").contains("apply on CUDA");
    }
}
