package dev.lora4j.tokenizer;

/**
 * A run of the input on its way through the pipeline: text still to be split and tokenized, or (tokenId >= 0)
 * an added token already recognised. atTextStart says whether the run begins at the very start of the input,
 * which the Metaspace "first" prepend scheme needs to know.
 */
record Piece(String text, int tokenId, boolean atTextStart) {
    static Piece text(String text, boolean atTextStart) {
        return new Piece(text, -1, atTextStart);
    }

    boolean isToken() {
        return tokenId >= 0;
    }
}
