#!/usr/bin/env python3
"""Naive reference tokenizer for SentencePiece-style BPE tokenizer.json files (Llama 2, Mistral).

It is deliberately written the slow, obvious way (repeatedly merge the lowest-rank adjacent pair, leftmost
first) so that it shares no code or data structures with the Java tokenizer it checks. It understands exactly
what Mistral-7B's tokenizer.json uses: non-normalized added tokens, the normalizer Sequence[Prepend("▁"),
Replace(" ", "▁")], no pre-tokenizer, a BPE model with byte_fallback, and a TemplateProcessing that adds <s>.

Usage (writes the expected ids of the built-in cases as JSONL, one {"text", "ids"} per line, ids without BOS):
    python3 tools/reference_tokenizer.py ../shared/assets/tokenizers/mistral/tokenizer.json \
        lora4j-core/src/test/resources/dev/lora4j/tokenizer/mistral-reference.jsonl
"""
import json
import sys

CASES = [
    "Hello world",
    " Hello world",
    "Hello  world",
    "Hello\nworld",
    "\n",
    " ",
    "   ",
    "\t",
    "Hello, y'all! How are you?",
    "3.14159 and 1,000,000",
    "Führer Äpfel naïve café",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "日本語のテキスト",
    "emoji 🚀 and 😶‍🌫️",
    "<s>Hello</s>",
    "Hello <s> world",
    "[INST] What is 2+2? [/INST]",
    "tab\tseparated\tvalues",
    "trailing spaces   ",
    "Call me Ishmael. Some years ago—never mind how long precisely—having little or no money in my purse.",
]


def load(path):
    with open(path, encoding="utf-8") as f:
        tok = json.load(f)
    model = tok["model"]
    vocab = model["vocab"]
    ranks = {}
    for rank, merge in enumerate(model["merges"]):
        pair = tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge)
        ranks.setdefault(pair, rank)
    added = {t["content"]: t["id"] for t in tok["added_tokens"]}
    return vocab, ranks, added


def split_added(text, added):
    """Leftmost match first, longest match at that position."""
    pieces, start, i = [], 0, 0
    while i < len(text):
        best = None
        for content in added:
            if text.startswith(content, i) and (best is None or len(content) > len(best)):
                best = content
        if best is None:
            i += 1
            continue
        if start < i:
            pieces.append((text[start:i], None))
        pieces.append((best, added[best]))
        i += len(best)
        start = i
    if start < len(text):
        pieces.append((text[start:], None))
    return pieces


def bpe(word, vocab, ranks):
    symbols = []
    for ch in word:
        if ch in vocab:
            symbols.append(ch)
        else:
            symbols.extend("<0x%02X>" % b for b in ch.encode("utf-8"))
    while True:
        best = None
        for i in range(len(symbols) - 1):
            r = ranks.get((symbols[i], symbols[i + 1]))
            if r is not None and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            break
        i = best[1]
        symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
    return [vocab[s] for s in symbols]


def encode(text, vocab, ranks, added):
    ids = []
    for piece, token_id in split_added(text, added):
        if token_id is not None:
            ids.append(token_id)
            continue
        normalized = "\u2581" + piece.replace(" ", "\u2581")
        ids.extend(bpe(normalized, vocab, ranks))
    return ids


def main():
    vocab, ranks, added = load(sys.argv[1])
    with open(sys.argv[2], "w", encoding="utf-8") as out:
        for text in CASES:
            out.write(json.dumps({"text": text, "ids": encode(text, vocab, ranks, added)}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
