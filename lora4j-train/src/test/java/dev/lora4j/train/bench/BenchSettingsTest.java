package dev.lora4j.train.bench;

import dev.lora4j.lora.TargetModules;
import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class BenchSettingsTest {

    private static final BenchSettings LORA = BenchSettings.defaults(BenchMethod.LORA);

    @Test
    void defaultsAreTheReferenceBenchmarksWorkload() {
        assertThat(LORA.rank()).isEqualTo(16);
        assertThat(LORA.alpha()).isEqualTo(32);
        assertThat(LORA.dropout()).isEqualTo(0.05);
        assertThat(LORA.targetModules()).isEqualTo("q_proj,v_proj");
        assertThat(LORA.seq()).isEqualTo(1024);
        assertThat(LORA.samplesPerStep()).isEqualTo(16);
        assertThat(LORA.tokensPerStep()).isEqualTo(16 * 1024);
        assertThat(LORA.warmupSteps()).isEqualTo(1);
        assertThat(LORA.optim()).isEqualTo("adamw_torch");
    }

    @Test
    void namesTheReferenceModeOfTheSameWorkload() {
        assertThat(LORA.referenceMode()).isEqualTo("lora-qv");
        assertThat(LORA.withTargetModules("v_proj, q_proj").referenceMode()).isEqualTo("lora-qv");
        assertThat(LORA.withTargetModules("all-linear").referenceMode()).isEqualTo("lora-all");
        assertThat(LORA.withMethod(BenchMethod.QLORA).withTargetModules("all-linear").referenceMode()).isEqualTo("qlora-all");
        assertThat(LORA.withMethod(BenchMethod.FULL).referenceMode()).isEqualTo("full");
        assertThat(LORA.withTargetModules("q_proj,k_proj,v_proj").referenceMode()).isNull();
    }

    @Test
    void readsTargetModulesAsPeftDoes() {
        assertThat(LORA.targets()).isEqualTo(TargetModules.names("q_proj", "v_proj"));
        assertThat(LORA.withTargetModules("ALL-LINEAR").targets()).isEqualTo(TargetModules.allLinear());
        assertThat(LORA.withTargetModules(".*\\.(q|v)_proj").targets()).isEqualTo(TargetModules.regex(".*\\.(q|v)_proj"));
        assertThat(LORA.withMethod(BenchMethod.FULL).targets()).isNull();
        assertThatThrownBy(() -> LORA.withTargetModules("q_proj,v.*").targets())
                .hasMessageContaining("--target-modules").hasMessageContaining("'v.*' is not a module name");
    }

    @Test
    void labelsSayWhatTrainsAndWhetherActivationsAreRecomputed() {
        assertThat(LORA.label()).isEqualTo("LoRA q_proj,v_proj");
        assertThat(LORA.withMethod(BenchMethod.QLORA).withTargetModules("all-linear").withGradientCheckpointing(true).label())
                .isEqualTo("QLoRA all-linear + checkpointing");
        assertThat(LORA.withMethod(BenchMethod.FULL).withGradientCheckpointing(true).label()).isEqualTo("full + checkpointing");
    }

    @Test
    void badSettingsAreRefusedNamingTheOption() {
        assertThatThrownBy(() -> LORA.withBatch(1, 4, 4)).hasMessageContaining("--seq must be at least 2");
        assertThatThrownBy(() -> LORA.withBatch(1024, 0, 4)).hasMessageContaining("--micro-batch must be at least 1");
        assertThatThrownBy(() -> LORA.withBatch(1024, 4, 0)).hasMessageContaining("--accum must be at least 1");
        assertThatThrownBy(() -> LORA.withSteps(0, 1)).hasMessageContaining("--steps must be at least 1");
        assertThatThrownBy(() -> LORA.withSteps(2, -1)).hasMessageContaining("--warmup-steps");
        assertThatThrownBy(() -> LORA.withLora(0, 32, 0)).hasMessageContaining("--rank must be a positive integer");
        assertThatThrownBy(() -> LORA.withLora(16, 32, 1)).hasMessageContaining("--dropout must be in [0, 1)");
        assertThatThrownBy(() -> LORA.withOptimizer("adamw_torch", 0, 0, 0)).hasMessageContaining("--lr must be a positive");
        assertThatThrownBy(() -> BenchMethod.parse("dora")).hasMessageContaining("unknown method 'dora'")
                .hasMessageContaining("full, lora or qlora");
        // Full fine-tuning has no adapter: its LoRA settings are not checked.
        assertThat(LORA.withMethod(BenchMethod.FULL).withLora(16, 32, 0.05).targetModules()).isNull();
    }
}
