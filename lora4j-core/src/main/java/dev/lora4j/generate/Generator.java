package dev.lora4j.generate;

import dev.lora4j.model.KvCache;
import dev.lora4j.model.LlamaModel;
import dev.lora4j.tokenizer.StreamingDecoder;
import dev.lora4j.tokenizer.Tokenizer;

import java.util.Arrays;
import java.util.BitSet;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.function.Consumer;

/**
 * Autoregressive generation with a KV cache: one forward pass over the prompt (prefill), then one position per
 * new token (decode), sampling each token from the last logits and streaming its text as soon as it is complete.
 * The cache is kept between calls and grown when a longer sequence needs it. Not thread-safe.
 */
public final class Generator implements AutoCloseable {
    private final LlamaModel model;
    private final Tokenizer tokenizer;
    private final Set<Integer> eosTokenIds;
    private KvCache cache;

    /**
     * @param tokenizer   turns ids into text; null to generate ids only (the result's text is then empty)
     * @param eosTokenIds the model's end-of-sequence ids (from generation_config.json, config.json or the tokenizer)
     */
    public Generator(LlamaModel model, Tokenizer tokenizer, Set<Integer> eosTokenIds) {
        this.model = model;
        this.tokenizer = tokenizer;
        this.eosTokenIds = Set.copyOf(eosTokenIds);
    }

    public Set<Integer> eosTokenIds() { return eosTokenIds; }

    /**
     * Generates after {@code prompt}. {@code streamer} (may be null) receives the text of each token as it becomes
     * complete; the pieces concatenate to the result's text.
     */
    public GenerationResult generate(int[] prompt, GenerationOptions options, Consumer<String> streamer) {
        if (prompt.length == 0) {
            throw new IllegalArgumentException("the prompt has no tokens: give some text, or a tokenizer that adds a BOS token");
        }
        int capacity = prompt.length + Math.max(options.maxNewTokens(), 1);
        KvCache kv = cacheFor(capacity);
        long seed = options.seed() != null ? options.seed() : freshSeed();
        Sampler sampler = Sampler.of(options, seed);
        float penalty = (float) options.repetitionPenalty();
        BitSet seen = new BitSet();
        if (penalty != 1f) for (int t : prompt) seen.set(t);
        Set<Integer> stops = new LinkedHashSet<>(options.stopTokenIds());
        if (options.stopOnEos()) stops.addAll(eosTokenIds);
        StreamingDecoder decoder = tokenizer == null ? null : tokenizer.streamingDecoder(true);
        StringBuilder text = new StringBuilder();

        int[] generated = new int[options.maxNewTokens()];
        int count = 0;
        GenerationResult.StopReason reason = GenerationResult.StopReason.MAX_TOKENS;
        long start = System.nanoTime();
        kv.reset();
        float[] logits = options.maxNewTokens() == 0 ? null : model.forward(prompt, 0, kv);
        long prefillEnd = System.nanoTime();
        int decodeSteps = 0;
        while (count < options.maxNewTokens()) {
            if (penalty != 1f) RepetitionPenalty.apply(logits, seen, penalty);
            int token = sampler.sample(logits);
            generated[count++] = token;
            seen.set(token);
            if (decoder != null) emit(decoder.push(token), text, streamer);
            if (stops.contains(token)) {
                reason = GenerationResult.StopReason.EOS;
                break;
            }
            if (count == options.maxNewTokens()) break;
            logits = model.forward(new int[]{token}, prompt.length + count - 1, kv);
            decodeSteps++;
        }
        long end = System.nanoTime();
        if (decoder != null) emit(decoder.flush(), text, streamer);
        var timings = new GenerationResult.Timings(prompt.length, prefillEnd - start, decodeSteps, end - prefillEnd);
        return new GenerationResult(prompt, Arrays.copyOf(generated, count), text.toString(), reason, seed, timings);
    }

    /** Greedy continuation of {@code prompt}: the ids only, no text, no stopping except on length. */
    public int[] greedyTokens(int[] prompt, int maxNewTokens) {
        return generate(prompt, GenerationOptions.greedy(maxNewTokens).withStopOnEos(false), null).tokens();
    }

    private static void emit(String piece, StringBuilder text, Consumer<String> streamer) {
        if (piece.isEmpty()) return;
        text.append(piece);
        if (streamer != null) streamer.accept(piece);
    }

    private KvCache cacheFor(int capacity) {
        if ((long) capacity > model.shape().positionLimit()) {
            throw new IllegalArgumentException("prompt and new tokens make " + capacity + " positions, more than the "
                    + model.shape().positionLimit() + " this model runs (max_position_embeddings)");
        }
        if (cache == null || cache.capacity() < capacity) {
            if (cache != null) cache.close();
            cache = null;
            // Round up so a conversation that grows a little at a time does not reallocate at every turn.
            int rounded = (int) Math.min(model.shape().positionLimit(), Math.max(capacity, (capacity + 255L) / 256 * 256));
            cache = model.newCache(rounded);
        }
        return cache;
    }

    private static long freshSeed() {
        return new SplittableRandom().nextLong();
    }

    /** The end-of-sequence ids to stop on: generation_config.json's when it names any, else config.json's, else the tokenizer's. */
    public static Set<Integer> eosIds(List<Integer> generationConfigEos, List<Integer> configEos, Tokenizer tokenizer) {
        Set<Integer> ids = new LinkedHashSet<>();
        if (generationConfigEos != null) ids.addAll(generationConfigEos);
        if (ids.isEmpty() && configEos != null) ids.addAll(configEos);
        if (ids.isEmpty() && tokenizer != null) tokenizer.eosTokenId().ifPresent(ids::add);
        return ids;
    }

    /** Frees the KV cache; the model stays open. */
    @Override
    public void close() {
        if (cache != null) cache.close();
        cache = null;
    }
}
