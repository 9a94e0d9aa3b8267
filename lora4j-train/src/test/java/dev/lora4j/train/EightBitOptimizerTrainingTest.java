package dev.lora4j.train;

import dev.lora4j.api.Device;
import dev.lora4j.model.FineTuneMethod;
import dev.lora4j.train.optim.BitsandbytesAdamW;
import dev.lora4j.train.optim.OptimizerType;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.within;

/**
 * Training the tiny model in full (its weights are large enough for 8-bit states) with each optimizer: bitsandbytes'
 * 8-bit AdamW follows 32-bit AdamW's loss curve closely, paging changes nothing on the CPU, and the optimizer the
 * configuration names is the one that runs.
 */
class EightBitOptimizerTrainingTest {
    @TempDir
    static Path shared;
    static TinyModel tiny;
    /** Each optimizer's run, made once for the tests that compare them. */
    private static final Map<OptimizerType, List<Double>> RUNS = new EnumMap<>(OptimizerType.class);

    @BeforeAll
    static void writeModelAndData() throws IOException {
        tiny = TinyModel.write(shared);
    }

    private static List<Double> losses(OptimizerType optim) throws IOException {
        List<Double> run = RUNS.get(optim);
        if (run == null) RUNS.put(optim, run = train(optim));
        return run;
    }

    /** The loss of every step of an 8-step full fine-tuning run with {@code optim}. */
    private static List<Double> train(OptimizerType optim) throws IOException {
        SftConfig config = TinyModel.config(shared.resolve(optim.configName())).numTrainEpochs(2).learningRate(3e-3)
                .weightDecay(0.01).saveStrategy("no").reportTo(List.of("none")).optim(optim).build();
        List<Double> losses = new ArrayList<>();
        try (SftTrainer t = SftTrainer.builder().model(tiny.folder, Device.CPU).trainDataset(tiny.trainFile).config(config)
                .method(FineTuneMethod.full()).build()) {
            assertThat(t.optimizer().type()).isEqualTo(optim);
            if (optim.eightBit()) {
                assertThat(((BitsandbytesAdamW) t.optimizer()).eightBitParameters()).as("weights with 8-bit states").isGreaterThan(10);
            }
            t.addListener(new TrainingListener() {
                @Override
                public void onStep(StepReport report) {
                    losses.add(report.loss());
                }
            });
            t.train();
        }
        assertThat(losses).hasSize(8);
        return losses;
    }

    @Test
    void eightBitAdamWTracksThirtyTwoBitAdamWLossCurve() throws IOException {
        List<Double> exact = losses(OptimizerType.ADAMW_TORCH), eight = losses(OptimizerType.ADAMW_8BIT);
        assertThat(exact.get(7)).as("32-bit AdamW learns").isLessThan(0.85 * exact.get(0));
        assertThat(eight.get(0)).as("the first loss comes before any update").isEqualTo(exact.get(0));
        assertThat(eight).as("8-bit states round the moments").isNotEqualTo(exact);
        // Measured: the curves differ by less than 1e-4 of the loss over these 8 steps.
        for (int i = 1; i < exact.size(); i++) {
            assertThat(eight.get(i)).as("8-bit loss at step %d", i + 1).isCloseTo(exact.get(i), within(0.01 * exact.get(i)));
        }
    }

    @Test
    void pagedStatesChangeNothingOnTheCpuAndBitsandbytes32BitAdamWTracksTorchs() throws IOException {
        assertThat(losses(OptimizerType.PAGED_ADAMW_8BIT)).isEqualTo(losses(OptimizerType.ADAMW_8BIT));
        List<Double> torch = losses(OptimizerType.ADAMW_TORCH), bnb = losses(OptimizerType.PAGED_ADAMW_32BIT);
        for (int i = 1; i < torch.size(); i++) {
            // The same algorithm but for the order of the weight decay: equal to far below the learning rate's effect.
            assertThat(bnb.get(i)).as("paged_adamw_32bit loss at step %d", i + 1).isCloseTo(torch.get(i), within(1e-3 * torch.get(i)));
        }
    }
}
