package dev.lora4j.model;

import dev.lora4j.backend.HostConversions;
import dev.lora4j.backend.cpu.CpuBackend;
import dev.lora4j.io.ModelConfig;
import dev.lora4j.io.SafetensorsModel;
import dev.lora4j.tensor.DType;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class LlamaWeightLoaderTest {
    @TempDir
    static Path dir;
    private static CpuBackend cpu;

    private static ModelConfig qwen(int intermediate, boolean tied) {
        return new ModelConfig(List.of("Qwen2ForCausalLM"), "qwen2", 300, 64, intermediate, 2, 4, 2, 16, 1e-6, 1e6,
                null, 512, 0, 0, true, false, tied, null, List.of(1), null, "bfloat16", "silu");
    }

    @BeforeAll
    static void write() throws IOException {
        cpu = new CpuBackend(2);
        RandomModelWriter.writeWeightsAndConfig(dir, qwen(96, true), RandomModelWriter.Options.of(DType.BF16, 1), null);
    }

    @AfterAll
    static void close() { cpu.close(); }

    @Test
    void keepsTheStoredDtypeByDefaultConvertsOnRequestAndKeepsNormsInF32() throws IOException {
        try (SafetensorsModel st = SafetensorsModel.open(dir)) {
            LlamaShape shape = LlamaShape.of(qwen(96, true));
            try (LlamaWeights asStored = LlamaWeightLoader.load(st, shape, cpu)) {
                assertThat(asStored.layer(0).qProj().dtype()).isEqualTo(DType.BF16);
                assertThat(asStored.layer(0).qBias().dtype()).isEqualTo(DType.BF16);
                assertThat(asStored.layer(0).inputNorm().dtype()).isEqualTo(DType.F32);
                assertThat(asStored.lmHead()).isSameAs(asStored.embedTokens());
            }
            try (LlamaWeights f32 = LlamaWeightLoader.load(st, shape, cpu, DType.F32)) {
                assertThat(f32.bytesByDType()).containsOnlyKeys(DType.F32);
                assertThat(cpu.toFloats(f32.layer(1).downProj()))
                        .containsExactly(HostConversions.toFloats(st.data("model.layers.1.mlp.down_proj.weight"),
                                DType.BF16, 64 * 96));
            }
        }
    }

    @Test
    void aTensorOfTheWrongShapeIsNamedWithItsFileAndBothShapes() throws IOException {
        long before = cpu.memoryInUse();
        try (SafetensorsModel st = SafetensorsModel.open(dir)) {
            assertThatThrownBy(() -> LlamaWeightLoader.load(st, LlamaShape.of(qwen(97, true)), cpu))
                    .hasMessageContaining("model.layers.0.mlp.gate_proj.weight")
                    .hasMessageContaining(dir.resolve("model.safetensors").toString())
                    .hasMessageContaining("has shape [96, 64]")
                    .hasMessageContaining("needs [97, 64]");
        }
        assertThat(cpu.memoryInUse()).as("tensors loaded before the error are freed").isEqualTo(before);
    }

    @Test
    void aMissingOutputLayerSuggestsTiedEmbeddings() throws IOException {
        try (SafetensorsModel st = SafetensorsModel.open(dir)) {
            assertThatThrownBy(() -> LlamaWeightLoader.load(st, LlamaShape.of(qwen(96, false)), cpu))
                    .hasMessageContaining("lm_head.weight")
                    .hasMessageContaining("\"tie_word_embeddings\": true");
        }
    }
}
