package dev.lora4j.model;

import dev.lora4j.io.ModelConfig;
import dev.lora4j.lora.LoraConfig;
import dev.lora4j.lora.TargetModules;
import org.junit.jupiter.api.Test;

import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

/** Parameter counts equal PEFT's print_trainable_parameters() figures, measured with peft 0.21 (REFERENCE.md). */
class TrainableParameterReportTest {
    private static final LoraConfig R16 = LoraConfig.defaults().withR(16).withLoraAlpha(32);
    private static final TargetModules ALL_SEVEN = TargetModules.names("q_proj", "k_proj", "v_proj", "o_proj",
            "gate_proj", "up_proj", "down_proj");

    @Test
    void mistral7bWithRank16OnQueryAndValueMatchesPeft() {
        ModelConfig mistral = RandomModelWriter.preset("mistral-7b");
        TrainableParameterReport report = TrainableParameterReport.estimate(mistral, new FineTuneMethod.Lora(R16));
        assertThat(report.trainable()).isEqualTo(6_815_744L);
        assertThat(report.all()).isEqualTo(7_248_547_840L);
        assertThat(report).hasToString("trainable params: 6,815,744 || all params: 7,248,547,840 || trainable%: 0.0940");
    }

    @Test
    void mistral7bWithRank16OnAllSevenProjectionsMatchesPeft() {
        ModelConfig mistral = RandomModelWriter.preset("mistral-7b");
        TrainableParameterReport listed = TrainableParameterReport.estimate(mistral,
                new FineTuneMethod.Lora(R16.withTargetModules(ALL_SEVEN)));
        TrainableParameterReport allLinear = TrainableParameterReport.estimate(mistral,
                new FineTuneMethod.Lora(R16.withTargetModules(TargetModules.allLinear())));
        assertThat(listed.trainable()).isEqualTo(41_943_040L);
        assertThat(listed.all()).isEqualTo(7_283_675_136L);
        assertThat(allLinear).isEqualTo(listed);
    }

    @Test
    void llama3_8bWithRank16OnAllSevenProjectionsMatchesPeft() {
        TrainableParameterReport report = TrainableParameterReport.estimate(RandomModelWriter.preset("llama3-8b"),
                new FineTuneMethod.Lora(R16.withTargetModules(TargetModules.allLinear())));
        assertThat(report.trainable()).isEqualTo(41_943_040L);
        assertThat(report.all()).isEqualTo(8_030_261_248L + 41_943_040L);
    }

    @Test
    void modulesToSaveCountTheTrainableCopyBesideTheFrozenOriginal() {
        ModelConfig qwen = RandomModelWriter.preset("qwen2-0.5b"); // tied embeddings
        long base = LlamaShape.of(qwen).parameterCounts().total();
        long table = 151_936L * 896;
        TrainableParameterReport report = TrainableParameterReport.estimate(qwen,
                new FineTuneMethod.Lora(LoraConfig.defaults().withModulesToSave(List.of("lm_head"))));
        long lora = 24L * 8 * ((896 + 896) + (896 + 128));
        assertThat(report.trainable()).isEqualTo(lora + table);
        assertThat(report.all()).isEqualTo(base + lora + table);
    }

    @Test
    void loraBiasesTrainWithoutAddingParameters() {
        ModelConfig qwen = RandomModelWriter.preset("qwen2-0.5b");
        long lora = 24L * 8 * ((896 + 896) + (896 + 128));
        TrainableParameterReport all = TrainableParameterReport.estimate(qwen,
                new FineTuneMethod.Lora(LoraConfig.defaults().withBias("all")));
        TrainableParameterReport loraOnly = TrainableParameterReport.estimate(qwen,
                new FineTuneMethod.Lora(LoraConfig.defaults().withBias("lora_only")));
        assertThat(all.trainable()).isEqualTo(lora + 24L * (896 + 128 + 128));
        assertThat(loraOnly.trainable()).isEqualTo(lora + 24L * (896 + 128));
        assertThat(all.all()).isEqualTo(loraOnly.all()).isEqualTo(LlamaShape.of(qwen).parameterCounts().total() + lora);
    }

    @Test
    void fullFineTuningTrainsEveryParameter() {
        ModelConfig llama = RandomModelWriter.preset("llama2-7b");
        TrainableParameterReport report = TrainableParameterReport.estimate(llama, new FineTuneMethod.Full());
        assertThat(report.trainable()).isEqualTo(report.all()).isEqualTo(6_738_415_616L);
        assertThat(report.percent()).isEqualTo(100.0);
    }
}
