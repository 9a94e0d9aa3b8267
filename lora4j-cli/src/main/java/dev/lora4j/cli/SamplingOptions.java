package dev.lora4j.cli;

import dev.lora4j.generate.GenerationOptions;
import picocli.CommandLine.Option;

/** The decoding options of {@code generate} and {@code demo}, applied over the model's generation_config.json. */
final class SamplingOptions {
    @Option(names = "--max-new-tokens", description = "Tokens to generate at most (default: generation_config.json, else 256).")
    Integer maxNewTokens;

    @Option(names = "--greedy", description = "Always take the most likely token (overrides the model's do_sample).")
    boolean greedy;

    @Option(names = "--temperature", description = "Sample at this temperature (0: greedy).")
    Double temperature;

    @Option(names = "--top-k", description = "Sample among the k most likely tokens (0: no limit).")
    Integer topK;

    @Option(names = "--top-p", description = "Sample within the smallest set of tokens whose probability reaches p.")
    Double topP;

    @Option(names = "--repetition-penalty", description = "Penalise tokens already present (1: none).")
    Double repetitionPenalty;

    @Option(names = "--seed", description = "Seed of the sampler, for a repeatable run.")
    Long seed;

    @Option(names = "--ignore-eos", description = "Keep generating past end-of-sequence tokens (for benchmarks).")
    boolean ignoreEos;

    GenerationOptions over(GenerationOptions defaults) {
        GenerationOptions o = defaults;
        if (maxNewTokens != null) o = o.withMaxNewTokens(maxNewTokens);
        if (temperature != null) o = o.withTemperature(temperature);
        if (topK != null) o = o.withTopK(topK);
        if (topP != null) o = o.withTopP(topP);
        if (repetitionPenalty != null) o = o.withRepetitionPenalty(repetitionPenalty);
        if (seed != null) o = o.withSeed(seed);
        if (greedy) o = o.withTemperature(0);
        if (ignoreEos) o = o.withStopOnEos(false);
        return o;
    }
}
