package dev.lora4j.lora;

import dev.lora4j.backend.HostConversions;
import dev.lora4j.io.SafetensorsFile;
import dev.lora4j.io.SafetensorsFormatException;
import dev.lora4j.io.SafetensorsWriter;
import dev.lora4j.io.TensorInfo;
import dev.lora4j.tensor.DType;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.ThreadLocalRandom;

/**
 * A LoRA adapter on the host, as PEFT saves it: {@code adapter_config.json} and {@code adapter_model.safetensors}
 * holding F32 tensors under PEFT's keys, which are the PEFT model's parameter names without the adapter name:
 * {@code base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight} ([r, in]) and {@code ...lora_B.weight}
 * ([out, r]); trained biases as {@code ...q_proj.base_layer.bias} (adapted module) or {@code ...k_proj.bias};
 * modules_to_save as the module's own parameter names, e.g. {@code base_model.model.lm_head.weight}.
 */
public final class PeftAdapter {
    public static final String CONFIG_FILE = LoraConfig.CONFIG_FILE;
    public static final String WEIGHTS_FILE = "adapter_model.safetensors";
    public static final String PICKLE_WEIGHTS_FILE = "adapter_model.bin";
    /** PeftModel wraps LoraModel ("base_model") which wraps the transformers model ("model"). */
    public static final String KEY_PREFIX = "base_model.model.";

    /** One tensor: its shape and row-major F32 values. */
    public record Weight(long[] shape, float[] values) {
        public Weight {
            long n = 1;
            for (long d : shape) n = Math.multiplyExact(n, d);
            if (n != values.length) {
                throw new IllegalArgumentException("shape " + Arrays.toString(shape) + " holds " + n + " values, got " + values.length);
            }
            shape = shape.clone();
        }

        @Override public long[] shape() { return shape.clone(); }

        @Override
        public boolean equals(Object o) {
            return o instanceof Weight w && Arrays.equals(shape, w.shape) && Arrays.equals(values, w.values);
        }

        @Override
        public int hashCode() { return Arrays.hashCode(shape) * 31 + Arrays.hashCode(values); }

        @Override
        public String toString() { return "Weight" + Arrays.toString(shape); }
    }

    private final LoraConfig config;
    private final List<String> savedTargetModules;
    private final Map<String, Weight> tensors;

    /**
     * @param savedTargetModules what adapter_config.json records as target_modules (see
     *                           {@link LoraTargets#savedTargetModules}); null to record the configuration's own list
     */
    public PeftAdapter(LoraConfig config, List<String> savedTargetModules, Map<String, Weight> tensors) {
        this.config = Objects.requireNonNull(config, "config");
        this.savedTargetModules = savedTargetModules == null ? null : List.copyOf(savedTargetModules);
        this.tensors = Collections.unmodifiableMap(new LinkedHashMap<>(tensors));
    }

    public LoraConfig config() { return config; }

    /** The target_modules adapter_config.json records; null when it records the configuration's own form. */
    public List<String> savedTargetModules() { return savedTargetModules; }

    /** Every tensor by PEFT key, in file order. */
    public Map<String, Weight> tensors() { return tensors; }

    /** The tensor under this key; an error naming the key when absent. */
    public Weight tensor(String key) {
        Weight w = tensors.get(key);
        if (w == null) throw new IllegalArgumentException("the adapter has no tensor " + key);
        return w;
    }

    public static String loraAKey(String modulePath) { return KEY_PREFIX + modulePath + ".lora_A.weight"; }

    public static String loraBKey(String modulePath) { return KEY_PREFIX + modulePath + ".lora_B.weight"; }

    /** A trained bias: on an adapted module it lives on the wrapped base layer. */
    public static String biasKey(String modulePath, boolean adapted) {
        return KEY_PREFIX + modulePath + (adapted ? ".base_layer.bias" : ".bias");
    }

    /** A modules_to_save parameter: its Hugging Face name under the PEFT prefix. */
    public static String fullParameterKey(String hfName) { return KEY_PREFIX + hfName; }

    // ---- files ------------------------------------------------------------------------------------------------

    /** Reads an adapter folder written by PEFT's save_pretrained or by {@link #save}. */
    public static PeftAdapter load(Path adapterDir) throws IOException {
        if (!Files.isDirectory(adapterDir)) {
            throw new NoSuchFileException(adapterDir.toString(), null, "no such adapter folder; a PEFT adapter folder"
                    + " holds " + CONFIG_FILE + " and " + WEIGHTS_FILE);
        }
        LoraConfig config = LoraConfig.readAdapterConfig(adapterDir.resolve(CONFIG_FILE));
        Path weights = adapterDir.resolve(WEIGHTS_FILE);
        if (!Files.isRegularFile(weights)) {
            if (Files.isRegularFile(adapterDir.resolve(PICKLE_WEIGHTS_FILE))) {
                throw new IOException(adapterDir + " holds " + PICKLE_WEIGHTS_FILE + " (a PyTorch pickle, which can run"
                        + " code when loaded) instead of " + WEIGHTS_FILE + ". Convert it once in Python: "
                        + "PeftModel.from_pretrained(base, folder).save_pretrained(out, safe_serialization=True).");
            }
            throw new NoSuchFileException(weights.toString(), null, "the adapter's weights are missing");
        }
        Map<String, Weight> tensors = new LinkedHashMap<>();
        try (SafetensorsFile file = SafetensorsFile.open(weights)) {
            for (TensorInfo info : file.tensors()) {
                DType t = info.dtype();
                if (t != DType.F32 && t != DType.BF16 && t != DType.F16 && t != DType.F64) {
                    throw new SafetensorsFormatException(weights + ": tensor " + info.name() + " is stored as " + t
                            + "; adapter tensors must be F32, BF16, F16 or F64");
                }
                if (info.numel() > Integer.MAX_VALUE - 8) {
                    throw new SafetensorsFormatException(weights + ": tensor " + info.name() + " is too large for an adapter");
                }
                float[] values = HostConversions.toFloats(file.data(info.name()), t, info.numel());
                tensors.put(normaliseKey(info.name()), new Weight(info.shape(), values));
            }
        }
        if (tensors.isEmpty()) {
            throw new SafetensorsFormatException(weights + " holds no tensors: it is not a trained adapter");
        }
        return new PeftAdapter(config, null, tensors);
    }

    /** Some writers leave out PEFT's wrapper prefix; PEFT adds it back when loading, and so do we. */
    private static String normaliseKey(String key) {
        if (key.startsWith(KEY_PREFIX)) return key;
        if (key.startsWith("model.") || key.startsWith("lm_head.")) return KEY_PREFIX + key;
        return key;
    }

    /**
     * Writes adapter_config.json and adapter_model.safetensors (F32, metadata {"format": "pt"} as PEFT writes it)
     * into {@code adapterDir}, each atomically: the weights first, so a folder whose configuration is new never
     * holds old weights.
     */
    public void save(Path adapterDir) throws IOException {
        Files.createDirectories(adapterDir);
        SafetensorsWriter writer = new SafetensorsWriter().metadata("format", "pt");
        for (Map.Entry<String, Weight> e : tensors.entrySet()) {
            writer.add(e.getKey(), DType.F32, e.getValue().shape, MemorySegment.ofArray(e.getValue().values));
        }
        writer.writeTo(adapterDir.resolve(WEIGHTS_FILE));
        writeAtomically(adapterDir.resolve(CONFIG_FILE), config.toAdapterConfigJson(savedTargetModules));
    }

    private static void writeAtomically(Path target, String text) throws IOException {
        Path tmp = target.resolveSibling("." + target.getFileName() + "."
                + Long.toHexString(ThreadLocalRandom.current().nextLong()) + ".tmp");
        try {
            Files.writeString(tmp, text, StandardCharsets.UTF_8);
            try {
                Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            } catch (AtomicMoveNotSupportedException e) {
                Files.move(tmp, target, StandardCopyOption.REPLACE_EXISTING);
            }
        } finally {
            Files.deleteIfExists(tmp);
        }
    }

    /** The LoRA module paths present (those with a lora_A tensor), in file order. */
    public List<String> adaptedModules() {
        List<String> out = new ArrayList<>();
        String suffix = ".lora_A.weight";
        for (String k : tensors.keySet()) {
            if (k.startsWith(KEY_PREFIX) && k.endsWith(suffix)) {
                out.add(k.substring(KEY_PREFIX.length(), k.length() - suffix.length()));
            }
        }
        return out;
    }

    @Override
    public String toString() {
        return "PeftAdapter[r=" + config.r() + ", " + tensors.size() + " tensors]";
    }
}
