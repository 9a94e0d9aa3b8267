package dev.lora4j.quant;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.lora4j.backend.Backend;
import dev.lora4j.backend.cpu.CpuBackend;
import dev.lora4j.io.ModelConfig;
import dev.lora4j.io.ModelFolder;
import dev.lora4j.io.SafetensorsModel;
import dev.lora4j.io.TensorInfo;
import dev.lora4j.model.KvCache;
import dev.lora4j.model.LlamaModel;
import dev.lora4j.model.LlamaShape;
import dev.lora4j.model.LlamaWeightLoader;
import dev.lora4j.model.LlamaWeights;
import dev.lora4j.model.RandomModelWriter;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** lora4j quantize's folder: transformers' bitsandbytes form, read back by lora4j as the backend quantized it. */
class QuantizedCheckpointWriterTest {
    @TempDir
    static Path dir;
    private static CpuBackend cpu;
    private static Path source;

    private static final ValueLayout.OfFloat F32_LE = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    /** Qwen2: q/k/v biases, whose place among the 4-bit parts is part of the form. MLP 64x320 = 320 blocks of 64. */
    static ModelConfig tinyQwen2() {
        return new ModelConfig(List.of("Qwen2ForCausalLM"), "qwen2", 256, 64, 320, 2, 4, 2, 16, 1e-6, 1e6,
                null, 512, 0, 0, true, false, false, null, List.of(1), null, "bfloat16", "silu");
    }

    @BeforeAll
    static void writeSource() throws IOException {
        cpu = new CpuBackend(2);
        source = dir.resolve("dense");
        RandomModelWriter.writeWeightsAndConfig(source, tinyQwen2(), RandomModelWriter.Options.of(DType.BF16, 7), null);
        Files.writeString(source.resolve("tokenizer.json"), "{\"stand-in\": true}");
        Files.writeString(source.resolve("tokenizer_config.json"), "{}");
    }

    @AfterAll
    static void close() { cpu.close(); }

    private static Path quantize(String name, QuantSpec spec, long maxShardBytes) throws IOException {
        Path out = dir.resolve(name);
        try (ModelFolder src = ModelFolder.open(source)) {
            QuantizedCheckpointWriter.write(src, out, cpu,
                    new QuantizedCheckpointWriter.Options(spec, maxShardBytes, true, null));
        }
        return out;
    }

    @Test
    void writesExactlyTheTensorsTransformersWritesForABitsandbytesModelInStateDictOrder() throws IOException {
        Path out = quantize("nf4", QuantSpec.QLORA, QuantizedCheckpointWriter.DEFAULT_MAX_SHARD_BYTES);
        assertThat(out.resolve("model.safetensors")).exists();
        assertThat(out.resolve("model.safetensors.index.json")).doesNotExist();
        try (SafetensorsModel w = SafetensorsModel.open(out); SafetensorsModel d = SafetensorsModel.open(source)) {
            List<String> expected = new ArrayList<>(List.of("model.embed_tokens.weight"));
            for (int i = 0; i < 2; i++) {
                String p = "model.layers." + i + ".";
                for (String m : BnbCheckpointFormat.LAYER_PROJECTIONS) {
                    String weight = p + m + ".weight";
                    expected.add(weight);
                    if (m.startsWith("self_attn.") && !m.endsWith("o_proj")) expected.add(p + m + ".bias");
                    for (String part : List.of("absmax", "quant_map", "nested_absmax", "nested_quant_map",
                            "quant_state.bitsandbytes__nf4")) expected.add(weight + "." + part);
                }
                expected.add(p + "input_layernorm.weight");
                expected.add(p + "post_attention_layernorm.weight");
            }
            expected.add("model.norm.weight");
            expected.add("lm_head.weight");
            assertThat(w.names()).containsExactlyElementsOf(expected);
            assertThat(w.metadata()).containsEntry("format", "pt");

            // down_proj of layer 1: [64, 320], 20480 elements, 320 blocks of 64, 2 nested blocks of 256.
            String down = "model.layers.1.mlp.down_proj.weight";
            assertThat(info(w, down)).isEqualTo("U8[10240, 1]");
            assertThat(info(w, down + ".absmax")).isEqualTo("U8[320]");
            assertThat(info(w, down + ".quant_map")).isEqualTo("F32[16]");
            assertThat(info(w, down + ".nested_absmax")).isEqualTo("F32[2]");
            assertThat(info(w, down + ".nested_quant_map")).isEqualTo("F32[256]");
            String json = new String(w.data(down + ".quant_state.bitsandbytes__nf4").toArray(ValueLayout.JAVA_BYTE),
                    StandardCharsets.UTF_8);
            assertThat(json).matches("\\{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"bfloat16\","
                    + " \"shape\": \\[64, 320], \"nested_blocksize\": 256, \"nested_dtype\": \"float32\","
                    + " \"nested_offset\": 0\\.0\\d+}");
            assertThat(info(w, down + ".quant_state.bitsandbytes__nf4")).isEqualTo("U8[" + json.length() + "]");
            assertThat(floats(w.data(down + ".quant_map"))).containsExactly(QuantType.NF4.codes());
            assertThat(floats(w.data(down + ".nested_quant_map"))).containsExactly(DynamicMap.signed());

            // Everything that is not a layer projection is copied as stored.
            for (String dense : List.of("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
                    "model.layers.0.self_attn.q_proj.bias", "model.layers.0.input_layernorm.weight")) {
                assertThat(info(w, dense)).isEqualTo(info(d, dense));
                assertThat(w.data(dense).mismatch(d.data(dense))).as(dense).isEqualTo(-1);
            }
        }
        JsonNode config = new ObjectMapper().readTree(out.resolve("config.json").toFile());
        Map<String, Object> block = new java.util.HashMap<>();
        block.put("_load_in_4bit", true);
        block.put("_load_in_8bit", false);
        block.put("bnb_4bit_compute_dtype", "bfloat16");
        block.put("bnb_4bit_quant_storage", "uint8");
        block.put("bnb_4bit_quant_type", "nf4");
        block.put("bnb_4bit_use_double_quant", true);
        block.put("llm_int8_enable_fp32_cpu_offload", false);
        block.put("llm_int8_has_fp16_weight", false);
        block.put("llm_int8_skip_modules", null);
        block.put("llm_int8_threshold", 6.0);
        block.put("load_in_4bit", true);
        block.put("load_in_8bit", false);
        block.put("quant_method", "bitsandbytes");
        assertThat(new ObjectMapper().convertValue(config.get("quantization_config"), Map.class)).isEqualTo(block);
        assertThat(config.get("model_type").asText()).isEqualTo("qwen2");
        assertThat(out.resolve("tokenizer.json")).hasSameTextualContentAs(source.resolve("tokenizer.json"));
        assertThat(out.resolve("tokenizer_config.json")).exists();
        assertThat(out.resolve("generation_config.json")).hasSameTextualContentAs(source.resolve("generation_config.json"));
        try (Stream<Path> siblings = Files.list(dir)) {
            assertThat(siblings.map(p -> p.getFileName().toString())).noneMatch(n -> n.startsWith("."));
        }
    }

    @Test
    void readsBackEachWeightAsTheBackendQuantizedIt() throws IOException {
        for (QuantSpec spec : List.of(QuantSpec.QLORA, new QuantSpec(QuantType.FP4, 128, false, DType.F16))) {
            Path out = quantize("roundtrip-" + spec.type() + spec.blockSize(), spec, QuantizedCheckpointWriter.DEFAULT_MAX_SHARD_BYTES);
            try (ModelFolder written = ModelFolder.open(out); SafetensorsModel dense = SafetensorsModel.open(source)) {
                assertThat(written.config().quantizationConfig()).isEqualTo(QuantizationConfig.of(spec));
                LlamaShape shape = LlamaShape.of(written.config());
                for (Map.Entry<String, long[]> e : LlamaWeightLoader.expectedShapes(shape).entrySet()) {
                    if (!QuantizedCheckpointReader.isQuantized(written.weights(), e.getKey())) continue;
                    try (Tensor d = cpu.upload(dense.data(e.getKey()), DType.BF16, DType.BF16, e.getValue());
                         QuantizedTensor direct = cpu.quantize4bit(d, spec);
                         QuantizedTensor read = QuantizedCheckpointReader.read(written.weights(), e.getKey(), e.getValue(),
                                 spec.computeType()).upload(cpu)) {
                        assertSameQuantization(direct, read);
                    }
                }
            }
        }
    }

    @Test
    void quantizingOnLoadEqualsLoadingThenQuantizingAndEqualsLoadingTheWrittenFolder() throws IOException {
        Path out = quantize("on-load", QuantSpec.QLORA, QuantizedCheckpointWriter.DEFAULT_MAX_SHARD_BYTES);
        LlamaShape shape = LlamaShape.of(tinyQwen2());
        try (SafetensorsModel dense = SafetensorsModel.open(source);
             LlamaWeights onLoad = LlamaWeightLoader.load(dense, shape, cpu, null, QuantSpec.QLORA);
             LlamaWeights plain = LlamaWeightLoader.load(dense, shape, cpu, null);
             ModelFolder written = ModelFolder.open(out);
             LlamaWeights stored = LlamaWeightLoader.load(written, cpu, null, null)) {
            for (int l = 0; l < shape.numLayers(); l++) {
                Tensor[] a = projections(onLoad.layer(l)), b = projections(plain.layer(l)), c = projections(stored.layer(l));
                for (int p = 0; p < a.length; p++) {
                    assertThat(a[p]).isInstanceOf(QuantizedTensor.class);
                    try (QuantizedTensor later = cpu.quantize4bit(b[p], QuantSpec.QLORA)) {
                        assertSameQuantization(later, (QuantizedTensor) a[p]);
                    }
                    assertSameQuantization((QuantizedTensor) a[p], (QuantizedTensor) c[p]);
                }
                assertThat(onLoad.layer(l).qBias().dtype()).isEqualTo(DType.BF16);
                assertThat(onLoad.layer(l).inputNorm().dtype()).isEqualTo(DType.F32);
            }
            assertThat(onLoad.embedTokens().dtype()).isEqualTo(DType.BF16);
            assertThat(onLoad.lmHead().dtype()).isEqualTo(DType.BF16);
            // The compute dtype of a folder saved in 4 bits comes from its config.json.
            assertThat(((QuantizedTensor) stored.layer(0).qProj()).spec()).isEqualTo(QuantSpec.QLORA);
        }
    }

    @Test
    void quantizingOnLoadHoldsAtMostOneDenseProjectionBesideThe4BitModel() throws IOException {
        LlamaShape shape = LlamaShape.of(tinyQwen2());
        long largestProjection = 2L * 64 * 320;  // BF16 gate/up/down
        long denseModel;
        try (CpuBackend fresh = new CpuBackend(1); SafetensorsModel dense = SafetensorsModel.open(source)) {
            try (LlamaWeights w = LlamaWeightLoader.load(dense, shape, fresh, null)) {
                denseModel = w.byteSize();
            }
        }
        try (CpuBackend fresh = new CpuBackend(1); SafetensorsModel dense = SafetensorsModel.open(source);
             LlamaWeights w = LlamaWeightLoader.load(dense, shape, fresh, null, QuantSpec.QLORA)) {
            assertThat(fresh.memoryInUse()).isEqualTo(w.byteSize());
            assertThat(fresh.peakMemoryInUse()).isLessThanOrEqualTo(w.byteSize() + largestProjection)
                    .isLessThan(denseModel);
        }
    }

    @Test
    void aFourBitModelRunsAndPredictsAsTheModelQuantizedOnLoad() throws IOException {
        Path out = quantize("runs", QuantSpec.QLORA, QuantizedCheckpointWriter.DEFAULT_MAX_SHARD_BYTES);
        int[] prompt = {3, 17, 42, 99, 5};
        float[] fromFolder, onLoad, dense;
        try (ModelFolder written = ModelFolder.open(out);
             LlamaModel m = new LlamaModel(cpu, LlamaWeightLoader.load(written, cpu, null, null))) {
            fromFolder = m.forward(prompt, 0, m.newCache(16));
        }
        try (ModelFolder src = ModelFolder.open(source);
             LlamaModel m = new LlamaModel(cpu, LlamaWeightLoader.load(src, cpu, null, QuantSpec.QLORA))) {
            onLoad = m.forward(prompt, 0, m.newCache(16));
        }
        try (ModelFolder src = ModelFolder.open(source); LlamaModel m = new LlamaModel(cpu, LlamaWeightLoader.load(src, cpu, null, null))) {
            dense = m.forward(prompt, 0, m.newCache(16));
        }
        assertThat(fromFolder).containsExactly(onLoad);
        // 4-bit weights change the logits a little, not wholesale.
        double diff = 0, norm = 0;
        for (int i = 0; i < dense.length; i++) {
            diff += (fromFolder[i] - dense[i]) * (double) (fromFolder[i] - dense[i]);
            norm += dense[i] * (double) dense[i];
        }
        assertThat(diff).isPositive().isLessThan(0.25 * norm);
    }

    @Test
    void shardsAsTransformersDoesWithAnIndexNamingEveryTensor() throws IOException {
        Path out = quantize("sharded", QuantSpec.QLORA, 20_000);
        try (Stream<Path> files = Files.list(out)) {
            assertThat(files.map(p -> p.getFileName().toString()).filter(n -> n.endsWith(".safetensors")))
                    .allMatch(n -> n.matches("model-\\d{5}-of-\\d{5}\\.safetensors")).hasSizeGreaterThan(2);
        }
        JsonNode index = new ObjectMapper().readTree(out.resolve("model.safetensors.index.json").toFile());
        try (SafetensorsModel sharded = SafetensorsModel.open(out);
             SafetensorsModel single = SafetensorsModel.open(quantize("unsharded", QuantSpec.QLORA, 1L << 40))) {
            assertThat(sharded.names()).containsExactlyInAnyOrderElementsOf(single.names());
            long total = 0;
            for (String n : sharded.names()) {
                total += sharded.info(n).byteLength();
                assertThat(index.get("weight_map").get(n).asText()).isEqualTo(sharded.fileOf(n).getFileName().toString());
                if (!BnbCheckpointFormat.isQuantState(n)) {
                    assertThat(sharded.data(n).mismatch(single.data(n))).as(n).isEqualTo(-1);
                }
            }
            assertThat(index.get("metadata").get("total_size").asLong()).isEqualTo(total);
        }
    }

    @Test
    void refusesAFolderWithFilesUnlessToldToReplaceItAndAFolderAlreadyIn4Bits() throws IOException {
        Path busy = dir.resolve("busy");
        Files.createDirectories(busy);
        Files.writeString(busy.resolve("notes.txt"), "mine");
        try (ModelFolder src = ModelFolder.open(source)) {
            assertThatThrownBy(() -> QuantizedCheckpointWriter.write(src, busy, cpu, QuantizedCheckpointWriter.Options.of(QuantSpec.QLORA)))
                    .isInstanceOf(FileAlreadyExistsException.class).hasMessageContaining("not empty");
            assertThat(busy.resolve("notes.txt")).exists();
            QuantizedCheckpointWriter.write(src, busy, cpu, new QuantizedCheckpointWriter.Options(QuantSpec.QLORA,
                    QuantizedCheckpointWriter.DEFAULT_MAX_SHARD_BYTES, true, null));
            assertThat(busy.resolve("notes.txt")).doesNotExist();
            assertThat(busy.resolve("config.json")).exists();
        }
        try (ModelFolder fourBit = ModelFolder.open(busy)) {
            assertThatThrownBy(() -> QuantizedCheckpointWriter.write(fourBit, dir.resolve("twice"), cpu,
                    QuantizedCheckpointWriter.Options.of(QuantSpec.QLORA)))
                    .hasMessageContaining("already saved in 4 bits");
        }
    }

    @Test
    void aFailureHalfWayLeavesNoFolderAndNoPartialFiles() throws IOException {
        Path broken = dir.resolve("broken-source");
        RandomModelWriter.writeWeightsAndConfig(broken, tinyQwen2(), RandomModelWriter.Options.of(DType.F32, 3), null);
        // A NaN in the last layer's down_proj: found only after the earlier tensors were written.
        try (SafetensorsModel st = SafetensorsModel.open(broken)) {
            TensorInfo t = st.info("model.layers.1.mlp.down_proj.weight");
            Path file = st.fileOf(t.name());
            long headerLength;
            try (var ch = java.nio.channels.FileChannel.open(file)) {
                var b = java.nio.ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
                ch.read(b, 0);
                headerLength = b.getLong(0);
            }
            st.close();
            try (var ch = java.nio.channels.FileChannel.open(file, java.nio.file.StandardOpenOption.WRITE)) {
                var nan = java.nio.ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN).putFloat(Float.NaN).flip();
                ch.write(nan, 8 + headerLength + t.dataBegin() + 4 * 100);
            }
        }
        Path out = dir.resolve("never");
        try (ModelFolder src = ModelFolder.open(broken)) {
            assertThatThrownBy(() -> QuantizedCheckpointWriter.write(src, out, cpu, QuantizedCheckpointWriter.Options.of(QuantSpec.QLORA)))
                    .hasMessageContaining("model.layers.1.mlp.down_proj.weight");
        }
        assertThat(out).doesNotExist();
        try (Stream<Path> siblings = Files.list(dir)) {
            assertThat(siblings.map(p -> p.getFileName().toString())).noneMatch(n -> n.contains("never"));
        }
    }

    static void assertSameQuantization(QuantizedTensor expected, QuantizedTensor actual) {
        assertThat(actual.shape()).isEqualTo(expected.shape());
        assertThat(actual.spec().type()).isEqualTo(expected.spec().type());
        assertThat(actual.spec().blockSize()).isEqualTo(expected.spec().blockSize());
        assertThat(actual.spec().doubleQuant()).isEqualTo(expected.spec().doubleQuant());
        assertThat(actual.originalType()).isEqualTo(expected.originalType());
        assertThat(Float.floatToIntBits(actual.nestedOffset())).isEqualTo(Float.floatToIntBits(expected.nestedOffset()));
        assertThat(bytes(actual.packed())).isEqualTo(bytes(expected.packed()));
        assertThat(bytes(actual.absmax())).isEqualTo(bytes(expected.absmax()));
        if (expected.spec().doubleQuant()) {
            assertThat(bytes(actual.nestedAbsmax())).isEqualTo(bytes(expected.nestedAbsmax()));
            assertThat(bytes(actual.nestedCode())).isEqualTo(bytes(expected.nestedCode()));
        }
    }

    static byte[] bytes(Tensor t) {
        Backend b = t.backend();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment host = arena.allocate(t.byteSize(), 16);
            b.copyToHost(t, host);
            return host.toArray(ValueLayout.JAVA_BYTE);
        }
    }

    private static Tensor[] projections(LlamaWeights.Layer l) {
        return new Tensor[] {l.qProj(), l.kProj(), l.vProj(), l.oProj(), l.gateProj(), l.upProj(), l.downProj()};
    }

    private static String info(SafetensorsModel m, String name) {
        TensorInfo t = m.info(name);
        return t.dtype() + java.util.Arrays.toString(t.shape());
    }

    private static float[] floats(MemorySegment s) {
        float[] f = new float[(int) (s.byteSize() / 4)];
        for (int i = 0; i < f.length; i++) f[i] = s.get(F32_LE, 4L * i);
        return f;
    }
}
