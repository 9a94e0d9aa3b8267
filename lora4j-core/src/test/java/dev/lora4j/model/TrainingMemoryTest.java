package dev.lora4j.model;

import dev.lora4j.backend.cpu.CpuBackend;
import dev.lora4j.io.ModelConfig;
import dev.lora4j.lora.LoraConfig;
import dev.lora4j.lora.TargetModules;
import dev.lora4j.tensor.DType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

/** The memory plan is the allocation: what the estimate says is what a training step holds. */
class TrainingMemoryTest {

    @Test
    void theEstimateEqualsWhatATrainingStepAllocates(@TempDir Path dir) throws Exception {
        LlamaShape shape = TinyModels.qwen2(3);
        ModelConfig config = TinyModelFolders.config(shape, DType.BF16);
        LoraConfig lora = LoraConfig.defaults().withR(4).withLoraDropout(0.1).withTargetModules(TargetModules.allLinear())
                .withRankPattern(java.util.Map.of("down_proj", 2)).withBias("all").withModulesToSave(List.of("lm_head"));
        TrainingBatch batch = TrainableLlamaGradientTest.BATCH;
        for (boolean checkpointing : new boolean[]{false, true}) {
            try (CpuBackend cpu = new CpuBackend(2);
                 var folder = TinyModelFolders.write(dir.resolve("m" + checkpointing), shape,
                         TinyModels.randomWeights(shape, DType.BF16, 1), DType.BF16);
                 TrainableLlama model = TrainableLlama.create(cpu, folder, new FineTuneMethod.Lora(lora), 1)) {
                long before = cpu.memoryInUse();
                model.setGradientCheckpointing(checkpointing);
                model.setLossChunkBytes(4L * shape.vocabSize() * 5);
                model.forwardBackward(batch, 1f);
                model.evaluate(batch);
                TrainingMemory m = TrainingMemory.estimate(config, new FineTuneMethod.Lora(lora), DType.BF16, DType.F32,
                        batch.totalTokens(), checkpointing, 4L * shape.vocabSize() * 5);
                assertThat(m.activations() + m.evaluation()).as("checkpointing " + checkpointing).isEqualTo(model.activationBytes());
                assertThat(cpu.memoryInUse() - before).isEqualTo(model.activationBytes());
                long weights = model.weights().byteSize();
                long adapters = 0, grads = 0;
                for (TrainableParameter p : model.parameters()) {
                    grads += p.grad().byteSize();
                    if (!model.weights().tensors().contains(p.value())) adapters += p.value().byteSize();
                }
                assertThat(m.frozenWeights() + m.trainableWeights()).isEqualTo(weights + adapters);
                assertThat(m.gradients()).isEqualTo(grads);
                assertThat(m.optimizerStates()).isEqualTo(2 * grads);
            }
        }
    }

    @Test
    void checkpointingKeepsFarLessForALargeModel() {
        ModelConfig mistral = RandomModelWriter.preset("mistral-7b");
        FineTuneMethod lora = new FineTuneMethod.Lora(LoraConfig.defaults().withR(16).withTargetModules(TargetModules.allLinear()));
        TrainingMemory plain = TrainingMemory.estimate(mistral, lora, DType.BF16, DType.F32, 4096, false, 256L << 20);
        TrainingMemory ckpt = TrainingMemory.estimate(mistral, lora, DType.BF16, DType.F32, 4096, true, 256L << 20);
        assertThat(plain.frozenWeights()).isEqualTo(2L * 7_241_732_096L + 2L * 65 * 4096); // norms take 4 bytes
        assertThat(plain.trainableWeights()).isEqualTo(4L * 41_943_040L);
        assertThat(ckpt.activations()).isLessThan(plain.activations() / 4);
        assertThat(plain.toString()).contains("GiB");
    }
}
