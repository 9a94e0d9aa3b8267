package dev.lora4j.model;

import dev.lora4j.backend.cpu.CpuBackend;
import dev.lora4j.io.ModelConfig;
import dev.lora4j.io.ModelFolder;
import dev.lora4j.quant.QuantSpec;
import dev.lora4j.quant.QuantizedArrays;
import dev.lora4j.quant.QuantizedTensor;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class RandomWeightsTest {

    /** Qwen2-shaped (biases, tied embeddings) and Mistral-shaped (untied lm_head, GQA): every kind of tensor. */
    private static List<ModelConfig> configs() {
        ModelConfig qwen = RandomModelWriter.preset("qwen2-0.5b");
        ModelConfig mistral = RandomModelWriter.preset("mistral-7b");
        return List.of(
                new ModelConfig(qwen.architectures(), "qwen2", 300, 64, 96, 2, 4, 2, 16, 1e-6, 1e6, null, 512, 0, 0,
                        true, false, true, null, List.of(1), null, "bfloat16", "silu"),
                new ModelConfig(mistral.architectures(), "mistral", 500, 128, 224, 3, 8, 2, 16, 1e-5, 1e4, null, 512, 64, 0,
                        false, false, false, 1, List.of(2), null, "bfloat16", "silu"));
    }

    @Test
    void generatesOnTheBackendTheValuesTheModelWriterWritesForTheSameSeed(@TempDir Path dir) throws IOException {
        try (CpuBackend cpu = new CpuBackend(2)) {
            for (ModelConfig c : configs()) {
                Path folder = dir.resolve(c.modelType());
                RandomModelWriter.writeWeightsAndConfig(folder, c, RandomModelWriter.Options.of(DType.BF16, 9), null);
                try (ModelFolder f = ModelFolder.open(folder);
                     LlamaWeights written = LlamaWeightLoader.load(f.weights(), LlamaShape.of(c), cpu);
                     LlamaWeights generated = RandomWeights.generate(cpu, c, DType.BF16, null, 9, null)) {
                    List<Tensor> a = written.tensors(), b = generated.tensors();
                    assertThat(b).hasSameSizeAs(a);
                    for (int i = 0; i < a.size(); i++) {
                        assertThat(b.get(i).dtype()).as(c.modelType() + " tensor " + i).isEqualTo(a.get(i).dtype());
                        assertThat(b.get(i).shape()).isEqualTo(a.get(i).shape());
                        assertThat(cpu.toFloats(b.get(i))).as(c.modelType() + " tensor " + i).isEqualTo(cpu.toFloats(a.get(i)));
                    }
                }
            }
        }
    }

    @Test
    void anotherSeedGivesOtherValuesAndF32StorageHoldsTheSameBf16ValuesWidened() {
        ModelConfig c = configs().get(1);
        try (CpuBackend cpu = new CpuBackend(2);
             LlamaWeights bf16 = RandomWeights.generate(cpu, c, DType.BF16, null, 3, null);
             LlamaWeights f32 = RandomWeights.generate(cpu, c, DType.F32, null, 3, null);
             LlamaWeights other = RandomWeights.generate(cpu, c, DType.BF16, null, 4, null)) {
            Tensor q = bf16.layer(2).qProj();
            assertThat(f32.layer(2).qProj().dtype()).isEqualTo(DType.F32);
            assertThat(cpu.toFloats(f32.layer(2).qProj())).isEqualTo(cpu.toFloats(q));
            assertThat(cpu.toFloats(f32.lmHead())).isEqualTo(cpu.toFloats(bf16.lmHead()));
            assertThat(cpu.toFloats(other.layer(2).qProj())).isNotEqualTo(cpu.toFloats(q));
            assertThat(bf16.finalNorm().dtype()).isEqualTo(DType.F32);
            assertThat(cpu.toFloats(bf16.finalNorm())).containsOnly(1f);
        }
    }

    @Test
    void quantizesEveryDecoderProjectionAsItArrivesAndKeepsTheRestIn16Bits() {
        ModelConfig c = configs().get(1);
        try (CpuBackend cpu = new CpuBackend(2);
             LlamaWeights dense = RandomWeights.generate(cpu, c, DType.BF16, null, 5, null);
             LlamaWeights q = RandomWeights.generate(cpu, c, DType.BF16, QuantSpec.QLORA, 5, null)) {
            for (int l = 0; l < 3; l++) {
                for (Projection p : Projection.values()) {
                    assertThat(p.weight(q.layer(l))).as(p.path(l)).isInstanceOf(QuantizedTensor.class);
                    // The same codes as quantizing the dense weight of the same seed.
                    try (QuantizedTensor expected = cpu.quantize4bit(p.weight(dense.layer(l)), QuantSpec.QLORA)) {
                        QuantizedArrays got = ((QuantizedTensor) p.weight(q.layer(l))).toArrays();
                        QuantizedArrays want = expected.toArrays();
                        assertThat(got.packed()).as(p.path(l)).isEqualTo(want.packed());
                        assertThat(got.absmaxCodes()).isEqualTo(want.absmaxCodes());
                        assertThat(got.nestedAbsmax()).isEqualTo(want.nestedAbsmax());
                    }
                }
            }
            assertThat(q.embedTokens().dtype()).isEqualTo(DType.BF16);
            assertThat(q.lmHead().dtype()).isEqualTo(DType.BF16);
            assertThat(cpu.toFloats(q.lmHead())).isEqualTo(cpu.toFloats(dense.lmHead()));
            assertThat(q.byteSize()).isLessThan(dense.byteSize());
        }
    }

    @Test
    void refusesStorageTypesThatAreNotFloatingPoint() {
        try (CpuBackend cpu = new CpuBackend(1)) {
            assertThatThrownBy(() -> RandomWeights.generate(cpu, configs().getFirst(), DType.U8, null, 0, null))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("F32, BF16 or F16");
        }
    }
}
