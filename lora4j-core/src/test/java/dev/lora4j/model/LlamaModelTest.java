package dev.lora4j.model;

import dev.lora4j.backend.cpu.CpuBackend;
import dev.lora4j.tensor.DType;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.Arrays;
import java.util.stream.Stream;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class LlamaModelTest {
    private static final int[] TOKENS = {3, 17, 42, 0, 60, 5, 5, 23, 11, 38, 7, 59, 30};
    private static CpuBackend cpu;

    @BeforeAll
    static void open() { cpu = new CpuBackend(2); }

    @AfterAll
    static void close() { cpu.close(); }

    static Stream<Arguments> variants() {
        return Stream.of(
                Arguments.of("llama, GQA, q wider than hidden", TinyModels.llama(), DType.F32),
                Arguments.of("qwen2, tied embeddings, qkv bias, window 4 on layer 1", TinyModels.qwen2(4), DType.F32),
                Arguments.of("mistral, window 5 on every layer", TinyModels.mistral(5), DType.F32),
                Arguments.of("llama with attention and mlp biases", TinyModels.llamaWithBiases(), DType.F32),
                Arguments.of("llama, BF16 weights", TinyModels.llama(), DType.BF16),
                Arguments.of("qwen2, F16 weights", TinyModels.qwen2(3), DType.F16));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("variants")
    void logitsOfEveryPositionMatchADoublePrecisionReference(String name, LlamaShape shape, DType storage) {
        ReferenceLlama.Weights host = TinyModels.randomWeights(shape, storage, 7);
        double[][] expected = ReferenceLlama.logits(shape, host, TOKENS);
        try (LlamaModel model = new LlamaModel(cpu, TinyModels.upload(cpu, shape, host, storage));
             KvCache cache = model.newCache(32)) {
            float[][] actual = model.allLogits(TOKENS, 0, cache);
            assertThat(maxAbsDiff(actual, expected)).as(name).isLessThanOrEqualTo(1e-4);
            assertThat(spread(expected)).as("logits vary enough for the comparison to mean something").isGreaterThan(1);
        }
    }

    @Test
    void slidingWindowChangesTheResultOnceTheSequenceIsLongerThanTheWindow() {
        ReferenceLlama.Weights host = TinyModels.randomWeights(TinyModels.mistral(5), DType.F32, 7);
        double[][] windowed = ReferenceLlama.logits(TinyModels.mistral(5), host, TOKENS);
        double[][] full = ReferenceLlama.logits(TinyModels.mistral(0), host, TOKENS);
        assertThat(maxAbsDiff(Arrays.copyOf(windowed, 5), Arrays.copyOf(full, 5))).isZero();
        assertThat(maxAbsDiff(windowed, full)).isGreaterThan(1e-2);
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("variants")
    void decodingOneTokenAtATimeGivesTheLogitsOfAFullForwardPass(String name, LlamaShape shape, DType storage) {
        ReferenceLlama.Weights host = TinyModels.randomWeights(shape, storage, 11);
        try (LlamaModel model = new LlamaModel(cpu, TinyModels.upload(cpu, shape, host, storage));
             KvCache full = model.newCache(TOKENS.length);
             KvCache incremental = model.newCache(TOKENS.length)) {
            float[][] all = model.allLogits(TOKENS, 0, full);
            int prompt = 4;
            float[] last = model.forward(Arrays.copyOf(TOKENS, prompt), 0, incremental);
            assertThat(maxAbsDiff(last, all[prompt - 1])).isLessThanOrEqualTo(1e-5);
            for (int i = prompt; i < TOKENS.length; i++) {
                last = model.forward(new int[]{TOKENS[i]}, i, incremental);
                assertThat(maxAbsDiff(last, all[i])).as("position " + i).isLessThanOrEqualTo(1e-5);
            }
            assertThat(incremental.length()).isEqualTo(TOKENS.length);
        }
    }

    @Test
    void aPromptLongerThanTheBatchIsProcessedInChunksWithTheSameResult() {
        LlamaShape shape = TinyModels.mistral(5);
        ReferenceLlama.Weights host = TinyModels.randomWeights(shape, DType.F32, 3);
        double[][] expected = ReferenceLlama.logits(shape, host, TOKENS);
        try (LlamaModel model = new LlamaModel(cpu, TinyModels.upload(cpu, shape, host, DType.F32), 3);
             KvCache cache = model.newCache(TOKENS.length)) {
            assertThat(maxAbsDiff(model.allLogits(TOKENS, 0, cache), expected)).isLessThanOrEqualTo(1e-4);
            cache.reset();
            float[] last = model.forward(TOKENS, 0, cache);
            assertThat(maxAbsDiff(last, expected[TOKENS.length - 1])).isLessThanOrEqualTo(1e-4);
        }
    }

    @Test
    void rewindingTheCacheRecomputesFromThatPosition() {
        LlamaShape shape = TinyModels.llama();
        ReferenceLlama.Weights host = TinyModels.randomWeights(shape, DType.F32, 5);
        int[] other = TOKENS.clone();
        other[6] = 1;
        double[][] expected = ReferenceLlama.logits(shape, host, Arrays.copyOf(other, 8));
        try (LlamaModel model = new LlamaModel(cpu, TinyModels.upload(cpu, shape, host, DType.F32));
             KvCache cache = model.newCache(16)) {
            model.forward(TOKENS, 0, cache);
            float[] last = model.forward(new int[]{other[6], other[7]}, 6, cache);
            assertThat(maxAbsDiff(last, expected[7])).isLessThanOrEqualTo(1e-4);
            assertThat(cache.length()).isEqualTo(8);
        }
    }

    @Test
    void badInputIsRejectedWithAMessageSayingWhatIsWrong() {
        LlamaShape shape = TinyModels.llama();
        try (LlamaModel model = new LlamaModel(cpu, TinyModels.upload(cpu, shape, TinyModels.randomWeights(shape, DType.F32, 1), DType.F32));
             KvCache cache = model.newCache(4)) {
            assertThatThrownBy(() -> model.forward(new int[]{1, 61}, 0, cache))
                    .hasMessageContaining("token id 61 is outside the vocabulary [0, 61)");
            assertThatThrownBy(() -> model.forward(new int[]{1, 2, 3, 4, 5}, 0, cache))
                    .hasMessageContaining("does not fit the KV cache of 4 positions");
            assertThatThrownBy(() -> model.forward(new int[]{1}, 2, cache))
                    .hasMessageContaining("start position 2 must be within [0, 0]");
        }
    }

    @Test
    void weightsOfTheWrongShapeAreRejectedNamingTheTensor() {
        LlamaShape shape = TinyModels.llama();
        LlamaShape wider = TinyModels.shape("llama", 4, 2, 12, false, false, false, false, new int[]{0, 0, 0});
        ReferenceLlama.Weights host = TinyModels.randomWeights(shape, DType.F32, 1);
        assertThatThrownBy(() -> TinyModels.upload(cpu, wider, host, DType.F32))
                .hasMessageContaining("expected 3 layers");
        LlamaShape moreKv = TinyModels.shape("llama", 4, 4, 12, false, false, false, false, new int[]{0, 0});
        assertThatThrownBy(() -> TinyModels.upload(cpu, moreKv, host, DType.F32))
                .hasMessageContaining("model.layers.0.self_attn.k_proj.weight: expected shape [48, 32], found [24, 32]");
    }

    @Test
    void parameterCountsAddUpTheModulesAndCountATiedTableOnce() {
        LlamaShape.ParameterCounts llama = TinyModels.llama().parameterCounts();
        // q 48x32, k and v 24x32, o 32x48 per layer; mlp 3 x 40x32; 5 norms of 32; embeddings and lm_head 61x32
        assertThat(llama.attention()).isEqualTo(2 * (48 * 32 + 2 * 24 * 32 + 32 * 48));
        assertThat(llama.mlp()).isEqualTo(2 * 3 * 40 * 32);
        assertThat(llama.norms()).isEqualTo(5 * 32);
        assertThat(llama.embeddings()).isEqualTo(61 * 32);
        assertThat(llama.lmHead()).isEqualTo(61 * 32);
        LlamaShape.ParameterCounts qwen = TinyModels.qwen2(4).parameterCounts();
        assertThat(qwen.lmHead()).isZero();
        assertThat(qwen.attention()).isEqualTo(2 * (32 * 32 + 2 * 8 * 32 + 32 * 32 + 32 + 2 * 8));
        try (LlamaWeights w = TinyModels.upload(cpu, TinyModels.qwen2(4),
                TinyModels.randomWeights(TinyModels.qwen2(4), DType.BF16, 1), DType.BF16)) {
            long bf16Params = qwen.total() - qwen.norms();
            assertThat(w.bytesByDType()).containsEntry(DType.BF16, 2 * bf16Params).containsEntry(DType.F32, 4 * qwen.norms());
            assertThat(w.byteSize()).isEqualTo(qwen.bytes(DType.BF16));
        }
    }

    static double maxAbsDiff(float[][] a, double[][] b) {
        double max = 0;
        for (int i = 0; i < a.length; i++) for (int j = 0; j < a[i].length; j++) max = Math.max(max, Math.abs(a[i][j] - b[i][j]));
        return max;
    }

    static double maxAbsDiff(float[] a, float[] b) {
        double max = 0;
        for (int j = 0; j < a.length; j++) max = Math.max(max, Math.abs(a[j] - b[j]));
        return max;
    }

    private static double maxAbsDiff(float[] a, double[] b) {
        double max = 0;
        for (int j = 0; j < a.length; j++) max = Math.max(max, Math.abs(a[j] - b[j]));
        return max;
    }

    private static double maxAbsDiff(double[][] a, double[][] b) {
        double max = 0;
        for (int i = 0; i < a.length; i++) for (int j = 0; j < a[i].length; j++) max = Math.max(max, Math.abs(a[i][j] - b[i][j]));
        return max;
    }

    private static double spread(double[][] a) {
        double min = Double.MAX_VALUE, max = -Double.MAX_VALUE;
        for (double[] row : a) for (double v : row) { min = Math.min(min, v); max = Math.max(max, v); }
        return max - min;
    }
}
