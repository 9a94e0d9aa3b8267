package dev.lora4j.generate;

import dev.lora4j.io.GenerationConfig;

import java.util.List;

/**
 * How to generate: how many tokens, greedy or sampled (temperature, top-k, top-p), a repetition penalty, the
 * seed, and when to stop. Defaults follow Hugging Face's {@code GenerationConfig}: greedy unless
 * {@code do_sample}, temperature 1, top-k 50, top-p 1, no repetition penalty.
 *
 * @param seed          the sampler's seed; null picks a fresh one (reported in the result, so the run can be repeated)
 * @param stopOnEos     stop when the model emits one of its end-of-sequence tokens
 * @param stopTokenIds  further token ids that end generation (the stop token is kept in the result's ids)
 */
public record GenerationOptions(int maxNewTokens, boolean doSample, double temperature, int topK, double topP,
                                double repetitionPenalty, Long seed, boolean stopOnEos, List<Integer> stopTokenIds) {

    /** Tokens generated when neither the caller nor generation_config.json says. */
    public static final int DEFAULT_MAX_NEW_TOKENS = 256;

    public GenerationOptions {
        if (maxNewTokens < 0) throw new IllegalArgumentException("max new tokens must be >= 0, got " + maxNewTokens);
        if (!(temperature >= 0) || Double.isInfinite(temperature)) {
            throw new IllegalArgumentException("temperature must be >= 0 (0: greedy), got " + temperature);
        }
        if (topK < 0) throw new IllegalArgumentException("top-k must be >= 0 (0: no limit), got " + topK);
        if (!(topP > 0 && topP <= 1)) throw new IllegalArgumentException("top-p must be in (0, 1] (1: no limit), got " + topP);
        if (!(repetitionPenalty > 0) || Double.isInfinite(repetitionPenalty)) {
            throw new IllegalArgumentException("repetition penalty must be positive (1: none), got " + repetitionPenalty);
        }
        stopTokenIds = List.copyOf(stopTokenIds == null ? List.of() : stopTokenIds);
    }

    /** The most likely token each step. */
    public static GenerationOptions greedy(int maxNewTokens) {
        return new GenerationOptions(maxNewTokens, false, 1.0, 50, 1.0, 1.0, null, true, List.of());
    }

    /** Sampling with these settings; top-k 0 and top-p 1 switch those filters off. */
    public static GenerationOptions sampling(int maxNewTokens, double temperature, int topK, double topP, long seed) {
        return new GenerationOptions(maxNewTokens, true, temperature, topK, topP, 1.0, seed, true, List.of());
    }

    /**
     * The model authors' defaults from {@code generation_config.json}, with Hugging Face's defaults for what it
     * leaves out ({@link GenerationConfig#EMPTY} gives greedy decoding of {@link #DEFAULT_MAX_NEW_TOKENS} tokens).
     */
    public static GenerationOptions defaults(GenerationConfig g) {
        GenerationConfig c = g == null ? GenerationConfig.EMPTY : g;
        return new GenerationOptions(
                c.maxNewTokens() != null ? c.maxNewTokens() : DEFAULT_MAX_NEW_TOKENS,
                c.doSample() != null && c.doSample(),
                c.temperature() != null ? c.temperature() : 1.0,
                c.topK() != null ? c.topK() : 50,
                c.topP() != null ? c.topP() : 1.0,
                c.repetitionPenalty() != null ? c.repetitionPenalty() : 1.0,
                null, true, List.of());
    }

    /** Greedy when not sampling, or when the temperature is 0. */
    public boolean isGreedy() {
        return !doSample || temperature == 0;
    }

    public GenerationOptions withMaxNewTokens(int n) {
        return new GenerationOptions(n, doSample, temperature, topK, topP, repetitionPenalty, seed, stopOnEos, stopTokenIds);
    }

    /** Sampling at this temperature (0: greedy). */
    public GenerationOptions withTemperature(double t) {
        return new GenerationOptions(maxNewTokens, t > 0, t, topK, topP, repetitionPenalty, seed, stopOnEos, stopTokenIds);
    }

    public GenerationOptions withTopK(int k) {
        return new GenerationOptions(maxNewTokens, doSample, temperature, k, topP, repetitionPenalty, seed, stopOnEos, stopTokenIds);
    }

    public GenerationOptions withTopP(double p) {
        return new GenerationOptions(maxNewTokens, doSample, temperature, topK, p, repetitionPenalty, seed, stopOnEos, stopTokenIds);
    }

    public GenerationOptions withRepetitionPenalty(double penalty) {
        return new GenerationOptions(maxNewTokens, doSample, temperature, topK, topP, penalty, seed, stopOnEos, stopTokenIds);
    }

    public GenerationOptions withSeed(long s) {
        return new GenerationOptions(maxNewTokens, doSample, temperature, topK, topP, repetitionPenalty, s, stopOnEos, stopTokenIds);
    }

    public GenerationOptions withStopOnEos(boolean stop) {
        return new GenerationOptions(maxNewTokens, doSample, temperature, topK, topP, repetitionPenalty, seed, stop, stopTokenIds);
    }

    public GenerationOptions withStopTokenIds(List<Integer> ids) {
        return new GenerationOptions(maxNewTokens, doSample, temperature, topK, topP, repetitionPenalty, seed, stopOnEos, ids);
    }
}
