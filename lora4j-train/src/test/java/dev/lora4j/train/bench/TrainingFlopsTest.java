package dev.lora4j.train.bench;

import dev.lora4j.io.ModelConfig;
import dev.lora4j.lora.LoraConfig;
import dev.lora4j.lora.TargetModules;
import dev.lora4j.model.FineTuneMethod;
import dev.lora4j.model.LlamaShape;
import dev.lora4j.model.RandomModelWriter;
import dev.lora4j.model.TrainablePlan;
import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;

class TrainingFlopsTest {

    private static final LlamaShape TINY = LlamaShape.of(RandomModelWriter.preset("tiny"));

    @Test
    void loraOnQueryAndValueOfTheTinyShapeCountsAsComputedByHand() {
        // tiny: vocab 2048, hidden 256, MLP 688, 4 layers, 8 heads and 4 KV heads of 32.
        // Per layer: q 256*256 + k 128*256 + v 128*256 + o 256*256 + gate, up, down 3*688*256 = 724,992.
        long base = 4 * 724_992L + 2048L * 256; // + lm_head = 3,424,256
        // Adapters r=16: q 16*(256+256) = 8,192, v 16*(256+128) = 6,144 per layer.
        long adapters = 4 * (8_192L + 6_144);   // 57,344
        TrainablePlan plan = TrainablePlan.of(TINY, FineTuneMethod.lora(LoraConfig.defaults().withR(16).withLoraAlpha(32)));
        TrainingFlops f = TrainingFlops.of(plan, 64, 2);

        assertThat(f.matmulParameters()).isEqualTo(base + adapters).isEqualTo(3_481_600L);
        assertThat(f.trainableMatmulParameters()).isEqualTo(adapters);
        // 2N forward + 2N backward to the inputs + 2N_trainable backward to the weights.
        assertThat(f.denseFlopsPerToken()).isEqualTo(4.0 * 3_481_600 + 2.0 * 57_344).isEqualTo(14_041_088.0);
        // Attention of a 64-token sequence: 64*65/2 = 2,080 causal pairs; 12 * 32 (head dim) * 8 heads per pair and
        // layer, 4 layers: 25,559,040 per sequence.
        assertThat(f.attentionPerSequence()).isEqualTo(12.0 * 32 * 8 * 2_080 * 4).isEqualTo(25_559_040.0);
        // Two sequences of 64 tokens.
        assertThat(f.perStep()).isEqualTo(128 * 14_041_088.0 + 2 * 25_559_040.0).isEqualTo(1_848_377_344.0);
    }

    @Test
    void fullFineTuningTrainsEveryProjectionAndTheOutputLayer() {
        TrainablePlan plan = TrainablePlan.of(TINY, FineTuneMethod.full());
        TrainingFlops f = TrainingFlops.of(plan, 16, 1);
        assertThat(f.matmulParameters()).isEqualTo(3_424_256L);
        assertThat(f.trainableMatmulParameters()).isEqualTo(3_424_256L);
        assertThat(f.denseFlopsPerToken()).isEqualTo(6.0 * 3_424_256);
    }

    @Test
    void allLinearAdaptersOfTheMistralShapeMatchPeftsTrainableCount() {
        LlamaShape mistral = LlamaShape.of(RandomModelWriter.preset("mistral-7b"));
        TrainablePlan plan = TrainablePlan.of(mistral, FineTuneMethod.lora(LoraConfig.defaults().withR(16).withLoraAlpha(32)
                .withTargetModules(TargetModules.allLinear())));
        TrainingFlops f = TrainingFlops.of(plan, 1024, 16);
        // PEFT 0.21: 41,943,040 trainable; the base's matrix products are every parameter but the embedding table and norms.
        assertThat(f.trainableMatmulParameters()).isEqualTo(41_943_040L);
        long embeddingsAndNorms = 32_000L * 4096 + (2 * 32 + 1) * 4096L;
        assertThat(f.matmulParameters()).isEqualTo(7_241_732_096L - embeddingsAndNorms + 41_943_040L);
    }

    @Test
    void theMistralExampleOfTheBenchmarkNotesHoldsForLoraOnQueryAndValue() {
        LlamaShape mistral = LlamaShape.of(RandomModelWriter.preset("mistral-7b"));
        TrainablePlan plan = TrainablePlan.of(mistral, FineTuneMethod.lora(LoraConfig.defaults().withR(16).withLoraAlpha(32)));
        TrainingFlops f = TrainingFlops.of(plan, 1024, 16);
        assertThat(f.matmulParameters()).isEqualTo(7_117_209_600L);
        assertThat(f.trainableMatmulParameters()).isEqualTo(6_815_744L);
        assertThat(f.denseFlopsPerToken() * f.tokensPerStep()).isEqualTo(466_656_786_644_992.0);
        assertThat(f.attentionPerSequence() * f.sequencesPerStep()).isEqualTo(13_207_024_435_200.0);
    }

    @Test
    void aSlidingWindowCapsTheKeysEachQuerySees() {
        assertThat(TrainingFlops.causalPairs(10, 0)).isEqualTo(55);
        assertThat(TrainingFlops.causalPairs(10, 10)).isEqualTo(55);
        // Window 4: positions 0..3 see 1..4 keys (10), positions 4..9 see 4 each (24).
        assertThat(TrainingFlops.causalPairs(10, 4)).isEqualTo(34);
        ModelConfig c = RandomModelWriter.preset("mistral-7b");
        TrainablePlan plan = TrainablePlan.of(LlamaShape.of(c), FineTuneMethod.full());
        // Mistral's window of 4096 changes nothing at 1024 tokens, and halves nothing at 4096.
        assertThat(TrainingFlops.of(plan, 1024, 1).attentionPerSequence())
                .isEqualTo(12.0 * 128 * 32 * (1024L * 1025 / 2) * 32);
        assertThat(TrainingFlops.of(plan, 8192, 1).attentionPerSequence())
                .isEqualTo(12.0 * 128 * 32 * TrainingFlops.causalPairs(8192, 4096) * 32);
    }
}
