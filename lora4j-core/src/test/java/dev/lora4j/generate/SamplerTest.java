package dev.lora4j.generate;

import dev.lora4j.io.GenerationConfig;
import org.junit.jupiter.api.Test;

import java.util.BitSet;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;

class SamplerTest {
    private static final float NEG_INF = Float.NEGATIVE_INFINITY;

    /** Logits whose softmax is exactly these probabilities. */
    private static float[] logitsOf(double... probs) {
        float[] l = new float[probs.length];
        for (int i = 0; i < probs.length; i++) l[i] = (float) Math.log(probs[i]);
        return l;
    }

    @Test
    void greedyPicksTheLargestLogitAndTheFirstOneOnTies() {
        assertThat(Sampler.greedy().sample(new float[]{0.1f, 2f, -3f, 1.9f})).isEqualTo(1);
        assertThat(Sampler.greedy().sample(new float[]{1f, 5f, 5f, 0f})).isEqualTo(1);
    }

    @Test
    void temperatureZeroIsGreedy() {
        assertThat(Sampler.sampling(0, 0, 1, 1).isGreedy()).isTrue();
        assertThat(GenerationOptions.sampling(10, 0, 0, 1, 1).isGreedy()).isTrue();
    }

    @Test
    void topKOfOneAlwaysPicksWhatGreedyPicks() {
        float[] logits = logitsOf(0.1, 0.2, 0.4, 0.3);
        for (long seed = 0; seed < 200; seed++) {
            assertThat(Sampler.sampling(1.5, 1, 1.0, seed).sample(logits)).isEqualTo(2);
        }
    }

    @Test
    void topKKeepsTheKLargestAndEverythingTiedWithTheKth() {
        float[] scores = {1f, 4f, 3f, 3f, 0f};
        Sampler.keepTopK(scores, 2);
        assertThat(scores).containsExactly(NEG_INF, 4f, 3f, 3f, NEG_INF);
    }

    @Test
    void topPKeepsTheSmallestSetOfMostLikelyTokensReachingP() {
        // probabilities 0.5, 0.3, 0.15, 0.05
        float[] a = logitsOf(0.5, 0.3, 0.15, 0.05);
        Sampler.keepTopP(a, 0.75);
        assertThat(finite(a)).containsExactly(true, true, false, false);

        float[] b = logitsOf(0.5, 0.3, 0.15, 0.05);
        Sampler.keepTopP(b, 0.85);
        assertThat(finite(b)).containsExactly(true, true, true, false);

        float[] c = logitsOf(0.5, 0.3, 0.15, 0.05);
        Sampler.keepTopP(c, 0.4);
        assertThat(finite(c)).containsExactly(true, false, false, false);
    }

    @Test
    void topPAlwaysKeepsTheMostLikelyToken() {
        float[] scores = logitsOf(0.25, 0.25, 0.25, 0.25);
        Sampler.keepTopP(scores, 0.01);
        int kept = 0;
        for (boolean f : finite(scores)) if (f) kept++;
        assertThat(kept).isEqualTo(1);
    }

    @Test
    void samplingWithTopPDrawsOnlyFromTheNucleusInProportion() {
        float[] logits = logitsOf(0.15, 0.5, 0.05, 0.3);
        Sampler s = Sampler.sampling(1, 0, 0.75, 42);
        int[] counts = new int[4];
        int n = 20000;
        for (int i = 0; i < n; i++) counts[s.sample(logits)]++;
        assertThat(counts[0]).isZero();
        assertThat(counts[2]).isZero();
        assertThat(counts[1] / (double) n).isCloseTo(0.5 / 0.8, within(0.02));
    }

    @Test
    void temperatureFlattensTheDistribution() {
        float[] logits = {0f, (float) Math.log(3)}; // p = 0.25, 0.75 at temperature 1
        int n = 20000;
        assertThat(frequencyOf(1, Sampler.sampling(1, 0, 1, 7), logits, n)).isCloseTo(0.75, within(0.015));
        // at temperature 2 the odds become sqrt(3): p = sqrt(3) / (1 + sqrt(3)) = 0.634
        assertThat(frequencyOf(1, Sampler.sampling(2, 0, 1, 7), logits, n)).isCloseTo(0.634, within(0.015));
    }

    @Test
    void theSameSeedGivesTheSameDrawsAndAnotherSeedOtherDraws() {
        float[] logits = logitsOf(0.2, 0.2, 0.2, 0.2, 0.2);
        Sampler a = Sampler.sampling(1, 0, 1, 123), b = Sampler.sampling(1, 0, 1, 123), c = Sampler.sampling(1, 0, 1, 124);
        int[] da = new int[50], db = new int[50], dc = new int[50];
        for (int i = 0; i < 50; i++) { da[i] = a.sample(logits); db[i] = b.sample(logits); dc[i] = c.sample(logits); }
        assertThat(da).isEqualTo(db);
        assertThat(da).isNotEqualTo(dc);
    }

    @Test
    void nanLogitsAreReportedInsteadOfSampled() {
        assertThatThrownBy(() -> Sampler.greedy().sample(new float[]{1f, Float.NaN})).hasMessageContaining("NaN");
    }

    @Test
    void repetitionPenaltyMakesSeenTokensLessLikelyWhateverTheirSign() {
        float[] logits = {2f, -2f, 3f};
        BitSet seen = new BitSet();
        seen.set(0);
        seen.set(1);
        RepetitionPenalty.apply(logits, seen, 2f);
        assertThat(logits).containsExactly(1f, -4f, 3f);
    }

    @Test
    void optionsFromGenerationConfigFollowHuggingFaceDefaults() {
        GenerationOptions none = GenerationOptions.defaults(GenerationConfig.EMPTY);
        assertThat(none.isGreedy()).isTrue();
        assertThat(none.maxNewTokens()).isEqualTo(GenerationOptions.DEFAULT_MAX_NEW_TOKENS);
        GenerationConfig llama3 = new GenerationConfig(128000, List.of(128001, 128009), null, true, 0.6, null, 0.9, null, null);
        GenerationOptions o = GenerationOptions.defaults(llama3);
        assertThat(o.isGreedy()).isFalse();
        assertThat(o.temperature()).isEqualTo(0.6);
        assertThat(o.topK()).isEqualTo(50);
        assertThat(o.topP()).isEqualTo(0.9);
        GenerationConfig greedyAuthors = new GenerationConfig(null, List.of(), null, false, 0.7, null, null, 100, null);
        assertThat(GenerationOptions.defaults(greedyAuthors).isGreedy()).isTrue();
        assertThat(GenerationOptions.defaults(greedyAuthors).maxNewTokens()).isEqualTo(100);
    }

    @Test
    void invalidOptionsAreRejectedNamingTheSetting() {
        assertThatThrownBy(() -> GenerationOptions.greedy(-1)).hasMessageContaining("max new tokens");
        assertThatThrownBy(() -> GenerationOptions.sampling(5, 1, 0, 1.5, 0)).hasMessageContaining("top-p");
        assertThatThrownBy(() -> GenerationOptions.sampling(5, -1, 0, 1, 0)).hasMessageContaining("temperature");
    }

    private static double frequencyOf(int token, Sampler s, float[] logits, int n) {
        int hits = 0;
        for (int i = 0; i < n; i++) if (s.sample(logits) == token) hits++;
        return hits / (double) n;
    }

    private static boolean[] finite(float[] scores) {
        boolean[] f = new boolean[scores.length];
        for (int i = 0; i < scores.length; i++) f[i] = scores[i] != NEG_INF;
        return f;
    }
}
