package dev.lora4j.quant;

import dev.lora4j.backend.cpu.CpuBackend;
import dev.lora4j.io.ModelFolder;
import dev.lora4j.io.SafetensorsModel;
import dev.lora4j.io.SafetensorsWriter;
import dev.lora4j.io.TensorInfo;
import dev.lora4j.model.LlamaWeightLoader;
import dev.lora4j.model.RandomModelWriter;
import dev.lora4j.tensor.DType;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Consumer;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** A damaged 4-bit checkpoint is refused with the file, the tensor and what is wrong, and nothing stays allocated. */
class QuantizedCheckpointReaderTest {
    @TempDir
    static Path dir;
    private static CpuBackend cpu;
    private static Path good;
    private static final AtomicInteger variants = new AtomicInteger();

    private static final String DOWN = "model.layers.1.mlp.down_proj.weight";  // [64, 320]: 320 blocks, 2 nested blocks
    private static final String STATE = DOWN + ".quant_state.bitsandbytes__nf4";

    /** One tensor of a variant: what the safetensors header says and the bytes. */
    private record Part(DType dtype, long[] shape, byte[] bytes) {}

    @BeforeAll
    static void write() throws IOException {
        cpu = new CpuBackend(2);
        Path dense = dir.resolve("dense");
        RandomModelWriter.writeWeightsAndConfig(dense, QuantizedCheckpointWriterTest.tinyQwen2(),
                RandomModelWriter.Options.of(DType.BF16, 5), null);
        good = dir.resolve("good");
        try (ModelFolder src = ModelFolder.open(dense)) {
            QuantizedCheckpointWriter.write(src, good, cpu, QuantizedCheckpointWriter.Options.of(QuantSpec.QLORA));
        }
    }

    @AfterAll
    static void close() { cpu.close(); }

    /** A copy of the good checkpoint with its tensors edited (the map is in file order; remove, replace, add). */
    private static Path variant(Consumer<Map<String, Part>> edit) throws IOException {
        Map<String, Part> parts = new LinkedHashMap<>();
        try (SafetensorsModel m = SafetensorsModel.open(good)) {
            for (String n : m.names()) {
                TensorInfo t = m.info(n);
                parts.put(n, new Part(t.dtype(), t.shape(), m.data(n).toArray(ValueLayout.JAVA_BYTE)));
            }
        }
        edit.accept(parts);
        Path out = dir.resolve("variant-" + variants.incrementAndGet());
        Files.createDirectories(out);
        SafetensorsWriter w = new SafetensorsWriter().metadata("format", "pt");
        parts.forEach((n, p) -> w.add(n, p.dtype(), p.shape(), MemorySegment.ofArray(p.bytes())));
        w.writeTo(out.resolve("model.safetensors"));
        Files.copy(good.resolve("config.json"), out.resolve("config.json"));
        return out;
    }

    private static Part json(String text) {
        byte[] b = text.getBytes(StandardCharsets.UTF_8);
        return new Part(DType.U8, new long[] {b.length}, b);
    }

    private static String stateJson(Map<String, Part> parts) {
        return new String(parts.get(STATE).bytes(), StandardCharsets.UTF_8);
    }

    /** Loading the variant fails with a message naming the file and containing each fragment; no memory is left. */
    private static void refused(Path folder, String... fragments) throws IOException {
        long before = cpu.memoryInUse();
        try (ModelFolder f = ModelFolder.open(folder)) {
            var thrown = assertThatThrownBy(() -> LlamaWeightLoader.load(f, cpu, null, null).close())
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining(folder.toString());
            for (String fragment : fragments) thrown.hasMessageContaining(fragment);
        }
        assertThat(cpu.memoryInUse()).isEqualTo(before);
    }

    @Test
    void theGoodCheckpointLoads() throws IOException {
        try (ModelFolder f = ModelFolder.open(good); var w = LlamaWeightLoader.load(f, cpu, null, null)) {
            assertThat(w.layer(1).downProj()).isInstanceOf(QuantizedTensor.class);
        }
    }

    @Test
    void aMissingPartIsNamed() throws IOException {
        refused(variant(p -> p.remove(DOWN + ".absmax")), DOWN + ".absmax is missing", "incomplete");
        refused(variant(p -> p.remove(DOWN + ".nested_quant_map")), DOWN + ".nested_quant_map is missing");
    }

    @Test
    void aPartOfTheWrongDtypeOrShapeIsNamedWithBothShapes() throws IOException {
        refused(variant(p -> {
            byte[] f32 = new byte[320 * 4];
            p.put(DOWN + ".absmax", new Part(DType.F32, new long[] {320}, f32));
        }), DOWN + ".absmax", "is F32 [320] but should be U8 [320]", "double quantization");
        refused(variant(p -> {
            Part packed = p.get(DOWN);
            p.put(DOWN, new Part(DType.U8, new long[] {10239, 1}, java.util.Arrays.copyOf(packed.bytes(), 10239)));
        }), DOWN + " in ", "U8 [10239, 1] but should be U8 [10240, 1]");
        refused(variant(p -> p.put(DOWN + ".nested_absmax", new Part(DType.F32, new long[] {3}, new byte[12]))),
                "nested_absmax", "F32 [3] but should be F32 [2]");
    }

    @Test
    void codesPackedInAnotherStorageDtypeAreRefusedAsSuch() throws IOException {
        refused(variant(p -> {
            Part packed = p.get(DOWN);
            p.put(DOWN, new Part(DType.BF16, new long[] {5120, 1}, packed.bytes()));
        }), "packing in BF16", "not supported");
    }

    @Test
    void aCodeTableOtherThanTheTypesIsRefused() throws IOException {
        refused(variant(p -> {
            byte[] table = p.get(DOWN + ".quant_map").bytes().clone();
            MemorySegment.ofArray(table).set(ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN), 12, 0.3f);
            p.put(DOWN + ".quant_map", new Part(DType.F32, new long[] {16}, table));
        }), DOWN + ".quant_map", "entry 3 is 0.3", "nf4");
    }

    @Test
    void aQuantStateThatContradictsTheConfigOrItsNameIsRefused() throws IOException {
        refused(variant(p -> p.put(STATE, json(stateJson(p).replace("[64, 320]", "[320, 64]")))),
                STATE, "gives the weight shape [320, 64] but config.json needs [64, 320]");
        refused(variant(p -> p.put(STATE, json(stateJson(p).replace("\"blocksize\": 64", "\"blocksize\": 48")))),
                STATE, "blocksize is 48");
        refused(variant(p -> {
            Part s = p.remove(STATE);
            p.put(DOWN + ".quant_state.bitsandbytes__fp4", s);
        }), "says quant_type \"nf4\" but its name ends in __fp4");
        refused(variant(p -> p.put(DOWN + ".quant_state.bitsandbytes__fp4", json(stateJson(p).replace("nf4", "fp4")))),
                "both nf4 and fp4");
        refused(variant(p -> p.put(STATE, json(stateJson(p).replaceAll(", \"nested_blocksize.*}", "}")))),
                DOWN + ".absmax", "should be F32 [320]");
        refused(variant(p -> {
            p.put(STATE, json(stateJson(p).replaceAll(", \"nested_blocksize.*}", "}")));
            p.put(DOWN + ".absmax", new Part(DType.F32, new long[] {320}, new byte[1280]));
        }), DOWN + ".nested_absmax", "not double-quantized");
        refused(variant(p -> p.put(STATE, json("{\"quant_type\": \"nf4\"")) ), STATE, "not valid JSON");
    }

    @Test
    void aQuantizedOutputLayerIsRefused() throws IOException {
        refused(variant(p -> {
            Part state = p.get(STATE);
            p.put("lm_head.weight", p.get(DOWN));
            p.put("lm_head.weight.quant_state.bitsandbytes__nf4", state);
        }), "lm_head.weight", "stored in 4 bits", "16 bits");
    }

    @Test
    void randomDamageToTheQuantStateOrAShapeAlwaysGivesANamedError() throws IOException {
        Random random = new Random(11);
        for (int trial = 0; trial < 12; trial++) {
            boolean jsonDamage = trial % 2 == 0;
            Path v = variant(p -> {
                if (jsonDamage) {
                    byte[] b = p.get(STATE).bytes().clone();
                    // Damage the structure or the numbers, not only the offset's last digits (which stay valid).
                    int at = random.nextInt(b.length - 40);
                    b[at] = (byte) "{}[],:\"x9-".charAt(random.nextInt(10));
                    p.put(STATE, new Part(DType.U8, new long[] {b.length}, b));
                } else {
                    String[] names = {DOWN, DOWN + ".absmax", DOWN + ".nested_absmax", DOWN + ".quant_map", DOWN + ".nested_quant_map"};
                    String n = names[random.nextInt(names.length)];
                    Part part = p.get(n);
                    long[] shape = part.shape().clone();
                    shape[0] += random.nextBoolean() ? 1 : -1;
                    long elements = 1;
                    for (long d : shape) elements *= d;
                    p.put(n, new Part(part.dtype(), shape, java.util.Arrays.copyOf(part.bytes(),
                            (int) (elements * part.dtype().byteSize()))));
                }
            });
            long before = cpu.memoryInUse();
            try (ModelFolder f = ModelFolder.open(v)) {
                try {
                    LlamaWeightLoader.load(f, cpu, null, null).close();
                    // A harmless edit (a digit for a digit in the offset or a key's spelling left intact) may load.
                } catch (IllegalArgumentException e) {
                    assertThat(e.getMessage()).as("trial " + trial).contains(v.toString()).contains(DOWN);
                }
            }
            assertThat(cpu.memoryInUse()).isEqualTo(before);
        }
    }
}
