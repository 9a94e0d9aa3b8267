package dev.lora4j.cuda;

import dev.lora4j.backend.AdamwTensors;
import dev.lora4j.io.ModelConfig;
import dev.lora4j.io.ModelFolder;
import dev.lora4j.lora.LoraConfig;
import dev.lora4j.lora.TargetModules;
import dev.lora4j.model.FineTuneMethod;
import dev.lora4j.model.LossSum;
import dev.lora4j.model.RandomModelWriter;
import dev.lora4j.model.TrainableLlama;
import dev.lora4j.model.TrainableParameter;
import dev.lora4j.model.TrainingBatch;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;

/**
 * Times forward+backward micro-batches of a preset's shape cut to a few layers, on the GPU, and prints where the
 * time goes op by op (run with -Dlora4j.cuda.profile=true for the split). For finding what to make faster; the
 * figures users see come from {@code lora4j bench}.
 *
 * <pre>java ... dev.lora4j.cuda.TrainingStepProfile mistral-7b 4 lora-qv|lora-all|qlora-all|full|full-bf16 gc|nogc 1024 4 [steps] [f32|bf16]</pre>
 *
 * The last argument is the activation dtype (default: {@code -Dlora4j.cuda.activations}, else F32). Each step is a
 * micro-batch then, as an optimizer step ends, the trainer's AdamW update of every parameter (torch's defaults;
 * moments in each parameter's dtype, one adamwAll call) and its zeroGradOnNextBackward, so that the profile shows
 * them too.
 */
public final class TrainingStepProfile {
    public static void main(String[] args) throws Exception {
        String preset = args.length > 0 ? args[0] : "mistral-7b";
        int layers = args.length > 1 ? Integer.parseInt(args[1]) : 4;
        String mode = args.length > 2 ? args[2] : "lora-qv";
        boolean gc = args.length > 3 && args[3].equals("gc");
        int seq = args.length > 4 ? Integer.parseInt(args[4]) : 1024;
        int batch = args.length > 5 ? Integer.parseInt(args[5]) : 4;
        int steps = args.length > 6 ? Integer.parseInt(args[6]) : 3;
        DType activations = args.length > 7 ? CudaBackend.parseActivations(args[7], "activations argument")
                : CudaBackend.activationsProperty();

        ModelConfig c = RandomModelWriter.preset(preset);
        c = new ModelConfig(c.architectures(), c.modelType(), c.vocabSize(), c.hiddenSize(), c.intermediateSize(),
                layers, c.numAttentionHeads(), c.numKeyValueHeads(), c.headDim(), c.rmsNormEps(), c.ropeTheta(),
                c.ropeScaling(), c.maxPositionEmbeddings(), c.slidingWindow(), c.maxWindowLayers(), c.attentionBias(),
                c.mlpBias(), c.tieWordEmbeddings(), c.bosTokenId(), c.eosTokenIds(), c.padTokenId(), c.dtype(),
                c.hiddenAct());
        Path dir = Files.createTempDirectory("lora4j-profile");
        RandomModelWriter.writeWeightsAndConfig(dir, c, RandomModelWriter.Options.of(DType.BF16, 1), s -> {});
        LoraConfig lora = LoraConfig.defaults().withR(16).withLoraAlpha(32).withLoraDropout(0.05);
        FineTuneMethod method = switch (mode) {
            case "lora-qv" -> FineTuneMethod.lora(lora);
            case "lora-all" -> FineTuneMethod.lora(lora.withTargetModules(TargetModules.allLinear()));
            case "qlora-all" -> FineTuneMethod.qlora(lora.withTargetModules(TargetModules.allLinear()));
            case "full" -> FineTuneMethod.full();
            case "full-bf16" -> FineTuneMethod.full(DType.BF16);
            default -> throw new IllegalArgumentException(mode);
        };
        SplittableRandom random = new SplittableRandom(7);
        int[][] ids = new int[batch][seq];
        for (int[] row : ids) for (int i = 0; i < seq; i++) row[i] = random.nextInt(c.vocabSize());
        try (CudaBackend gpu = CudaBackend.open(CudaProbe.deviceOrdinal(), activations);
             ModelFolder folder = ModelFolder.open(dir);
             TrainableLlama model = TrainableLlama.create(gpu, folder, method, 1)) {
            model.setGradientCheckpointing(gc);
            List<Tensor> moments = new ArrayList<>();
            for (TrainableParameter p : model.parameters()) {
                moments.add(gpu.allocate(p.value().dtype(), p.value().shape()));
                moments.add(gpu.allocate(p.value().dtype(), p.value().shape()));
            }
            System.out.printf(Locale.ROOT, "%s x %d layers, %s, gc=%s, %d x %d tokens, %s activations; weights+adapters %.2f GiB%n",
                    preset, layers, mode, gc, batch, seq, activations, gpu.memoryInUse() / (double) (1L << 30));
            for (int s = 0; s < steps; s++) {
                gpu.synchronize();
                gpu.opProfile(true);
                long t0 = System.nanoTime();
                LossSum loss = model.forwardBackward(TrainingBatch.languageModelling(ids, s), 1f / (batch * seq));
                // Where the host returns before the device is done, the difference is work still queued: a host that
                // returns only at the end is what waits (or is waited for), not the device.
                double hostMs = (System.nanoTime() - t0) / 1e6;
                List<AdamwTensors> all = new ArrayList<>();
                for (int i = 0; i < model.parameters().size(); i++) {
                    TrainableParameter p = model.parameters().get(i);
                    all.add(new AdamwTensors(p.value(), p.grad(), moments.get(2 * i), moments.get(2 * i + 1),
                            p.weightDecay() ? 0.01f : 0f));
                }
                gpu.adamwAll(all, 2e-4f, 0.9f, 0.999f, 1e-8f, s + 1); // as the trainer's AdamW steps
                model.zeroGradOnNextBackward();
                gpu.synchronize();
                double ms = (System.nanoTime() - t0) / 1e6;
                System.out.printf(Locale.ROOT, "step %d: %.1f ms (%.0f tokens/s for these layers; host returned at %.1f ms), loss %.4f, peak %.2f GiB%n",
                        s, ms, batch * seq / (ms / 1e3), hostMs, loss.sum() / Math.max(1, loss.tokens()),
                        gpu.peakMemoryInUse() / (double) (1L << 30));
            }
            String profile = gpu.opProfile(false);
            if (profile != null) System.out.print(profile);
            moments.forEach(Tensor::close);
        }
    }
}
