package dev.lora4j.model;

import dev.lora4j.backend.cpu.CpuBackend;
import dev.lora4j.io.ModelFolder;
import dev.lora4j.io.SafetensorsModel;
import dev.lora4j.lora.LoraConfig;
import dev.lora4j.lora.TargetModules;
import dev.lora4j.quant.QuantSpec;
import dev.lora4j.quant.QuantType;
import dev.lora4j.quant.QuantizedCheckpointWriter;
import dev.lora4j.quant.QuantizedTensor;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import static dev.lora4j.model.TrainableLlamaGradientTest.BATCH;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * QLoRA: LoRA adapters in F32 over a frozen base whose seven projections per layer are 4-bit; embeddings, lm_head
 * and biases keep their dtype, norm weights are F32, and gradients reach the adapters through the 4-bit weights.
 */
class QLoraTest {
    private static final int[] TOKENS = {3, 17, 42, 0, 60, 5, 5, 23, 11, 38, 7, 59, 30};
    private static final LoraConfig ALL_LINEAR = LoraConfig.defaults().withInitLoraWeights("false").withR(4).withLoraAlpha(8)
            .withTargetModules(TargetModules.allLinear());
    private static CpuBackend cpu;

    @BeforeAll
    static void open() { cpu = new CpuBackend(2); }

    @AfterAll
    static void close() { cpu.close(); }

    private static LlamaWeights base(LlamaShape shape, DType storage) {
        return TinyModels.upload(cpu, shape, TinyModels.randomWeights(shape, storage, 21), storage);
    }

    @Test
    void theFrozenProjectionsAre4BitAndTheRestKeepsItsDtype() {
        LlamaShape shape = TinyModels.llamaWithBiases();
        try (TrainableLlama model = TrainableLlama.fromWeights(cpu, base(shape, DType.BF16), FineTuneMethod.qlora(ALL_LINEAR), 1)) {
            assertThat(model.method().quantization()).isEqualTo(QuantSpec.QLORA);
            assertThat(model.method().name()).isEqualTo("qlora");
            LlamaWeights w = model.weights();
            for (LlamaWeights.Layer layer : w.layers()) {
                for (Projection p : Projection.values()) {
                    assertThat(p.weight(layer)).as(p.shortName()).isInstanceOfSatisfying(QuantizedTensor.class, q -> {
                        assertThat(q.spec()).isEqualTo(QuantSpec.QLORA);
                        assertThat(q.originalType()).isEqualTo(DType.BF16);
                    });
                    assertThat(p.bias(layer).dtype()).isEqualTo(DType.BF16);
                }
                assertThat(layer.inputNorm().dtype()).isEqualTo(DType.F32);
                assertThat(layer.postAttentionNorm().dtype()).isEqualTo(DType.F32);
            }
            assertThat(w.embedTokens().dtype()).isEqualTo(DType.BF16);
            assertThat(w.lmHead().dtype()).isEqualTo(DType.BF16);
            assertThat(w.finalNorm().dtype()).isEqualTo(DType.F32);
            // prepare_model_for_kbit_training's default.
            assertThat(model.gradientCheckpointing()).isTrue();
        }
    }

    @Test
    void onlyTheAdaptersTrainAndThe4BitWeightsStayAsTheyWere() {
        LlamaShape shape = TinyModels.llama();
        try (TrainableLlama model = TrainableLlama.fromWeights(cpu, base(shape, DType.BF16), FineTuneMethod.qlora(ALL_LINEAR), 1)) {
            assertThat(model.parameters()).hasSize(2 * 7 * shape.numLayers())
                    .allSatisfy(p -> {
                        assertThat(p.name()).matches(".*\\.lora_[AB]\\.weight");
                        assertThat(p.value()).isNotInstanceOf(QuantizedTensor.class);
                        assertThat(p.value().dtype()).isEqualTo(DType.F32);
                    });
            List<byte[]> before = quantizedBytes(model.weights());
            LossSum loss = model.forwardBackward(BATCH, 1f);
            assertThat(loss.mean()).isFinite();
            for (TrainableParameter p : model.parameters()) {
                assertThat(maxAbs(cpu.toFloats(p.grad()))).as(p.name()).isPositive();
            }
            assertThat(quantizedBytes(model.weights())).as("codes and scales of the frozen base").containsExactlyElementsOf(before);
        }
    }

    @Test
    void qloraComputesBitForBitWhatLoraComputesOverTheDequantizedBase() {
        LlamaShape shape = TinyModels.llamaWithBiases();
        try (TrainableLlama qlora = TrainableLlama.fromWeights(cpu, base(shape, DType.BF16), FineTuneMethod.qlora(ALL_LINEAR), 3)) {
            // The same base as dense BF16 tensors holding the dequantized values: what the backend multiplies by.
            LlamaWeights dense = dequantized(qlora.weights(), DType.BF16);
            try (TrainableLlama lora = TrainableLlama.fromWeights(cpu, dense, FineTuneMethod.lora(ALL_LINEAR), 3)) {
                lora.setGradientCheckpointing(true);
                LossSum a = qlora.forwardBackward(BATCH, 1f), b = lora.forwardBackward(BATCH, 1f);
                // The backend decodes 4-bit tiles into the dense kernels: bit for bit the dense products.
                assertThat(a.sum()).isEqualTo(b.sum());
                List<float[]> ga = TrainableLlamaGradientTest.grads(qlora), gb = TrainableLlamaGradientTest.grads(lora);
                for (int i = 0; i < gb.size(); i++) assertThat(ga.get(i)).as(qlora.parameters().get(i).name()).containsExactly(gb.get(i));
            }
        }
    }

    @Test
    void mergedWeightsAddTheAdapterToTheDequantizedBase() {
        LlamaShape shape = TinyModels.llama();
        QuantSpec f32Compute = new QuantSpec(QuantType.NF4, 64, true, DType.F32);
        LoraConfig qAndV = ALL_LINEAR.withTargetModules(TargetModules.names("q_proj", "v_proj"));
        try (TrainableLlama model = TrainableLlama.fromWeights(cpu, base(shape, DType.F32), FineTuneMethod.qlora(qAndV, f32Compute), 4)) {
            float[] unmerged = model.logits(TOKENS);
            try (LlamaWeights mergedWeights = model.mergedWeights()) {
                LlamaWeights.Layer layer = mergedWeights.layer(0);
                assertThat(layer.qProj()).isNotInstanceOf(QuantizedTensor.class);
                assertThat(layer.qProj().dtype()).as("the dtype the weight had before quantization").isEqualTo(DType.F32);
                assertThat(layer.kProj()).as("no adapter: still 4-bit").isInstanceOf(QuantizedTensor.class);
                try (LlamaModel merged = new LlamaModel(cpu, mergedWeights); KvCache cache = merged.newCache(32)) {
                    float[][] logits = merged.allLogits(TOKENS, 0, cache);
                    int v = shape.vocabSize();
                    double maxDiff = 0, spread = 0;
                    for (int i = 0; i < TOKENS.length; i++) {
                        for (int j = 0; j < v; j++) {
                            maxDiff = Math.max(maxDiff, Math.abs(logits[i][j] - unmerged[i * v + j]));
                            spread = Math.max(spread, Math.abs(unmerged[i * v + j]));
                        }
                    }
                    assertThat(maxDiff).isLessThan(1e-4);
                    assertThat(spread).isGreaterThan(0.5);
                }
            }
        }
    }

    @Test
    void aSavedQloraModelIsADense16BitModelWithTheAdaptersMergedIn(@TempDir Path dir) throws Exception {
        LlamaShape shape = TinyModels.llama();
        ReferenceLlama.Weights host = TinyModels.randomWeights(shape, DType.BF16, 8);
        LoraConfig qAndV = ALL_LINEAR.withTargetModules(TargetModules.names("q_proj", "v_proj"));
        try (ModelFolder folder = TinyModelFolders.write(dir.resolve("base"), shape, host, DType.BF16);
             TrainableLlama model = TrainableLlama.create(cpu, folder, FineTuneMethod.qlora(qAndV), 2)) {
            model.saveModel(dir.resolve("merged"));
            try (ModelFolder saved = ModelFolder.open(dir.resolve("merged"));
                 SafetensorsModel file = saved.weights();
                 LlamaWeights merged = model.mergedWeights()) {
                assertThat(saved.config().dtype()).isEqualTo("bfloat16");
                for (int l = 0; l < shape.numLayers(); l++) {
                    for (Projection p : Projection.values()) {
                        String name = p.path(l) + ".weight";
                        assertThat(file.info(name).dtype()).as(name).isEqualTo(DType.BF16);
                        Tensor expected = p.weight(merged.layer(l));
                        float[] want;
                        if (expected instanceof QuantizedTensor q) {
                            try (Tensor d = cpu.allocate(DType.BF16, q.shape())) {
                                cpu.dequantize4bit(q, d);
                                want = cpu.toFloats(d);
                            }
                        } else {
                            want = cpu.toFloats(expected);
                        }
                        try (Tensor got = cpu.upload(file.data(name), DType.BF16, DType.BF16, file.info(name).shape())) {
                            assertThat(cpu.toFloats(got)).as(name).containsExactly(want);
                        }
                    }
                }
            }
        }
    }

    @Test
    void aBaseThatIsAlready4BitTrainsWithQloraOverItsOwnQuantization() {
        LlamaShape shape = TinyModels.llama();
        long before = cpu.memoryInUse();
        QuantSpec fp4 = new QuantSpec(QuantType.FP4, 128, false, DType.F16);
        try (TrainableLlama model = TrainableLlama.fromWeights(cpu, quantized(base(shape, DType.BF16), fp4),
                FineTuneMethod.lora(ALL_LINEAR), 1)) {
            assertThat(model.method().quantization()).isEqualTo(fp4);
            assertThat(model.forwardBackward(BATCH, 1f).mean()).isFinite();
        }
        QuantSpec bf16Compute = new QuantSpec(QuantType.FP4, 128, false, DType.BF16);
        try (TrainableLlama model = TrainableLlama.fromWeights(cpu, quantized(base(shape, DType.BF16), fp4),
                FineTuneMethod.qlora(ALL_LINEAR, bf16Compute), 1)) {
            assertThat(model.method().quantization()).as("the compute dtype is the run's choice").isEqualTo(bf16Compute);
            assertThat(((QuantizedTensor) model.weights().layer(1).downProj()).spec()).isEqualTo(bf16Compute);
        }
        assertThatThrownBy(() -> TrainableLlama.fromWeights(cpu, quantized(base(shape, DType.BF16), fp4), FineTuneMethod.full(), 1))
                .hasMessageContaining("stored in 4 bits").hasMessageContaining("full fine-tuning needs 16- or 32-bit weights");
        assertThatThrownBy(() -> TrainableLlama.fromWeights(cpu, quantized(base(shape, DType.BF16), fp4),
                FineTuneMethod.qlora(ALL_LINEAR), 1))
                .hasMessageContaining("already quantized as FP4 without double quantization, block 128")
                .hasMessageContaining("NF4 with double quantization, block 64");
        assertThat(cpu.memoryInUse()).as("nothing leaks when a model is refused").isEqualTo(before);
    }

    @Test
    void aFolderSavedIn4BitsTrainsWithQloraAsIfQuantizedOnLoad(@TempDir Path dir) throws Exception {
        LlamaShape shape = TinyModels.llamaWithBiases();
        ReferenceLlama.Weights host = TinyModels.randomWeights(shape, DType.BF16, 9);
        QuantSpec spec = new QuantSpec(QuantType.NF4, 64, true, DType.BF16);
        try (ModelFolder dense = TinyModelFolders.write(dir.resolve("dense"), shape, host, DType.BF16)) {
            QuantizedCheckpointWriter.write(dense, dir.resolve("nf4"), cpu, QuantizedCheckpointWriter.Options.of(spec));
            try (ModelFolder stored = ModelFolder.open(dir.resolve("nf4"));
                 TrainableLlama fromStored = TrainableLlama.create(cpu, stored, FineTuneMethod.lora(ALL_LINEAR), 6);
                 TrainableLlama onLoad = TrainableLlama.create(cpu, dense, FineTuneMethod.qlora(ALL_LINEAR, spec), 6)) {
                assertThat(fromStored.method()).as("LoRA over a 4-bit folder is QLoRA").isEqualTo(FineTuneMethod.qlora(ALL_LINEAR, spec));
                assertThat(quantizedBytes(fromStored.weights())).containsExactlyElementsOf(quantizedBytes(onLoad.weights()));
                assertThat(fromStored.forwardBackward(BATCH, 1f).sum()).isEqualTo(onLoad.forwardBackward(BATCH, 1f).sum());
                List<float[]> a = TrainableLlamaGradientTest.grads(fromStored), b = TrainableLlamaGradientTest.grads(onLoad);
                for (int i = 0; i < b.size(); i++) assertThat(a.get(i)).containsExactly(b.get(i));
                assertThat(fromStored.baseMemoryAtLoad()).isEqualTo(onLoad.baseMemoryAtLoad());
            }
            try (ModelFolder stored = ModelFolder.open(dir.resolve("nf4"))) {
                assertThatThrownBy(() -> TrainableLlama.create(cpu, stored, FineTuneMethod.full(), 1))
                        .hasMessageStartingWith(dir.resolve("nf4").toString()).hasMessageContaining("full fine-tuning needs 16- or 32-bit weights");
                assertThatThrownBy(() -> TrainableLlama.create(cpu, stored,
                        FineTuneMethod.qlora(ALL_LINEAR, new QuantSpec(QuantType.FP4, 64, true, DType.BF16)), 1))
                        .hasMessageContaining("already quantized as NF4");
            }
        }
    }

    @Test
    void projectionsCannotTrainInFullUnderQlora() {
        LlamaShape shape = TinyModels.llama();
        assertThatThrownBy(() -> TrainablePlan.of(shape, FineTuneMethod.qlora(ALL_LINEAR.withModulesToSave(List.of("o_proj")))))
                .hasMessageContaining("model.layers.0.self_attn.o_proj.weight is a 4-bit weight under QLoRA");
        assertThat(TrainablePlan.of(shape, FineTuneMethod.qlora(ALL_LINEAR.withModulesToSave(List.of("lm_head"))))
                .trains("lm_head.weight")).isTrue();
    }

    // ---- helpers ------------------------------------------------------------------------------------------------

    /** The weights with every projection quantized (the dense originals closed), as a pre-quantized checkpoint loads. */
    static LlamaWeights quantized(LlamaWeights w, QuantSpec spec) {
        return QuantizedBase.quantize(cpu, w, spec, new ArrayList<>());
    }

    /** A dense copy of the weights, with each 4-bit projection dequantized into {@code dtype}. */
    private static LlamaWeights dequantized(LlamaWeights w, DType dtype) {
        List<LlamaWeights.Layer> layers = new ArrayList<>();
        for (LlamaWeights.Layer L : w.layers()) {
            Tensor[] p = new Tensor[Projection.values().length];
            for (Projection proj : Projection.values()) {
                QuantizedTensor q = (QuantizedTensor) proj.weight(L);
                p[proj.ordinal()] = cpu.allocate(dtype, q.shape());
                cpu.dequantize4bit(q, p[proj.ordinal()]);
            }
            layers.add(new LlamaWeights.Layer(copy(L.inputNorm()), p[0], p[1], p[2], p[3], copy(L.qBias()), copy(L.kBias()),
                    copy(L.vBias()), copy(L.oBias()), copy(L.postAttentionNorm()), p[4], p[5], p[6], copy(L.gateBias()),
                    copy(L.upBias()), copy(L.downBias())));
        }
        LlamaShape s = w.shape();
        return new LlamaWeights(s, copy(w.embedTokens()), layers, copy(w.finalNorm()), s.tiedEmbeddings() ? null : copy(w.lmHead()));
    }

    private static Tensor copy(Tensor t) {
        if (t == null) return null;
        Tensor c = cpu.allocate(t.dtype(), t.shape());
        cpu.copy(t, c);
        return c;
    }

    private static List<byte[]> quantizedBytes(LlamaWeights w) {
        List<byte[]> out = new ArrayList<>();
        for (Tensor t : w.tensors()) {
            if (!(t instanceof QuantizedTensor q)) continue;
            for (Tensor part : Arrays.asList(q.packed(), q.absmax(), q.nestedAbsmax(), q.nestedCode())) {
                if (part == null) continue;
                try (Arena arena = Arena.ofConfined()) {
                    MemorySegment host = arena.allocate(part.byteSize());
                    cpu.copyToHost(part, host);
                    out.add(host.toArray(java.lang.foreign.ValueLayout.JAVA_BYTE));
                }
            }
        }
        return out;
    }

    private static double maxAbs(float[] v) {
        double m = 0;
        for (float f : v) m = Math.max(m, Math.abs(f));
        return m;
    }
}
