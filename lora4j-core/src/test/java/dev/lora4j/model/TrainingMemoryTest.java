package dev.lora4j.model;

import dev.lora4j.backend.cpu.CpuBackend;
import dev.lora4j.io.ModelConfig;
import dev.lora4j.lora.LoraConfig;
import dev.lora4j.lora.TargetModules;
import dev.lora4j.quant.QuantSpec;
import dev.lora4j.tensor.DType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.within;

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
                assertThat(m.activations()).as("checkpointing " + checkpointing + ": evaluation runs in the training buffers")
                        .isEqualTo(model.activationBytes());
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
    void loraDropoutTakesNoActivationMemory() {
        // dropout(x) is never formed: the LoRA ops draw the mask where they use it.
        LlamaShape shape = TinyModels.mistral(0);
        LoraConfig lora = LoraConfig.defaults().withR(4).withTargetModules(TargetModules.allLinear());
        long[] held = new long[2];
        for (int run = 0; run < 2; run++) {
            try (CpuBackend cpu = new CpuBackend(2);
                 TrainableLlama model = TrainableLlama.fromWeights(cpu, TinyModels.upload(cpu, shape,
                         TinyModels.randomWeights(shape, DType.BF16, 3), DType.BF16),
                         FineTuneMethod.lora(lora.withLoraDropout(run == 0 ? 0 : 0.1)), 1)) {
                model.setGradientCheckpointing(true);
                model.forwardBackward(TrainableLlamaGradientTest.BATCH, 1f);
                held[run] = model.activationBytes();
            }
        }
        assertThat(held[1]).as("activation bytes with lora_dropout 0.1").isEqualTo(held[0]);

        ModelConfig mistral = RandomModelWriter.preset("mistral-7b");
        LoraConfig allLinear = LoraConfig.defaults().withR(16).withTargetModules(TargetModules.allLinear());
        long none = TrainingMemory.estimate(mistral, FineTuneMethod.qlora(allLinear), DType.BF16, DType.BF16, 4096, true,
                TrainableLlama.DEFAULT_LOSS_CHUNK_BYTES).activations();
        long some = TrainingMemory.estimate(mistral, FineTuneMethod.qlora(allLinear.withLoraDropout(0.05)), DType.BF16,
                DType.BF16, 4096, true, TrainableLlama.DEFAULT_LOSS_CHUNK_BYTES).activations();
        assertThat(some).isEqualTo(none);
    }

    @Test
    void aBlocksGradientsShareMemoryWithTheScratchThatIsDeadWhileTheyLive() {
        // Mistral-7B, 4096 tokens, BF16, checkpointing: the 32 layer inputs (the final hidden state takes the
        // embeddings' buffer), every layer's adapter hiddens [n, r] and one layer's activations are kept;
        // of the gradients only the residual's, the adapters' [n, r] and one area as wide as the MLP remain (the
        // attention gradients and the normed input's fill it exactly: 2·4096 + 2·1024 + 4096 = 14336; dUp is written
        // over the up activation).
        ModelConfig mistral = RandomModelWriter.preset("mistral-7b");
        LoraConfig lora = LoraConfig.defaults().withR(16).withLoraDropout(0.05).withTargetModules(TargetModules.allLinear());
        long loss = 64L << 20;
        long tokens = 4096, d = 4096, qd = 4096, kvd = 1024, ff = 14336;
        long kept = 32 * d + d + 2 * qd + 2 * kvd + 2 * ff + 32 * 7 * 16 + d + ff; // inputs, middle, layer, lora, normed, swiglu
        long gradients = d + 16 + ff;
        long f32 = tokens * 32 + (loss / (4 * 32000)) * 32000 + tokens;        // lse, logits chunk, losses
        TrainingMemory m = TrainingMemory.estimate(mistral, FineTuneMethod.qlora(lora), DType.BF16, DType.BF16,
                (int) tokens, true, loss);
        assertThat(m.activations()).isEqualTo(2 * tokens * (kept + gradients) + 4 * f32);
    }

    @Test
    void underQloraTheEstimateEqualsTheMeasuredReport(@TempDir Path dir) throws Exception {
        LlamaShape shape = TinyModels.llamaWithBiases();
        ModelConfig config = TinyModelFolders.config(shape, DType.BF16);
        FineTuneMethod qlora = FineTuneMethod.qlora(LoraConfig.defaults().withR(4).withTargetModules(TargetModules.allLinear()));
        TrainingBatch batch = TrainableLlamaGradientTest.BATCH;
        try (CpuBackend cpu = new CpuBackend(2);
             var folder = TinyModelFolders.write(dir, shape, TinyModels.randomWeights(shape, DType.BF16, 1), DType.BF16);
             TrainableLlama model = TrainableLlama.create(cpu, folder, qlora, 1)) {
            model.forwardBackward(batch, 1f);
            TrainingMemory m = TrainingMemory.estimate(config, qlora, DType.BF16, DType.F32, batch.totalTokens(), true,
                    TrainableLlama.DEFAULT_LOSS_CHUNK_BYTES);
            MemoryReport r = model.memoryReport(0); // no optimizer here: its state is the trainer's
            long projections = 0;
            for (LlamaWeights.Layer layer : model.weights().layers()) {
                for (Projection p : Projection.values()) projections += QuantSpec.QLORA.bytesFor(p.weight(layer).numel());
            }
            long d = shape.hiddenSize(), L = shape.numLayers();
            long biases = L * (shape.queryDim() + 2L * shape.kvDim() + d + 2L * shape.intermediateSize() + d);
            long bf16 = 2 * (2 * shape.vocabSize() * d + biases), norms = 4 * (2 * L + 1) * d;
            assertThat(m.frozenWeights()).isEqualTo(projections + bf16 + norms);
            assertThat(r.baseWeights()).isEqualTo(m.frozenWeights());
            assertThat(r.baseModelMemoryAtLoad()).as("the 4-bit base, measured after loading").isEqualTo(m.frozenWeights());
            assertThat(r.trainableWeights()).isEqualTo(m.trainableWeights());
            assertThat(r.gradients()).isEqualTo(m.gradients());
            assertThat(r.activations()).isEqualTo(m.activations());
            assertThat(r.peakTrainingMemory()).isEqualTo(cpu.peakMemoryInUse());
            assertThat(r.workspace()).isNotNegative();
        }
    }

    @Test
    void qloraKeepsA7BModelsBaseInAQuarterOfItsBf16Size() {
        ModelConfig mistral = RandomModelWriter.preset("mistral-7b");
        LoraConfig lora = LoraConfig.defaults().withR(16).withTargetModules(TargetModules.allLinear());
        TrainingMemory bf16 = TrainingMemory.estimate(mistral, FineTuneMethod.lora(lora), DType.BF16, DType.BF16, 4096, true, 256L << 20);
        TrainingMemory nf4 = TrainingMemory.estimate(mistral, FineTuneMethod.qlora(lora), DType.BF16, DType.BF16, 4096, true, 256L << 20);
        long embeddings = 2L * 2 * 32000 * 4096, norms = 4L * 65 * 4096;
        long projections = 32L * (2 * QuantSpec.QLORA.bytesFor(4096L * 4096) + 2 * QuantSpec.QLORA.bytesFor(1024L * 4096)
                + 3 * QuantSpec.QLORA.bytesFor(14336L * 4096));
        assertThat(nf4.frozenWeights()).isEqualTo(embeddings + norms + projections);
        // 4 bits and 0.127 bits of double-quantized scales per weight instead of 16 bits.
        assertThat((double) projections / (bf16.frozenWeights() - embeddings - norms)).isCloseTo(4.127 / 16, within(0.001));
        assertThat(nf4.activations()).isEqualTo(bf16.activations());
        assertThat(nf4.trainableWeights()).isEqualTo(bf16.trainableWeights());
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
