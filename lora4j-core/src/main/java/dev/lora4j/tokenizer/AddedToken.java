package dev.lora4j.tokenizer;

/**
 * An entry of tokenizer.json's added_tokens: a string recognised whole in the input before anything else
 * happens to it. special tokens are the ones decode can skip; normalized ones are matched after normalization.
 */
record AddedToken(int id, String content, boolean singleWord, boolean lstrip, boolean rstrip, boolean normalized, boolean special) {}
