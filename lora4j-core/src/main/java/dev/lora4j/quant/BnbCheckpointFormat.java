package dev.lora4j.quant;

import java.util.List;

/**
 * Names and fixed shapes of the tensors transformers writes for a bitsandbytes 4-bit linear weight
 * ({@code Linear4bit._save_to_state_dict} over {@code QuantState.as_dict(packed=True)}; docs/qlora-format.md).
 * For a weight {@code W} = {@code model.layers.0.self_attn.q_proj.weight}:
 * <pre>
 *   W                                   U8  [ceil(n/2), 1]   packed codes
 *   W.absmax                            F32 [blocks] (U8 [blocks] with double quantization)
 *   W.quant_map                         F32 [16]             the 4-bit code table
 *   W.nested_absmax                     F32 [nested blocks]  double quantization only
 *   W.nested_quant_map                  F32 [256]            double quantization only
 *   W.quant_state.bitsandbytes__nf4     U8  [json bytes]     (or __fp4) see {@link BnbQuantState}
 * </pre>
 */
public final class BnbCheckpointFormat {
    private BnbCheckpointFormat() {}

    public static final String ABSMAX = "absmax";
    public static final String QUANT_MAP = "quant_map";
    public static final String NESTED_ABSMAX = "nested_absmax";
    public static final String NESTED_QUANT_MAP = "nested_quant_map";
    /** What a quant-state tensor's name has between the weight name and the quant type. */
    public static final String QUANT_STATE_INFIX = ".quant_state.bitsandbytes__";

    /**
     * The modules of a Llama-family decoder layer that transformers quantizes (every {@code nn.Linear} but the output
     * layer), relative to {@code model.layers.<i>.}.
     */
    public static final List<String> LAYER_PROJECTIONS = List.of("self_attn.q_proj", "self_attn.k_proj",
            "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj");

    /** {@code <weight>.<part>}, e.g. {@code ...q_proj.weight.absmax}. */
    public static String part(String weightName, String part) {
        return weightName + "." + part;
    }

    /** {@code <weight>.quant_state.bitsandbytes__nf4} (or {@code __fp4}). */
    public static String quantStateName(String weightName, QuantType type) {
        return weightName + QUANT_STATE_INFIX + type.bnbName();
    }

    /** Whether {@code tensorName} is the quant state of some weight. */
    public static boolean isQuantState(String tensorName) {
        return tensorName.contains(QUANT_STATE_INFIX);
    }

    /** The shape transformers gives the packed codes of a weight of {@code numel} elements: {@code [ceil(n/2), 1]}. */
    public static long[] packedShape(long numel) {
        return new long[] {(numel + 1) / 2, 1};
    }

    /**
     * The {@code quant_map} tensor bitsandbytes stores for a type ({@code get_4bit_type}): the code table, with FP4's
     * index 8 as +0.0, because the table literal there is the integer {@code -0}.
     */
    public static float[] quantMap(QuantType type) {
        float[] codes = type.codes();
        for (int i = 0; i < codes.length; i++) codes[i] += 0.0f;  // -0.0f + 0.0f is +0.0f
        return codes;
    }
}
