package dev.lora4j.generate;

/**
 * What a generation produced: the generated ids (a stop token that ended it included, as transformers returns
 * it), their text (special tokens skipped), why it stopped, the seed the sampler used, and how fast it went.
 */
public record GenerationResult(int[] promptTokens, int[] tokens, String text, StopReason stopReason, long seed,
                               Timings timings) {

    public enum StopReason {
        /** The model emitted an end-of-sequence or stop token. */
        EOS,
        /** The requested number of new tokens was generated. */
        MAX_TOKENS
    }

    /**
     * Prefill: the prompt's forward pass, up to the first generated token's logits. Decode: the token-by-token
     * part, each step one forward pass of one position plus sampling.
     */
    public record Timings(int prefillTokens, long prefillNanos, int decodeTokens, long decodeNanos) {
        public double prefillTokensPerSecond() { return perSecond(prefillTokens, prefillNanos); }

        public double decodeTokensPerSecond() { return perSecond(decodeTokens, decodeNanos); }

        private static double perSecond(int tokens, long nanos) {
            return nanos <= 0 ? 0 : tokens * 1e9 / nanos;
        }
    }

    public GenerationResult {
        promptTokens = promptTokens.clone();
        tokens = tokens.clone();
    }

    @Override public int[] promptTokens() { return promptTokens.clone(); }

    @Override public int[] tokens() { return tokens.clone(); }

    public int generatedCount() { return tokens.length; }
}
