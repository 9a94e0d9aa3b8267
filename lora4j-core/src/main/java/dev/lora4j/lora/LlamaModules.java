package dev.lora4j.lora;

import dev.lora4j.model.LlamaShape;
import dev.lora4j.model.Projection;

import java.util.ArrayList;
import java.util.List;

/**
 * The module tree of a transformers Llama-family model ({@code LlamaForCausalLM}, {@code MistralForCausalLM},
 * {@code Qwen2ForCausalLM}) as {@code named_modules()} lists it, which is what PEFT matches target_modules and
 * modules_to_save against: {@code model}, {@code model.embed_tokens}, {@code model.layers}, {@code model.layers.0},
 * {@code model.layers.0.self_attn}, its four projections, {@code model.layers.0.mlp}, its three projections and
 * {@code act_fn}, the two layer norms, then {@code model.norm}, {@code model.rotary_emb} and {@code lm_head}.
 */
public final class LlamaModules {

    public enum Kind { LINEAR, EMBEDDING, NORM, CONTAINER, NO_PARAMETERS }

    /**
     * One module. {@code layer} is the decoder layer it belongs to (-1 outside the layers); {@code projection} is
     * set for the seven projections of a layer; lm_head is LINEAR with no projection.
     */
    public record Module(String path, Kind kind, int layer, Projection projection) {
        public boolean isOutputLayer() { return path.equals(LM_HEAD); }

        /** The Hugging Face names of the parameters this module holds, itself and below. */
        public List<String> parameterNames(LlamaShape shape) {
            List<String> names = new ArrayList<>();
            for (Module m : of(shape)) {
                if (!(m.path.equals(path) || m.path.startsWith(path + "."))) continue;
                switch (m.kind) {
                    case EMBEDDING, NORM -> names.add(m.path + ".weight");
                    case LINEAR -> {
                        names.add(m.path + ".weight");
                        if (m.projection != null && m.projection.hasBias(shape)) names.add(m.path + ".bias");
                    }
                    default -> { }
                }
            }
            return names;
        }
    }

    public static final String EMBED_TOKENS = "model.embed_tokens";
    public static final String FINAL_NORM = "model.norm";
    public static final String LM_HEAD = "lm_head";

    private LlamaModules() {}

    /** Every module but the root, in named_modules() order. */
    public static List<Module> of(LlamaShape shape) {
        List<Module> all = new ArrayList<>();
        all.add(new Module("model", Kind.CONTAINER, -1, null));
        all.add(new Module(EMBED_TOKENS, Kind.EMBEDDING, -1, null));
        all.add(new Module("model.layers", Kind.CONTAINER, -1, null));
        for (int l = 0; l < shape.numLayers(); l++) {
            String p = "model.layers." + l;
            all.add(new Module(p, Kind.CONTAINER, l, null));
            all.add(new Module(p + ".self_attn", Kind.CONTAINER, l, null));
            for (Projection proj : List.of(Projection.Q, Projection.K, Projection.V, Projection.O)) {
                all.add(new Module(proj.path(l), Kind.LINEAR, l, proj));
            }
            all.add(new Module(p + ".mlp", Kind.CONTAINER, l, null));
            for (Projection proj : List.of(Projection.GATE, Projection.UP, Projection.DOWN)) {
                all.add(new Module(proj.path(l), Kind.LINEAR, l, proj));
            }
            all.add(new Module(p + ".mlp.act_fn", Kind.NO_PARAMETERS, l, null));
            all.add(new Module(p + ".input_layernorm", Kind.NORM, l, null));
            all.add(new Module(p + ".post_attention_layernorm", Kind.NORM, l, null));
        }
        all.add(new Module(FINAL_NORM, Kind.NORM, -1, null));
        all.add(new Module("model.rotary_emb", Kind.NO_PARAMETERS, -1, null));
        all.add(new Module(LM_HEAD, Kind.LINEAR, -1, null));
        return all;
    }

    /** The module at this path, or null. */
    public static Module find(LlamaShape shape, String path) {
        for (Module m : of(shape)) if (m.path.equals(path)) return m;
        return null;
    }
}
