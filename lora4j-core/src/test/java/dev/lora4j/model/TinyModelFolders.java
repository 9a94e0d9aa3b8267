package dev.lora4j.model;

import dev.lora4j.io.ModelConfig;
import dev.lora4j.io.ModelFolder;
import dev.lora4j.io.SafetensorsWriter;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Half;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/** Writes the {@link TinyModels} weights as a Hugging Face model folder (config.json and model.safetensors). */
final class TinyModelFolders {
    private TinyModelFolders() {}

    /** The config.json equivalent of a tiny shape. */
    static ModelConfig config(LlamaShape s, DType storage) {
        String arch = switch (s.modelType()) {
            case "llama" -> "LlamaForCausalLM";
            case "mistral" -> "MistralForCausalLM";
            case "qwen2" -> "Qwen2ForCausalLM";
            default -> throw new IllegalArgumentException(s.modelType());
        };
        int window = 0, maxWindowLayers = 0;
        for (int l = 0; l < s.numLayers(); l++) {
            if (s.slidingWindow(l) > 0 && window == 0) {
                window = s.slidingWindow(l);
                maxWindowLayers = l;
            }
        }
        String dtype = switch (storage) {
            case F32 -> "float32";
            case BF16 -> "bfloat16";
            default -> "float16";
        };
        return new ModelConfig(List.of(arch), s.modelType(), s.vocabSize(), s.hiddenSize(), s.intermediateSize(),
                s.numLayers(), s.numHeads(), s.numKvHeads(), s.headDim(), s.rmsNormEps(), 10000, null, s.maxPositions(),
                window, maxWindowLayers, s.qkvBias(), s.mlpBias(), s.tiedEmbeddings(), null, List.of(), null, dtype, "silu");
    }

    static ModelFolder write(Path dir, LlamaShape s, ReferenceLlama.Weights w, DType storage) throws IOException {
        Files.createDirectories(dir);
        SafetensorsWriter writer = new SafetensorsWriter().metadata("format", "pt");
        add(writer, "model.embed_tokens.weight", w.embed(), storage);
        for (int l = 0; l < s.numLayers(); l++) {
            ReferenceLlama.Layer L = w.layers()[l];
            String p = "model.layers." + l + ".";
            add(writer, p + "input_layernorm.weight", L.inputNorm(), DType.F32);
            add(writer, p + "post_attention_layernorm.weight", L.postNorm(), DType.F32);
            add(writer, p + "self_attn.q_proj.weight", L.q(), storage);
            add(writer, p + "self_attn.k_proj.weight", L.k(), storage);
            add(writer, p + "self_attn.v_proj.weight", L.v(), storage);
            add(writer, p + "self_attn.o_proj.weight", L.o(), storage);
            add(writer, p + "self_attn.q_proj.bias", L.qBias(), storage);
            add(writer, p + "self_attn.k_proj.bias", L.kBias(), storage);
            add(writer, p + "self_attn.v_proj.bias", L.vBias(), storage);
            add(writer, p + "self_attn.o_proj.bias", L.oBias(), storage);
            add(writer, p + "mlp.gate_proj.weight", L.gate(), storage);
            add(writer, p + "mlp.up_proj.weight", L.up(), storage);
            add(writer, p + "mlp.down_proj.weight", L.down(), storage);
            add(writer, p + "mlp.gate_proj.bias", L.gateBias(), storage);
            add(writer, p + "mlp.up_proj.bias", L.upBias(), storage);
            add(writer, p + "mlp.down_proj.bias", L.downBias(), storage);
        }
        add(writer, "model.norm.weight", w.finalNorm(), DType.F32);
        if (w.lmHead() != null) add(writer, "lm_head.weight", w.lmHead(), storage);
        writer.writeTo(dir.resolve("model.safetensors"));
        Files.writeString(dir.resolve(ModelFolder.CONFIG_FILE), config(s, storage).toJson());
        return ModelFolder.open(dir);
    }

    private static void add(SafetensorsWriter writer, String name, double[][] m, DType storage) {
        if (m == null) return;
        int rows = m.length, cols = m[0].length;
        double[] flat = new double[rows * cols];
        for (int i = 0; i < rows; i++) System.arraycopy(m[i], 0, flat, i * cols, cols);
        writer.add(name, storage, new long[]{rows, cols}, bytes(flat, storage));
    }

    private static void add(SafetensorsWriter writer, String name, double[] v, DType storage) {
        if (v == null) return;
        writer.add(name, storage, new long[]{v.length}, bytes(v, storage));
    }

    private static MemorySegment bytes(double[] values, DType storage) {
        if (storage == DType.F32) {
            float[] f = new float[values.length];
            for (int i = 0; i < f.length; i++) f[i] = (float) values[i];
            return MemorySegment.ofArray(f);
        }
        short[] h = new short[values.length];
        for (int i = 0; i < h.length; i++) {
            h[i] = storage == DType.BF16 ? Half.floatToBf16((float) values[i]) : Half.floatToF16((float) values[i]);
        }
        return MemorySegment.ofArray(h);
    }
}
