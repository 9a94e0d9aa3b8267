package dev.lora4j.model;

import dev.lora4j.backend.Backend;
import dev.lora4j.backend.cpu.CpuBackend;
import dev.lora4j.lora.LoraConfig;
import dev.lora4j.lora.TargetModules;
import dev.lora4j.tensor.DType;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Proxy;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Stream;

import static dev.lora4j.model.TrainableLlamaGradientTest.BATCH;
import static org.assertj.core.api.Assertions.assertThat;

/**
 * Gradient checkpointing keeps only each layer's input during the forward pass and recomputes the layer during the
 * backward pass; since the recomputation runs the same ops on the same values, every gradient is bit for bit the
 * one of the run that kept everything, for every method.
 */
class GradientCheckpointingTest {
    /** Three layers, every projection with a bias: the middle layer is recomputed from a kept input. */
    private static final LlamaShape SHAPE = TinyModels.shape("llama", 4, 2, 8, false, true, true, true, new int[]{0, 0, 0});
    private static CpuBackend cpu;

    @BeforeAll
    static void open() { cpu = new CpuBackend(2); }

    @AfterAll
    static void close() { cpu.close(); }

    static Stream<Arguments> methods() {
        LoraConfig lora = LoraConfig.defaults().withInitLoraWeights("false").withR(4).withLoraAlpha(8).withLoraDropout(0.2)
                .withTargetModules(TargetModules.allLinear()).withBias("all");
        return Stream.of(
                Arguments.of("full fine-tuning", FineTuneMethod.full()),
                Arguments.of("LoRA over BF16, dropout, biases", FineTuneMethod.lora(lora)),
                Arguments.of("QLoRA (NF4, double quantization, BF16 compute)", FineTuneMethod.qlora(lora)));
    }

    private static TrainableLlama model(Backend backend, LlamaShape shape, FineTuneMethod method) {
        ReferenceLlama.Weights host = TinyModels.randomWeights(shape, DType.BF16, 11);
        return TrainableLlama.fromWeights(backend, TinyModels.upload(cpu, shape, host, DType.BF16), method, 5);
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("methods")
    void everyGradientIsBitForBitTheSameWithAndWithoutCheckpointing(String name, FineTuneMethod method) {
        LossSum[] loss = new LossSum[2];
        List<float[]>[] grads = new List[2];
        for (int run = 0; run < 2; run++) {
            try (TrainableLlama model = model(cpu, SHAPE, method)) {
                model.setGradientCheckpointing(run == 1);
                loss[run] = model.forwardBackward(BATCH, 0.25f);
                // A second micro-batch accumulates onto the first, as gradient accumulation does.
                loss[run] = loss[run].plus(model.forwardBackward(new TrainingBatch(BATCH.inputIds(), BATCH.labels(), 12), 0.25f));
                grads[run] = TrainableLlamaGradientTest.grads(model);
            }
        }
        assertThat(loss[1].sum()).as(name + " loss").isEqualTo(loss[0].sum());
        assertThat(grads[1]).hasSameSizeAs(grads[0]).isNotEmpty();
        for (int i = 0; i < grads[0].size(); i++) {
            assertThat(grads[1].get(i)).as(name + " gradient " + i).containsExactly(grads[0].get(i));
            assertThat(maxAbs(grads[0].get(i))).as(name + " gradient " + i + " is not trivially zero").isPositive();
        }
    }

    @Test
    void theBackwardPassRecomputesEveryLayerButTheLast() {
        AtomicInteger attentions = new AtomicInteger();
        Backend counting = counting(cpu, "attentionForward", attentions);
        int rows = BATCH.rows(), layers = SHAPE.numLayers();
        for (boolean checkpointing : new boolean[]{false, true}) {
            try (TrainableLlama model = model(counting, SHAPE, FineTuneMethod.lora(LoraConfig.defaults()))) {
                model.setGradientCheckpointing(checkpointing);
                attentions.set(0);
                model.forwardBackward(BATCH, 1f);
                // The last layer's activations are still in place when the backward pass reaches it.
                assertThat(attentions.get()).as("checkpointing " + checkpointing)
                        .isEqualTo(rows * (checkpointing ? 2 * layers - 1 : layers));
            }
        }
    }

    @Test
    void theRecomputationReadsTheAdaptersKeptHiddensInsteadOfProjectingAgain() {
        AtomicInteger downs = new AtomicInteger();
        Backend counting = counting(cpu, "loraDown", downs);
        FineTuneMethod allLinear = FineTuneMethod.lora(LoraConfig.defaults().withLoraDropout(0.1)
                .withTargetModules(TargetModules.allLinear()));
        for (boolean checkpointing : new boolean[]{false, true}) {
            try (TrainableLlama model = model(counting, SHAPE, allLinear)) {
                model.setGradientCheckpointing(checkpointing);
                downs.set(0);
                model.forwardBackward(BATCH, 1f);
                assertThat(downs.get()).as("checkpointing " + checkpointing).isEqualTo(7 * SHAPE.numLayers());
            }
        }
    }

    @Test
    void withCheckpointingEachFurtherLayerKeepsOnlyItsInputAndItsAdaptersHiddens() {
        LlamaShape two = TinyModels.shape("llama", 4, 2, 8, false, false, false, false, new int[]{0, 0});
        LlamaShape four = TinyModels.shape("llama", 4, 2, 8, false, false, false, false, new int[]{0, 0, 0, 0});
        FineTuneMethod lora = FineTuneMethod.lora(LoraConfig.defaults().withTargetModules(TargetModules.allLinear()));
        long[][] bytes = new long[2][2];
        for (int c = 0; c < 2; c++) {
            for (int s = 0; s < 2; s++) {
                try (TrainableLlama model = model(cpu, s == 0 ? two : four, lora)) {
                    model.setGradientCheckpointing(c == 1);
                    model.forwardBackward(BATCH, 1f);
                    bytes[c][s] = model.activationBytes();
                }
            }
        }
        long capacity = 64; // the batch's 12 tokens, rounded up as the buffers are
        long oneLayerInput = capacity * two.hiddenSize() * DType.F32.bytesFor(1);
        // scaling·A·dropout(x) of the seven adapters, rank 8: what spares the recomputation its LoRA down projections
        long oneLayersHiddens = 7 * capacity * 8 * DType.F32.bytesFor(1);
        assertThat(bytes[1][1] - bytes[1][0]).as("two more layers, checkpointed")
                .isEqualTo(2 * (oneLayerInput + oneLayersHiddens));
        assertThat(bytes[0][1] - bytes[0][0]).as("two more layers, everything kept").isGreaterThan(10 * oneLayerInput);
    }

    /** A backend that counts the calls of one op and hands every call to {@code target}. */
    static Backend counting(Backend target, String op, AtomicInteger calls) {
        return (Backend) Proxy.newProxyInstance(Backend.class.getClassLoader(), new Class<?>[]{Backend.class}, (proxy, m, args) -> {
            if (m.getName().equals(op)) calls.incrementAndGet();
            try {
                return m.invoke(target, args);
            } catch (InvocationTargetException e) {
                throw e.getCause();
            }
        });
    }

    private static double maxAbs(float[] v) {
        double m = 0;
        for (float f : v) m = Math.max(m, Math.abs(f));
        return m;
    }
}
