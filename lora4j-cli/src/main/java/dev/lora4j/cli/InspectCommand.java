package dev.lora4j.cli;

import dev.lora4j.io.ModelConfig;
import dev.lora4j.io.ModelFolder;
import dev.lora4j.io.SafetensorsModel;
import dev.lora4j.io.TensorInfo;
import dev.lora4j.model.LlamaShape;
import dev.lora4j.tensor.DType;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.Callable;

@Command(name = "inspect",
        description = "Describe a model folder without loading it: architecture, parameters by module, dtypes, memory.")
final class InspectCommand implements Callable<Integer> {

    @Option(names = {"-m", "--model"}, required = true, description = "Hugging Face model folder.")
    Path model;

    @Option(names = "--context", defaultValue = "4096", description = "Context length for the KV-cache estimate (default: ${DEFAULT-VALUE}).")
    int context;

    @Override
    public Integer call() throws IOException {
        try (ModelFolder folder = ModelFolder.open(model)) {
            ModelConfig c = folder.config();
            LlamaShape shape = LlamaShape.of(c);
            System.out.printf(Locale.ROOT, "model        %s%n", folder.path());
            System.out.printf(Locale.ROOT, "architecture %s (model_type %s)%n", c.architecture(), c.modelType());
            System.out.printf(Locale.ROOT, "shape        %d layers, hidden %d, MLP %d, %d heads / %d KV heads of %d, vocab %d%n",
                    c.numHiddenLayers(), c.hiddenSize(), c.intermediateSize(), c.numAttentionHeads(),
                    c.numKeyValueHeads(), c.headDim(), c.vocabSize());
            System.out.printf(Locale.ROOT, "position     rope theta %s%s, max positions %d%s%n", trim(c.ropeTheta()),
                    c.ropeScaling() == null ? "" : ", " + c.ropeScaling().ropeType() + " scaling x" + trim(c.ropeScaling().factor()),
                    c.maxPositionEmbeddings(), c.slidingWindow() > 0 ? ", sliding window " + c.slidingWindow() : "");
            System.out.printf(Locale.ROOT, "options      tied embeddings %s, q/k/v bias %s, rms_norm_eps %s%n",
                    c.tieWordEmbeddings(), c.qkvBias(), c.rmsNormEps());

            LlamaShape.ParameterCounts p = shape.parameterCounts();
            System.out.println();
            System.out.println("parameters by module");
            row("embeddings", p.embeddings(), p.total());
            row("attention", p.attention(), p.total());
            row("mlp", p.mlp(), p.total());
            row("norms", p.norms(), p.total());
            row(p.tied() ? "lm_head (tied)" : "lm_head", p.lmHead(), p.total());
            row("total", p.total(), p.total());

            SafetensorsModel weights = folder.weights();
            Map<DType, long[]> byType = new TreeMap<>();
            for (String name : weights.names()) {
                TensorInfo info = weights.info(name);
                long[] agg = byType.computeIfAbsent(info.dtype(), k -> new long[2]);
                agg[0] += info.numel();
                agg[1] += info.byteLength();
            }
            System.out.println();
            System.out.printf(Locale.ROOT, "weights      %d tensors in %d file(s)%n", weights.names().size(), weights.files().size());
            byType.forEach((t, agg) -> System.out.printf(Locale.ROOT, "  %-6s %,18d elements %12s%n", t, agg[0], Sizes.bytes(agg[1])));

            long kvPerToken = 2L * c.numHiddenLayers() * shape.kvDim() * Float.BYTES;
            System.out.println();
            System.out.println("memory to run (weights + F32 KV cache)");
            for (DType t : new DType[] {DType.BF16, DType.F32}) {
                long w = p.bytes(t);
                System.out.printf(Locale.ROOT, "  weights as %-5s %10s   + KV cache for %,d tokens %10s   = %s%n", t,
                        Sizes.bytes(w), context, Sizes.bytes(kvPerToken * context), Sizes.bytes(w + kvPerToken * context));
            }
            System.out.printf(Locale.ROOT, "tokenizer    %s%n", folder.hasTokenizer() ? folder.tokenizerFolder().resolve("tokenizer.json") : "none (tokenizer.json missing)");
        }
        return 0;
    }

    private static void row(String name, long n, long total) {
        System.out.printf(Locale.ROOT, "  %-15s %,16d  %6s  %5.1f%%%n", name, n, Sizes.count(n), 100.0 * n / total);
    }

    private static String trim(double d) {
        return d == Math.rint(d) ? Long.toString((long) d) : Double.toString(d);
    }
}
