package dev.lora4j.quant;

import dev.lora4j.backend.Backend;
import dev.lora4j.backend.Backends;
import dev.lora4j.io.ModelFolder;
import dev.lora4j.io.SafetensorsModel;
import dev.lora4j.io.SafetensorsStreamWriter;
import dev.lora4j.io.SafetensorsStreamWriter.Entry;
import dev.lora4j.model.LlamaShape;
import dev.lora4j.model.LlamaWeightLoader;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * Writes what lora4j makes of a 4-bit checkpoint: every 4-bit weight read by {@link QuantizedCheckpointReader},
 * dequantized by a backend to F32 ({@code code * absmax}, the values bitsandbytes computes before casting to the
 * weight's dtype), under its own name, in one safetensors file. tools/bnb_checkpoint.py compares these values with
 * its PyTorch dequantization of the same checkpoint.
 *
 * <pre>java dev.lora4j.quant.DequantizedDump MODEL_FOLDER OUT.safetensors [cpu|cuda]</pre>
 */
public final class DequantizedDump {
    private DequantizedDump() {}

    /** Dumps every 4-bit weight of {@code folder}; returns how many there were. */
    public static int write(ModelFolder folder, Backend backend, Path out) throws IOException {
        SafetensorsModel file = folder.weights();
        LlamaShape shape = LlamaShape.of(folder.config());
        List<Entry> entries = new ArrayList<>();
        for (Map.Entry<String, long[]> e : LlamaWeightLoader.expectedShapes(shape).entrySet()) {
            if (QuantizedCheckpointReader.isQuantized(file, e.getKey())) entries.add(Entry.of(e.getKey(), DType.F32, e.getValue()));
        }
        if (entries.isEmpty()) {
            throw new IllegalArgumentException(folder.path() + " holds no 4-bit weights (no tensor named"
                    + " *.weight.quant_state.bitsandbytes__nf4 or __fp4)");
        }
        SafetensorsStreamWriter.write(out, entries, Map.of("format", "pt"), sink -> {
            for (Entry e : entries) {
                QuantizedCheckpointReader.StoredWeight stored =
                        QuantizedCheckpointReader.read(file, e.name(), e.shape(), DType.F32);
                try (QuantizedTensor q = stored.upload(backend);
                     Tensor values = backend.allocate(DType.F32, e.shape());
                     Arena arena = Arena.ofConfined()) {
                    backend.dequantize4bit(q, values);
                    MemorySegment host = arena.allocate(values.byteSize(), 16);
                    backend.copyToHost(values, host);
                    sink.put(e.name(), host);
                }
            }
        });
        return entries.size();
    }

    public static void main(String[] args) throws IOException {
        if (args.length < 2 || args.length > 3) {
            System.err.println("usage: DequantizedDump MODEL_FOLDER OUT.safetensors [cpu|cuda]");
            System.exit(2);
        }
        try (ModelFolder folder = ModelFolder.open(Path.of(args[0]));
             Backend backend = Backends.open(args.length > 2 ? args[2] : "cpu", System.err::println)) {
            int n = write(folder, backend, Path.of(args[1]));
            System.out.println("dequantized " + n + " 4-bit weights of " + folder.path() + " on " + backend.name()
                    + " into " + args[1]);
        }
    }
}
