package dev.lora4j.io;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/**
 * A model folder's {@code generation_config.json}: the model authors' defaults for generation. Every field is
 * nullable (null: not given); {@code eosTokenIds} is never null, empty when not given.
 */
public record GenerationConfig(Integer bosTokenId, List<Integer> eosTokenIds, Integer padTokenId, Boolean doSample,
                               Double temperature, Integer topK, Double topP, Integer maxNewTokens,
                               Double repetitionPenalty) {

    public static final String FILE_NAME = "generation_config.json";

    public static final GenerationConfig EMPTY = new GenerationConfig(null, List.of(), null, null, null, null, null, null, null);

    public GenerationConfig {
        eosTokenIds = List.copyOf(eosTokenIds == null ? List.of() : eosTokenIds);
    }

    /** Reads {@code folder/generation_config.json}, or returns {@link #EMPTY} when the folder has none. */
    public static GenerationConfig load(Path folder) throws IOException {
        Path file = folder.resolve(FILE_NAME);
        if (!Files.exists(file)) return EMPTY;
        return parse(ModelConfig.readUtf8(file), file.toString());
    }

    public static GenerationConfig parse(String json, String sourceName) throws ConfigFormatException {
        JsonFields f = JsonFields.parse(json, sourceName);
        Double temperature = f.optDouble("temperature");
        if (temperature != null && temperature < 0) throw f.invalid("temperature", "must be >= 0, got " + temperature);
        Double topP = f.optDouble("top_p");
        if (topP != null && (topP < 0 || topP > 1)) throw f.invalid("top_p", "must be between 0 and 1, got " + topP);
        Integer topK = f.optInt("top_k");
        if (topK != null && topK < 0) throw f.invalid("top_k", "must be >= 0 (0: no limit), got " + topK);
        Integer maxNewTokens = f.optInt("max_new_tokens");
        if (maxNewTokens != null && maxNewTokens < 0) throw f.invalid("max_new_tokens", "must be >= 0, got " + maxNewTokens);
        Double repetitionPenalty = f.optDouble("repetition_penalty");
        if (repetitionPenalty != null && !(repetitionPenalty > 0)) {
            throw f.invalid("repetition_penalty", "must be positive (1.0: no penalty), got " + repetitionPenalty);
        }
        return new GenerationConfig(f.optInt("bos_token_id"), f.optIntOrIntList("eos_token_id"), f.optInt("pad_token_id"),
                f.optBoolean("do_sample"), temperature, topK, topP, maxNewTokens, repetitionPenalty);
    }
}
