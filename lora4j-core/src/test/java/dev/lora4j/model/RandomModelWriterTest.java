package dev.lora4j.model;

import dev.lora4j.backend.cpu.CpuBackend;
import dev.lora4j.io.ModelConfig;
import dev.lora4j.io.ModelFolder;
import dev.lora4j.io.SafetensorsModel;
import dev.lora4j.tensor.DType;
import dev.lora4j.backend.HostConversions;
import dev.lora4j.tokenizer.BpeTrainer;
import dev.lora4j.tokenizer.Tokenizer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;

class RandomModelWriterTest {

    /** A small Qwen2-shaped config: biases and tied embeddings exercise every kind of tensor. */
    private static ModelConfig small() {
        ModelConfig qwen = RandomModelWriter.preset("qwen2-0.5b");
        return new ModelConfig(qwen.architectures(), "qwen2", 300, 64, 96, 2, 4, 2, 16, 1e-6, 1e6, null, 512, 0, 0,
                true, false, true, null, List.of(1), null, "bfloat16", "silu");
    }

    @Test
    void writesAFolderThatLoadsAndRunsWithTransformersInitialisation(@TempDir Path dir) throws IOException {
        RandomModelWriter.Written w = RandomModelWriter.writeWeightsAndConfig(dir, small(), RandomModelWriter.Options.of(DType.F32, 5), null);
        assertThat(w.weightFiles()).containsExactly(dir.resolve("model.safetensors"));
        assertThat(w.parameters()).isEqualTo(LlamaShape.of(small()).parameterCounts().total());
        try (ModelFolder folder = ModelFolder.open(dir); CpuBackend cpu = new CpuBackend(2)) {
            assertThat(folder.config().dtype()).isEqualTo("float32");
            assertThat(folder.generationConfig().eosTokenIds()).containsExactly(1);
            SafetensorsModel st = folder.weights();
            float[] embed = floats(st.data("model.embed_tokens.weight"), DType.F32, 300 * 64);
            assertThat(mean(embed)).isCloseTo(0, within(0.001));
            assertThat(std(embed)).isCloseTo(RandomModelWriter.INITIALIZER_RANGE, within(0.0005));
            assertThat(floats(st.data("model.norm.weight"), DType.F32, 64)).containsOnly(1f);
            assertThat(floats(st.data("model.layers.0.self_attn.q_proj.bias"), DType.F32, 64)).containsOnly(0f);
            assertThat(st.contains("lm_head.weight")).isFalse();
            LlamaShape shape = LlamaShape.of(folder.config());
            try (LlamaModel model = new LlamaModel(cpu, LlamaWeightLoader.load(st, shape, cpu)); KvCache cache = model.newCache(8)) {
                float[] logits = model.forward(new int[]{1, 2, 3}, 0, cache);
                assertThat(logits).hasSize(300);
                for (float l : logits) assertThat(Float.isFinite(l)).isTrue();
            }
        }
    }

    @Test
    void theSameSeedWritesTheSameBytesAndAnotherSeedOtherBytes(@TempDir Path dir) throws IOException {
        RandomModelWriter.writeWeightsAndConfig(dir.resolve("a"), small(), RandomModelWriter.Options.of(DType.BF16, 9), null);
        RandomModelWriter.writeWeightsAndConfig(dir.resolve("b"), small(), RandomModelWriter.Options.of(DType.BF16, 9), null);
        RandomModelWriter.writeWeightsAndConfig(dir.resolve("c"), small(), RandomModelWriter.Options.of(DType.BF16, 10), null);
        byte[] a = Files.readAllBytes(dir.resolve("a/model.safetensors"));
        assertThat(Files.readAllBytes(dir.resolve("b/model.safetensors"))).isEqualTo(a);
        assertThat(Files.readAllBytes(dir.resolve("c/model.safetensors"))).isNotEqualTo(a);
    }

    @Test
    void largeModelsAreWrittenInShardsWithAnIndex(@TempDir Path dir) throws IOException {
        RandomModelWriter.Options o = new RandomModelWriter.Options(DType.BF16, 1, 40_000);
        RandomModelWriter.Written w = RandomModelWriter.writeWeightsAndConfig(dir, small(), o, null);
        assertThat(w.weightFiles().size()).isGreaterThan(2);
        assertThat(dir.resolve(SafetensorsModel.INDEX_FILE)).exists();
        assertThat(dir.resolve("model.safetensors")).doesNotExist();
        try (SafetensorsModel st = SafetensorsModel.open(dir)) {
            assertThat(st.names()).containsExactlyInAnyOrderElementsOf(LlamaWeightLoader.requiredNames(LlamaShape.of(small())));
        }
        // Writing again as one file replaces the shards.
        RandomModelWriter.writeWeightsAndConfig(dir, small(), RandomModelWriter.Options.of(DType.BF16, 1), null);
        try (var files = Files.list(dir)) {
            assertThat(files.map(p -> p.getFileName().toString()).filter(n -> n.endsWith(".safetensors")).toList())
                    .containsExactly("model.safetensors");
        }
        assertThat(dir.resolve(SafetensorsModel.INDEX_FILE)).doesNotExist();
    }

    @Test
    void theTinyPresetGetsATokenizerOfExactlyItsVocabularyAndItsSpecialTokens(@TempDir Path dir) throws IOException {
        RandomModelWriter.write(dir, RandomModelWriter.preset("tiny"), RandomModelWriter.Options.of(DType.BF16, 1), null);
        try (ModelFolder folder = ModelFolder.open(dir)) {
            assertThat(folder.hasTokenizer()).isTrue();
            Tokenizer tokenizer = Tokenizer.load(dir);
            assertThat(tokenizer.vocabSize()).isEqualTo(folder.config().vocabSize()).isEqualTo(2048);
            assertThat(folder.config().bosTokenId()).isEqualTo(tokenizer.bosTokenId().getAsInt());
            assertThat(folder.generationConfig().eosTokenIds()).containsExactly(
                    tokenizer.eosTokenId().getAsInt(), tokenizer.tokenId(BpeTrainer.EOT).getAsInt());
            assertThat(folder.config().dtype()).isEqualTo("bfloat16");
            assertThat(folder.weights().info("model.embed_tokens.weight").dtype()).isEqualTo(DType.BF16);
        }
    }

    @Test
    void presetsHaveTheRealModelsParameterCounts() {
        assertThat(count("llama2-7b")).isEqualTo(6_738_415_616L);
        assertThat(count("mistral-7b")).isEqualTo(7_241_732_096L);
        assertThat(count("llama3-8b")).isEqualTo(8_030_261_248L);
        assertThat(count("qwen2-0.5b")).isEqualTo(494_032_768L);
        assertThat(count("100m")).isBetween(95_000_000L, 105_000_000L);
        assertThat(LlamaShape.of(RandomModelWriter.preset("mistral-7b")).slidingWindow(31)).isEqualTo(4096);
        assertThatThrownBy(() -> RandomModelWriter.preset("gpt2")).hasMessageContaining("choose one of tiny");
    }

    @Test
    void theZigguratDrawsFollowTheStandardNormalDistribution() {
        float[] z = NormalFiller.standardNormals(4_000_000, 17);
        double sum = 0, sumSq = 0;
        int within1 = 0, within2 = 0, beyondR = 0;
        for (float v : z) {
            sum += v;
            sumSq += v * v;
            if (Math.abs(v) < 1) within1++;
            if (Math.abs(v) < 2) within2++;
            if (Math.abs(v) > 3.442619855899) beyondR++;
        }
        int n = z.length;
        assertThat(sum / n).isCloseTo(0, within(0.002));
        assertThat(Math.sqrt(sumSq / n)).isCloseTo(1, within(0.002));
        assertThat(within1 / (double) n).isCloseTo(0.682689, within(0.001));
        assertThat(within2 / (double) n).isCloseTo(0.954500, within(0.0005));
        // P(|z| > 3.4426) = 5.76e-4: the tail of the base strip, drawn by the slow path
        assertThat(beyondR / (double) n).isCloseTo(5.76e-4, within(0.4e-4));
    }

    private static long count(String preset) {
        return LlamaShape.of(RandomModelWriter.preset(preset)).parameterCounts().total();
    }

    private static float[] floats(MemorySegment s, DType t, int n) {
        return HostConversions.toFloats(s, t, n);
    }

    private static double mean(float[] v) {
        double s = 0;
        for (float f : v) s += f;
        return s / v.length;
    }

    private static double std(float[] v) {
        double m = mean(v), s = 0;
        for (float f : v) s += (f - m) * (f - m);
        return Math.sqrt(s / v.length);
    }
}
