package dev.lora4j.train.schedule;

import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;

/** Values worked out from transformers' lr_lambda formulas (optimization.py) by hand. */
class LearningRateScheduleTest {

    @Test
    void linearWarmsUpFromZeroThenDecaysToZeroAtTheLastStep() {
        LearningRateSchedule s = new LearningRateSchedule(SchedulerType.LINEAR, 1e-3, 2, 10);
        assertThat(s.factor(0)).isEqualTo(0.0);
        assertThat(s.factor(1)).isEqualTo(0.5);
        assertThat(s.factor(2)).isEqualTo(1.0);
        assertThat(s.factor(6)).isEqualTo(0.5);
        assertThat(s.factor(10)).isEqualTo(0.0);
        assertThat(s.factor(12)).isEqualTo(0.0);
        assertThat(s.learningRate(6)).isEqualTo(5e-4);
    }

    @Test
    void linearWithoutWarmupStartsAtTheFullRate() {
        LearningRateSchedule s = new LearningRateSchedule(SchedulerType.LINEAR, 2e-5, 0, 4);
        assertThat(s.factor(0)).isEqualTo(1.0);
        assertThat(s.factor(1)).isEqualTo(0.75);
    }

    @Test
    void cosineFollowsHalfACosineAfterWarmup() {
        LearningRateSchedule s = new LearningRateSchedule(SchedulerType.COSINE, 1.0, 1, 5);
        assertThat(s.factor(0)).isEqualTo(0.0);
        assertThat(s.factor(1)).isEqualTo(1.0);
        assertThat(s.factor(2)).isCloseTo(0.5 * (1 + Math.cos(Math.PI * 0.25)), within(1e-15));
        assertThat(s.factor(3)).isCloseTo(0.5, within(1e-15));
        assertThat(s.factor(5)).isCloseTo(0.0, within(1e-15));
    }

    @Test
    void constantWithWarmupRisesThenStays() {
        LearningRateSchedule s = new LearningRateSchedule(SchedulerType.CONSTANT_WITH_WARMUP, 1.0, 3, 100);
        assertThat(s.factor(1)).isEqualTo(1.0 / 3);
        assertThat(s.factor(3)).isEqualTo(1.0);
        assertThat(s.factor(99)).isEqualTo(1.0);
    }

    @Test
    void plainConstantIgnoresWarmupAsTransformersDoes() {
        assertThat(new LearningRateSchedule(SchedulerType.CONSTANT, 1.0, 5, 10).factor(0)).isEqualTo(1.0);
    }

    @Test
    void warmupRatioIsTheCeilingOfTheFloatingPointProduct() {
        assertThat(LearningRateSchedule.warmupSteps(0, 0.03, 100)).isEqualTo(3);
        assertThat(LearningRateSchedule.warmupSteps(0, 0.03, 101)).isEqualTo(4);
        // 100 * 0.07 is 7.000000000000001 in binary floating point: math.ceil gives 8 in Python too.
        assertThat(LearningRateSchedule.warmupSteps(0, 0.07, 100)).isEqualTo(8);
        assertThat(LearningRateSchedule.warmupSteps(0, 0, 30)).isZero();
    }

    @Test
    void warmupStepsBelowOneAreARatioAsInTransformers5() {
        assertThat(LearningRateSchedule.warmupSteps(0.05, 0, 200)).isEqualTo(10);
        assertThat(LearningRateSchedule.warmupSteps(7, 0, 200)).isEqualTo(7);
        assertThat(LearningRateSchedule.warmupSteps(1, 0, 200)).isEqualTo(1);
    }

    @Test
    void contradictoryOrInvalidWarmupsAreRefused() {
        assertThatThrownBy(() -> LearningRateSchedule.warmupSteps(5, 0.1, 100)).hasMessageContaining("not both");
        assertThatThrownBy(() -> LearningRateSchedule.warmupSteps(2.5, 0, 100)).hasMessageContaining("whole number");
        assertThatThrownBy(() -> LearningRateSchedule.warmupSteps(0, 1.5, 100)).hasMessageContaining("[0, 1]");
        assertThatThrownBy(() -> SchedulerType.parse("cosine_annealing")).hasMessageContaining("use one of constant, constant_with_warmup, linear, cosine");
    }
}
