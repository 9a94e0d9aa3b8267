package dev.lora4j.model;

import dev.lora4j.tensor.Tensor;

/**
 * The seven Linear projections of a Llama-family decoder layer, named after their Hugging Face modules, in the
 * order transformers registers them (attention q, k, v, o, then the MLP's gate, up, down).
 */
public enum Projection {
    Q("self_attn.q_proj"),
    K("self_attn.k_proj"),
    V("self_attn.v_proj"),
    O("self_attn.o_proj"),
    GATE("mlp.gate_proj"),
    UP("mlp.up_proj"),
    DOWN("mlp.down_proj");

    private final String suffix;

    Projection(String suffix) {
        this.suffix = suffix;
    }

    /** The module's path below a layer: "self_attn.q_proj". */
    public String suffix() { return suffix; }

    /** The last component of the path: "q_proj". */
    public String shortName() { return suffix.substring(suffix.indexOf('.') + 1); }

    /** The module's path in the model: "model.layers.3.self_attn.q_proj". */
    public String path(int layer) { return "model.layers." + layer + "." + suffix; }

    public int inFeatures(LlamaShape s) {
        return switch (this) {
            case Q, K, V, GATE, UP -> s.hiddenSize();
            case O -> s.queryDim();
            case DOWN -> s.intermediateSize();
        };
    }

    public int outFeatures(LlamaShape s) {
        return switch (this) {
            case Q -> s.queryDim();
            case K, V -> s.kvDim();
            case O, DOWN -> s.hiddenSize();
            case GATE, UP -> s.intermediateSize();
        };
    }

    public boolean hasBias(LlamaShape s) {
        return switch (this) {
            case Q, K, V -> s.qkvBias();
            case O -> s.outputBias();
            case GATE, UP, DOWN -> s.mlpBias();
        };
    }

    public Tensor weight(LlamaWeights.Layer l) {
        return switch (this) {
            case Q -> l.qProj();
            case K -> l.kProj();
            case V -> l.vProj();
            case O -> l.oProj();
            case GATE -> l.gateProj();
            case UP -> l.upProj();
            case DOWN -> l.downProj();
        };
    }

    public Tensor bias(LlamaWeights.Layer l) {
        return switch (this) {
            case Q -> l.qBias();
            case K -> l.kBias();
            case V -> l.vBias();
            case O -> l.oBias();
            case GATE -> l.gateBias();
            case UP -> l.upBias();
            case DOWN -> l.downBias();
        };
    }

    /** The projection whose module path ends with this short name ("q_proj"), or null. */
    public static Projection byShortName(String name) {
        for (Projection p : values()) if (p.shortName().equals(name)) return p;
        return null;
    }
}
