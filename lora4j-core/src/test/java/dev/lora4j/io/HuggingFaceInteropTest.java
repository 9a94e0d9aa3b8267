package dev.lora4j.io;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * Step 2 of tools/hf_interop.py: reads what safetensors and transformers wrote, checks it against what Python
 * recorded, and writes it all back with lora4j's writers for Python to read. Runs only where that script has
 * prepared LORA4J_INTEROP_DIR (the GPU machine, which has torch and transformers); skipped elsewhere.
 */
class HuggingFaceInteropTest {

    private static Path root;
    private static JsonNode expected;

    @BeforeAll
    static void locate() throws IOException {
        String dir = System.getenv("LORA4J_INTEROP_DIR");
        assumeTrue(dir != null && Files.isRegularFile(Path.of(dir, "expected.json")),
                "LORA4J_INTEROP_DIR is not set to a folder prepared by `python3 tools/hf_interop.py write <dir>`");
        root = Path.of(dir);
        expected = new ObjectMapper().readTree(root.resolve("expected.json").toFile());
    }

    private static String sha256(MemorySegment data) {
        try {
            MessageDigest md = MessageDigest.getInstance("SHA-256");
            md.update(data.asByteBuffer());
            return HexFormat.of().formatHex(md.digest());
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    private static long[] longs(JsonNode array) {
        long[] out = new long[array.size()];
        for (int i = 0; i < out.length; i++) out[i] = array.get(i).asLong();
        return out;
    }

    @Test
    void readsFilesSafetensorsWroteAndWritesThemBack() throws IOException {
        for (Map.Entry<String, JsonNode> file : expected.get("tensor_files").properties()) {
            Path in = root.resolve("py/tensors").resolve(file.getKey());
            try (SafetensorsFile f = SafetensorsFile.open(in)) {
                assertThat(f.metadata()).containsEntry("format", "pt").containsEntry("source", "python");
                assertThat(f.names()).containsExactlyInAnyOrderElementsOf(iterable(file.getValue().fieldNames()));
                SafetensorsWriter w = new SafetensorsWriter().metadata(f.metadata());
                for (Map.Entry<String, JsonNode> t : file.getValue().properties()) {
                    TensorInfo info = f.info(t.getKey());
                    assertThat(info.dtype().safetensorsName()).as(t.getKey()).isEqualTo(t.getValue().get("dtype").asText());
                    assertThat(info.shape()).as(t.getKey()).containsExactly(longs(t.getValue().get("shape")));
                    assertThat(sha256(f.data(t.getKey()))).as(t.getKey()).isEqualTo(t.getValue().get("sha256").asText());
                    w.add(t.getKey(), info.dtype(), info.shape(), f.data(t.getKey()));
                }
                w.writeTo(root.resolve("java/tensors").resolve(file.getKey()));
            }
        }
    }

    @Test
    void readsModelFoldersTransformersSavedAndWritesThemBack() throws IOException {
        for (Map.Entry<String, JsonNode> model : expected.get("models").properties()) {
            String name = model.getKey();
            JsonNode want = model.getValue().get("config");
            try (ModelFolder folder = ModelFolder.open(root.resolve("py").resolve(name))) {
                ModelConfig c = folder.config();
                assertThat(c.modelType()).isEqualTo(want.get("model_type").asText());
                assertThat(c.architectures()).containsExactlyElementsOf(iterable(want.get("architectures").elements()).stream().map(JsonNode::asText).toList());
                assertThat(c.vocabSize()).isEqualTo(want.get("vocab_size").asInt());
                assertThat(c.hiddenSize()).isEqualTo(want.get("hidden_size").asInt());
                assertThat(c.intermediateSize()).isEqualTo(want.get("intermediate_size").asInt());
                assertThat(c.numHiddenLayers()).isEqualTo(want.get("num_hidden_layers").asInt());
                assertThat(c.numAttentionHeads()).isEqualTo(want.get("num_attention_heads").asInt());
                assertThat(c.numKeyValueHeads()).isEqualTo(want.get("num_key_value_heads").asInt());
                assertThat(c.headDim()).as(name + " head_dim").isEqualTo(want.get("head_dim").asInt());
                assertThat(c.rmsNormEps()).isEqualTo(want.get("rms_norm_eps").asDouble());
                assertThat(c.maxPositionEmbeddings()).isEqualTo(want.get("max_position_embeddings").asInt());
                assertThat(c.ropeTheta()).as(name + " rope_theta").isEqualTo(want.get("rope_theta").asDouble());
                String ropeType = want.get("rope_type").asText();
                if (ropeType.equals("default")) {
                    assertThat(c.ropeScaling()).isNull();
                } else {
                    assertThat(c.ropeScaling().ropeType()).isEqualTo(ropeType);
                    assertThat(c.ropeScaling().factor()).isEqualTo(want.get("rope_factor").asDouble());
                    assertThat(c.ropeScaling().lowFreqFactor()).isEqualTo(want.get("rope_low_freq_factor").asDouble());
                    assertThat(c.ropeScaling().highFreqFactor()).isEqualTo(want.get("rope_high_freq_factor").asDouble());
                    assertThat(c.ropeScaling().originalMaxPositionEmbeddings())
                            .isEqualTo(want.get("rope_original_max_position_embeddings").asInt());
                }
                for (int layer = 0; layer < c.numHiddenLayers(); layer++) {
                    assertThat(c.slidingWindowFor(layer)).as(name + " sliding window of layer " + layer)
                            .isEqualTo(want.get("sliding_windows").get(layer).asInt());
                }
                assertThat(c.tieWordEmbeddings()).isEqualTo(want.get("tie_word_embeddings").asBoolean());
                assertThat(c.bosTokenId()).isEqualTo(want.get("bos_token_id").isNull() ? null : want.get("bos_token_id").asInt());
                assertThat(c.eosTokenIds()).containsExactlyElementsOf(
                        iterable(want.get("eos_token_ids").elements()).stream().map(JsonNode::asInt).toList());

                SafetensorsModel weights = folder.weights();
                if (model.getValue().get("sharded").asBoolean()) {
                    assertThat(weights.files()).hasSizeGreaterThan(1);
                }
                JsonNode tensors = model.getValue().get("tensors");
                assertThat(weights.names()).containsExactlyInAnyOrderElementsOf(iterable(tensors.fieldNames()));
                SafetensorsWriter w = new SafetensorsWriter().metadata("format", "pt");
                for (String t : weights.names()) {
                    assertThat(weights.info(t).shape()).as(t).containsExactly(longs(tensors.get(t).get("shape")));
                    assertThat(sha256(weights.data(t))).as(name + " " + t).isEqualTo(tensors.get(t).get("sha256").asText());
                    w.add(t, weights.info(t).dtype(), weights.info(t).shape(), weights.data(t));
                }
                Path out = root.resolve("java").resolve(name);
                w.writeSharded(out, 40_000);
                Files.writeString(out.resolve(ModelFolder.CONFIG_FILE), c.toJson());
                try (ModelFolder again = ModelFolder.open(out)) {
                    assertThat(again.config()).isEqualTo(c);
                }
            }
        }
    }

    private static <T> List<T> iterable(java.util.Iterator<T> it) {
        List<T> out = new ArrayList<>();
        it.forEachRemaining(out::add);
        return out;
    }
}
