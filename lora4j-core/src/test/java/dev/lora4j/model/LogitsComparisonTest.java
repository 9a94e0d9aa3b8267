package dev.lora4j.model;

import com.fasterxml.jackson.databind.ObjectMapper;
import dev.lora4j.backend.HostConversions;
import dev.lora4j.io.ModelConfig;
import dev.lora4j.io.SafetensorsModel;
import dev.lora4j.io.SafetensorsWriter;
import dev.lora4j.tensor.DType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The comparison tool, fed with what the double-precision reference computes for a model folder written to disk:
 * this also checks that weights loaded by name from safetensors land where the forward pass expects them.
 */
class LogitsComparisonTest {

    private static ModelConfig mistralWithWindow() {
        ModelConfig m = RandomModelWriter.preset("mistral-7b");
        return new ModelConfig(m.architectures(), "mistral", 97, 48, 80, 2, 4, 2, 16, 1e-5, 10000, null, 512, 6, 0,
                false, false, false, 1, List.of(2), null, "float32", "silu");
    }

    @Test
    void loadedFolderMatchesTheReferenceAndTheToolSaysSo(@TempDir Path dir) throws IOException {
        ModelConfig config = mistralWithWindow();
        RandomModelWriter.writeWeightsAndConfig(dir.resolve("mistral"), config, RandomModelWriter.Options.of(DType.F32, 3), null);
        writeExpected(dir, config, false);
        List<LogitsComparison.Row> rows = LogitsComparison.run(dir.resolve("expected.json"), List.of("cpu"));
        assertThat(rows).hasSize(2);
        for (LogitsComparison.Row r : rows) {
            assertThat(r.pass()).as(r.toString()).isTrue();
            assertThat(r.greedyMatch()).isTrue();
            assertThat(r.maxAbsDiff()).isLessThanOrEqualTo(1e-4);
        }
    }

    @Test
    void theToolReportsLogitsThatDiffer(@TempDir Path dir) throws IOException {
        ModelConfig config = mistralWithWindow();
        RandomModelWriter.writeWeightsAndConfig(dir.resolve("mistral"), config, RandomModelWriter.Options.of(DType.F32, 3), null);
        writeExpected(dir, config, true);
        List<LogitsComparison.Row> rows = LogitsComparison.run(dir.resolve("expected.json"), List.of("cpu"));
        assertThat(rows).anyMatch(r -> !r.pass() && r.maxAbsDiff() > 1e-3);
    }

    /** expected.json and expected-logits.safetensors as tools/compare_logits.py writes them, from the reference. */
    private static void writeExpected(Path dir, ModelConfig config, boolean perturb) throws IOException {
        LlamaShape shape = LlamaShape.of(config);
        ReferenceLlama.Weights w;
        try (SafetensorsModel st = SafetensorsModel.open(dir.resolve("mistral"))) {
            w = referenceWeights(st, shape);
        }
        SafetensorsWriter logits = new SafetensorsWriter();
        List<Map<String, Object>> prompts = new ArrayList<>();
        int[][] promptIds = {{1, 5, 9, 33, 2, 70, 70, 11, 96, 40, 3, 8}, {1, 4}};
        for (int p = 0; p < promptIds.length; p++) {
            int[] seq = promptIds[p];
            int[] greedy = new int[6];
            for (int k = 0; k < greedy.length; k++) {
                double[][] l = ReferenceLlama.logits(shape, w, seq);
                greedy[k] = argmax(l[seq.length - 1]);
                seq = Arrays.copyOf(seq, seq.length + 1);
                seq[seq.length - 1] = greedy[k];
            }
            double[][] all = ReferenceLlama.logits(shape, w, seq);
            float[] flat = new float[all.length * shape.vocabSize()];
            for (int i = 0; i < all.length; i++) for (int j = 0; j < shape.vocabSize(); j++) flat[i * shape.vocabSize() + j] = (float) all[i][j];
            if (perturb) flat[flat.length / 2] += 0.01f;
            logits.add("mistral/" + p, DType.F32, new long[]{all.length, shape.vocabSize()}, MemorySegment.ofArray(flat));
            Map<String, Object> prompt = new LinkedHashMap<>();
            prompt.put("ids", promptIds[p]);
            prompt.put("greedy", greedy);
            prompt.put("logits", "mistral/" + p);
            prompts.add(prompt);
        }
        logits.writeTo(dir.resolve("expected-logits.safetensors"));
        Map<String, Object> c = new LinkedHashMap<>();
        c.put("name", "mistral");
        c.put("folder", "mistral");
        c.put("prompts", prompts);
        Map<String, Object> root = new LinkedHashMap<>();
        root.put("greedy_tokens", 6);
        root.put("logits_file", "expected-logits.safetensors");
        root.put("cases", List.of(c));
        new ObjectMapper().writeValue(dir.resolve("expected.json").toFile(), root);
    }

    private static ReferenceLlama.Weights referenceWeights(SafetensorsModel st, LlamaShape s) {
        ReferenceLlama.Layer[] layers = new ReferenceLlama.Layer[s.numLayers()];
        for (int i = 0; i < layers.length; i++) {
            String p = "model.layers." + i + ".";
            layers[i] = new ReferenceLlama.Layer(vec(st, p + "input_layernorm.weight"),
                    mat(st, p + "self_attn.q_proj.weight"), mat(st, p + "self_attn.k_proj.weight"),
                    mat(st, p + "self_attn.v_proj.weight"), mat(st, p + "self_attn.o_proj.weight"),
                    null, null, null, null, vec(st, p + "post_attention_layernorm.weight"),
                    mat(st, p + "mlp.gate_proj.weight"), mat(st, p + "mlp.up_proj.weight"), mat(st, p + "mlp.down_proj.weight"),
                    null, null, null);
        }
        return new ReferenceLlama.Weights(mat(st, "model.embed_tokens.weight"), layers, vec(st, "model.norm.weight"),
                mat(st, "lm_head.weight"));
    }

    private static double[] vec(SafetensorsModel st, String name) {
        float[] f = HostConversions.toFloats(st.data(name), st.info(name).dtype(), st.info(name).numel());
        double[] d = new double[f.length];
        for (int i = 0; i < f.length; i++) d[i] = f[i];
        return d;
    }

    private static double[][] mat(SafetensorsModel st, String name) {
        double[] flat = vec(st, name);
        int rows = (int) st.info(name).dim(0), cols = (int) st.info(name).dim(1);
        double[][] m = new double[rows][];
        for (int r = 0; r < rows; r++) m[r] = Arrays.copyOfRange(flat, r * cols, (r + 1) * cols);
        return m;
    }

    private static int argmax(double[] v) {
        int best = 0;
        for (int i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
        return best;
    }
}
