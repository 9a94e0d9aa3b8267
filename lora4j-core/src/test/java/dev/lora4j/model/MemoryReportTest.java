package dev.lora4j.model;

import dev.lora4j.backend.cpu.CpuBackend;
import dev.lora4j.io.ModelConfig;
import dev.lora4j.lora.LoraConfig;
import dev.lora4j.lora.TargetModules;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static dev.lora4j.model.TrainableLlamaGradientTest.BATCH;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** Where a training run's device memory went: measured parts that add up to the backend's peak. */
class MemoryReportTest {

    @Test
    void thePartsOfAMeasuredReportAddUpToTheBackendsPeakAndMatchThePlan(@TempDir Path dir) throws Exception {
        LlamaShape shape = TinyModels.qwen2(3);
        ModelConfig config = TinyModelFolders.config(shape, DType.BF16);
        for (FineTuneMethod method : List.of(FineTuneMethod.full(), FineTuneMethod.full(DType.BF16),
                FineTuneMethod.lora(LoraConfig.defaults().withR(4).withTargetModules(TargetModules.allLinear())
                        .withModulesToSave(List.of("lm_head"))))) {
            try (CpuBackend cpu = new CpuBackend(2);
                 var folder = TinyModelFolders.write(dir.resolve(method.name() + method.hashCode()), shape,
                         TinyModels.randomWeights(shape, DType.BF16, 1), DType.BF16);
                 TrainableLlama model = TrainableLlama.create(cpu, folder, method, 1)) {
                long atLoad = model.baseMemoryAtLoad();
                model.forwardBackward(BATCH, 1f);
                model.evaluate(BATCH);
                TrainingMemory plan = TrainingMemory.estimate(config, method, DType.BF16, DType.F32, BATCH.totalTokens(),
                        false, TrainableLlama.DEFAULT_LOSS_CHUNK_BYTES);
                // AdamW's two moments, as the trainer's optimizer holds them.
                List<Tensor> moments = new ArrayList<>();
                long momentBytes = 0;
                for (TrainableParameter p : model.parameters()) {
                    for (int i = 0; i < 2; i++) moments.add(cpu.allocate(p.value().dtype(), p.value().shape()));
                    momentBytes += 2 * p.value().byteSize();
                }
                MemoryReport r = model.memoryReport(momentBytes);
                moments.forEach(Tensor::close);
                String what = method.toString();
                assertThat(r.backend()).isEqualTo("cpu");
                assertThat(r.peakTrainingMemory()).as(what).isEqualTo(cpu.peakMemoryInUse());
                assertThat(r.baseWeights() + r.trainableWeights() + r.gradients() + r.optimizerState() + r.activations()
                        + r.workspace()).as(what).isEqualTo(r.peakTrainingMemory());
                assertThat(r.baseWeights() + r.trainableWeights()).as(what).isEqualTo(plan.frozenWeights() + plan.trainableWeights());
                assertThat(r.trainableWeights()).as(what).isEqualTo(plan.trainableWeights());
                assertThat(r.gradients()).as(what).isEqualTo(plan.gradients());
                assertThat(r.optimizerState()).as(what).isEqualTo(plan.optimizerStates());
                assertThat(r.activations()).as(what).isEqualTo(plan.activations());
                assertThat(r.workspace()).as(what).isNotNegative();
                assertThat(r.baseModelMemoryAtLoad()).as(what).isEqualTo(atLoad);
                // Full fine-tuning in F32 loads the checkpoint as F32; in BF16, and LoRA, keep it 16-bit but the F32 norms.
                boolean f32 = method instanceof FineTuneMethod.Full f && f.precision() == DType.F32;
                long stored = shape.parameterCounts().total() * (f32 ? 4 : 2);
                long norms = (2L * shape.numLayers() + 1) * shape.hiddenSize() * (f32 ? 0 : 2);
                assertThat(atLoad).as(what + " at load").isEqualTo(stored + norms);
            }
        }
    }

    @Test
    void theJsonFileReadsBackAndTheTableNamesEveryPart(@TempDir Path dir) throws Exception {
        MemoryReport r = MemoryReport.of("cuda", 3L << 30, 3L << 30, 160L << 20, 160L << 20, 320L << 20, 2L << 30, 7L << 30);
        assertThat(r.workspace()).isEqualTo((7L << 30) - (3L << 30) - (640L << 20) - (2L << 30));
        Path file = dir.resolve(MemoryReport.FILE_NAME);
        r.write(file);
        assertThat(MemoryReport.read(file)).isEqualTo(r);
        assertThat(Files.readString(file)).contains("\"peak_training_memory_bytes\" : 7516192768")
                .contains("\"base_model_memory_at_load_bytes\" : 3221225472").contains("\"backend\" : \"cuda\"");
        assertThat(r.table()).contains("memory on cuda").contains("base model memory at load").contains("3.00 GiB")
                .contains("peak training memory").contains("7.00 GiB").contains("trainable weights").contains("160.0 MiB")
                .contains("optimizer state").contains("activations").contains("workspace").contains("42.9%");
        assertThat(dir.toFile().list()).containsExactly(MemoryReport.FILE_NAME);
    }

    @Test
    void aReportWhosePartsDoNotAddUpIsRefused(@TempDir Path dir) throws Exception {
        assertThatThrownBy(() -> new MemoryReport("cpu", 1, 1, 1, 1, 1, 1, 1, 7)).hasMessageContaining("add up to 6 bytes");
        Path file = Files.writeString(dir.resolve("m.json"), "{\"backend\": \"cpu\"}");
        assertThatThrownBy(() -> MemoryReport.read(file)).hasMessageContaining("base_model_memory_at_load_bytes");
    }
}
