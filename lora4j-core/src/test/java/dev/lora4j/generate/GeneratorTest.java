package dev.lora4j.generate;

import dev.lora4j.backend.cpu.CpuBackend;
import dev.lora4j.model.KvCache;
import dev.lora4j.model.LlamaModel;
import dev.lora4j.model.TinyModels;
import dev.lora4j.tensor.DType;
import dev.lora4j.tokenizer.Tokenizer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Set;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class GeneratorTest {
    private static CpuBackend cpu;
    private static LlamaModel model;
    private static Tokenizer tokenizer;
    private static int[] prompt;

    @BeforeAll
    static void setUp() {
        cpu = new CpuBackend(2);
        var shape = TinyModels.llama();
        model = new LlamaModel(cpu, TinyModels.upload(cpu, shape, TinyModels.randomWeights(shape, DType.F32, 99), DType.F32));
        tokenizer = CharTokenizer.create();
        int[] text = tokenizer.encode("Once upon a time", false);
        prompt = new int[text.length + 1];
        System.arraycopy(text, 0, prompt, 1, text.length); // BOS = 0 first
    }

    @AfterAll
    static void tearDown() {
        model.close();
        cpu.close();
    }

    /** The greedy continuation computed the slow way: a full forward pass of the whole sequence per token. */
    private static int[] greedyByFullPasses(int[] start, int n) {
        int[] seq = start.clone();
        int[] out = new int[n];
        for (int i = 0; i < n; i++) {
            try (KvCache cache = model.newCache(seq.length)) {
                float[][] logits = model.allLogits(seq, 0, cache);
                out[i] = Sampler.argmax(logits[seq.length - 1]);
            }
            seq = Arrays.copyOf(seq, seq.length + 1);
            seq[seq.length - 1] = out[i];
        }
        return out;
    }

    @Test
    void greedyGenerationWithTheCacheEqualsArgmaxOfFullForwardPasses() {
        try (Generator g = new Generator(model, tokenizer, Set.of())) {
            GenerationResult r = g.generate(prompt, GenerationOptions.greedy(12), null);
            assertThat(r.tokens()).containsExactly(greedyByFullPasses(prompt, 12));
            assertThat(r.stopReason()).isEqualTo(GenerationResult.StopReason.MAX_TOKENS);
            assertThat(r.promptTokens()).containsExactly(prompt);
        }
    }

    @Test
    void generationStopsAtTheFirstEndOfSequenceTokenAndKeepsIt() {
        int[] free;
        try (Generator g = new Generator(model, tokenizer, Set.of())) {
            free = g.generate(prompt, GenerationOptions.greedy(10), null).tokens();
        }
        int eos = free[3];
        int firstIndex = 0;
        while (free[firstIndex] != eos) firstIndex++;
        try (Generator g = new Generator(model, tokenizer, Set.of(eos))) {
            GenerationResult r = g.generate(prompt, GenerationOptions.greedy(10), null);
            assertThat(r.stopReason()).isEqualTo(GenerationResult.StopReason.EOS);
            assertThat(r.tokens()).containsExactly(Arrays.copyOf(free, firstIndex + 1));
            GenerationResult ignoring = g.generate(prompt, GenerationOptions.greedy(10).withStopOnEos(false), null);
            assertThat(ignoring.tokens()).containsExactly(free);
            GenerationResult stopOption = new Generator(model, tokenizer, Set.of())
                    .generate(prompt, GenerationOptions.greedy(10).withStopTokenIds(List.of(eos)), null);
            assertThat(stopOption.tokens()).hasSize(firstIndex + 1);
        }
    }

    @Test
    void streamedPiecesConcatenateToTheDecodedText() {
        try (Generator g = new Generator(model, tokenizer, Set.of())) {
            List<String> pieces = new ArrayList<>();
            GenerationResult r = g.generate(prompt, GenerationOptions.sampling(24, 1.0, 0, 1.0, 5), pieces::add);
            assertThat(String.join("", pieces)).isEqualTo(r.text()).isEqualTo(tokenizer.decode(r.tokens(), true));
            assertThat(pieces.size()).isGreaterThan(1);
        }
    }

    @Test
    void theSameSeedReproducesASampledGenerationAndTheResultNamesTheSeed() {
        try (Generator g = new Generator(model, tokenizer, Set.of())) {
            GenerationOptions unseeded = GenerationOptions.sampling(16, 1.0, 20, 0.95, 0).withSeed(0);
            GenerationResult a = g.generate(prompt, unseeded.withSeed(31), null);
            GenerationResult b = g.generate(prompt, unseeded.withSeed(31), null);
            GenerationResult c = g.generate(prompt, unseeded.withSeed(32), null);
            assertThat(a.tokens()).containsExactly(b.tokens());
            assertThat(a.tokens()).isNotEqualTo(c.tokens());
            assertThat(a.seed()).isEqualTo(31);
            GenerationOptions random = new GenerationOptions(16, true, 1.0, 20, 0.95, 1.0, null, true, List.of());
            GenerationResult d = g.generate(prompt, random, null);
            assertThat(g.generate(prompt, random.withSeed(d.seed()), null).tokens()).containsExactly(d.tokens());
        }
    }

    @Test
    void timingsCountThePromptAndTheDecodeSteps() {
        try (Generator g = new Generator(model, tokenizer, Set.of())) {
            GenerationResult r = g.generate(prompt, GenerationOptions.greedy(8), null);
            assertThat(r.timings().prefillTokens()).isEqualTo(prompt.length);
            assertThat(r.timings().decodeTokens()).isEqualTo(7); // the first token comes from the prefill's logits
            assertThat(r.timings().prefillTokensPerSecond()).isPositive();
            assertThat(r.timings().decodeTokensPerSecond()).isPositive();
        }
    }

    @Test
    void aLongerSecondGenerationGrowsTheCache() {
        try (Generator g = new Generator(model, tokenizer, Set.of())) {
            g.generate(prompt, GenerationOptions.greedy(2), null);
            int[] longPrompt = new int[300];
            for (int i = 0; i < longPrompt.length; i++) longPrompt[i] = prompt[i % prompt.length];
            assertThat(g.generate(longPrompt, GenerationOptions.greedy(3), null).tokens()).hasSize(3);
        }
    }

    @Test
    void anEmptyPromptIsRejected() {
        try (Generator g = new Generator(model, tokenizer, Set.of())) {
            assertThatThrownBy(() -> g.generate(new int[0], GenerationOptions.greedy(3), null))
                    .hasMessageContaining("the prompt has no tokens");
        }
    }
}
