package dev.lora4j.cli;

import dev.lora4j.io.ModelConfig;
import dev.lora4j.io.ModelFolder;
import dev.lora4j.io.SafetensorsModel;
import dev.lora4j.io.TensorInfo;
import dev.lora4j.model.LlamaShape;
import dev.lora4j.quant.BnbCheckpointFormat;
import dev.lora4j.quant.BnbQuantState;
import dev.lora4j.tensor.DType;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;
import java.util.List;
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
            long storedBytes = byType.values().stream().mapToLong(agg -> agg[1]).sum();
            boolean fourBit = describeFourBit(weights, c, shape);

            long kvPerToken = 2L * c.numHiddenLayers() * shape.kvDim() * Float.BYTES;
            System.out.println();
            System.out.println("memory to run (weights + F32 KV cache)");
            if (fourBit) {
                System.out.printf(Locale.ROOT, "  weights as stored%10s   + KV cache for %,d tokens %10s   = %s%n",
                        Sizes.bytes(storedBytes), context, Sizes.bytes(kvPerToken * context),
                        Sizes.bytes(storedBytes + kvPerToken * context));
            }
            for (DType t : new DType[] {DType.BF16, DType.F32}) {
                long w = p.bytes(t);
                System.out.printf(Locale.ROOT, "  weights as %-5s %10s   + KV cache for %,d tokens %10s   = %s%n", t,
                        Sizes.bytes(w), context, Sizes.bytes(kvPerToken * context), Sizes.bytes(w + kvPerToken * context));
            }
            System.out.printf(Locale.ROOT, "tokenizer    %s%n", folder.hasTokenizer() ? folder.tokenizerFolder().resolve("tokenizer.json") : "none (tokenizer.json missing)");
        }
        return 0;
    }

    /**
     * The 4-bit weights (bitsandbytes NF4/FP4 as transformers saves them), grouped by how they are quantized, with
     * their bytes (codes and quant state) per parameter; returns whether there are any.
     */
    private static boolean describeFourBit(SafetensorsModel weights, ModelConfig c, LlamaShape shape) {
        Map<String, long[]> groups = new TreeMap<>();
        for (String name : weights.names()) {
            if (!BnbCheckpointFormat.isQuantState(name)) continue;
            String weight = name.substring(0, name.indexOf(BnbCheckpointFormat.QUANT_STATE_INFIX));
            BnbQuantState state = BnbQuantState.parse(weights.data(name).toArray(ValueLayout.JAVA_BYTE),
                    "tensor " + name + " in " + weights.fileOf(name));
            String key = state.quantType() + ", block " + state.blockSize()
                    + (state.nested() ? ", double quantization" : ", F32 scales") + ", from " + state.dtype();
            long[] agg = groups.computeIfAbsent(key, k -> new long[3]);
            agg[0]++;
            long params = 1;
            for (long d : state.shape()) params *= d;
            agg[1] += params;
            for (String part : List.of(weight, name, BnbCheckpointFormat.part(weight, BnbCheckpointFormat.ABSMAX),
                    BnbCheckpointFormat.part(weight, BnbCheckpointFormat.QUANT_MAP),
                    BnbCheckpointFormat.part(weight, BnbCheckpointFormat.NESTED_ABSMAX),
                    BnbCheckpointFormat.part(weight, BnbCheckpointFormat.NESTED_QUANT_MAP))) {
                if (weights.contains(part)) agg[2] += weights.info(part).byteLength();
            }
        }
        if (c.isQuantized()) {
            System.out.printf(Locale.ROOT, "quantized    config.json: bitsandbytes 4-bit, %s%n", c.quantizationConfig());
        }
        if (groups.isEmpty()) return false;
        int projections = shape.numLayers() * BnbCheckpointFormat.LAYER_PROJECTIONS.size();
        System.out.printf(Locale.ROOT, "4-bit        %d of the %d layer projections%n",
                groups.values().stream().mapToLong(a -> a[0]).sum(), projections);
        groups.forEach((k, a) -> System.out.printf(Locale.ROOT, "  %-45s %4d weights %,16d parameters %12s  %.3f bits each%n",
                k, a[0], a[1], Sizes.bytes(a[2]), 8.0 * a[2] / a[1]));
        return true;
    }

    private static void row(String name, long n, long total) {
        System.out.printf(Locale.ROOT, "  %-15s %,16d  %6s  %5.1f%%%n", name, n, Sizes.count(n), 100.0 * n / total);
    }

    private static String trim(double d) {
        return d == Math.rint(d) ? Long.toString((long) d) : Double.toString(d);
    }
}
