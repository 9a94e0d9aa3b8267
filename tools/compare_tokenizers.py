#!/usr/bin/env python3
"""Reference tokenizations from Hugging Face `tokenizers`, for the Java tokenizer to be checked against.

For each tokenizer folder (Llama 3 and Mistral from ../shared/assets/tokenizers, and the small byte-level BPE
that lora4j's BpeTrainer writes, kept as a test fixture) and for a few hundred texts (Moby-Dick chapters and
State of the Union addresses from ../shared/assets/text, plus hand-picked tricky strings: scripts, emoji, digit
runs, whitespace runs, special tokens written in the text), it records as JSONL:

  {"kind": "tokenizer", "name": ..., "path": ...}          once per tokenizer, path relative to the repo root
  {"kind": "case", "tokenizer": ..., "source": ..., "text": ...,
   "ids": encode(text, add_special_tokens=False), "ids_special": encode(text) (default special tokens),
   "decoded": decode(ids), "decoded_skip": decode(ids_special, skip_special_tokens=True),
   "stream": [DecodeStream chunk per id of ids, "" where it returns None]}   (stream: tricky strings only)

The JUnit test dev.lora4j.tokenizer.TokenizerComparisonTest reads that file (path in LORA4J_TOKENIZER_EXPECTED),
encodes and decodes every case with lora4j's Tokenizer, writes a report (path in LORA4J_TOKENIZER_RESULTS) and
fails on any difference. It skips when LORA4J_TOKENIZER_EXPECTED is unset.

When ../shared/assets/text is absent (the device bundle carries only the tokenizers), the paragraphs of the
training corpus in lora4j-core/src/main/resources/dev/lora4j/tokenizer/corpus.txt stand in for it.

On the GPU machine (python3 with tokenizers 0.23, no JDK): build the bundle here first
(scripts/device-bundle.sh), then run there, from the repository root, this one command (device-run.sh unpacks
the runtime and the tokenizers into ../shared first, so it goes first):

    scripts/device-run.sh java -version >/dev/null 2>&1; \
    python3 tools/compare_tokenizers.py --out /tmp/tokenizer-expected.jsonl \
      && gzip -kf /tmp/tokenizer-expected.jsonl && cp /tmp/tokenizer-expected.jsonl.gz $OUT/ \
      && LORA4J_TOKENIZER_EXPECTED=/tmp/tokenizer-expected.jsonl \
         LORA4J_TOKENIZER_RESULTS=$OUT/tokenizer-comparison.txt \
         scripts/device-run.sh tests --include-classname '.*TokenizerComparisonTest'

$OUT/tokenizer-comparison.txt then holds the per-tokenizer counts and every mismatch. To re-check here later
with the file brought back:
    LORA4J_TOKENIZER_EXPECTED=/path/to/tokenizer-expected.jsonl.gz mvn -pl lora4j-core test \
      -Dtest=TokenizerComparisonTest -Dsurefire.failIfNoSpecifiedTests=false
"""
import argparse
import json
import os
import sys

TRICKY = [
    "", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n \n ", "\t\t\n  \n", "trailing   ", "   leading",
    "Hello world", " Hello world", "Hello  world", "Hello\n\nworld", "Hello\u00a0world", "a\u3000b", "line\u2028sep",
    "I'm, you're, he's, we've, they'd, she'll", "I'M YOU'RE HE'S WE'VE THEY'D SHE'LL", "'s'S'll'LL", "\u017f 's \u212a",
    "3", "33", "333", "3333", "12345678901234567890", "3.14159, 2,718,281", "\u0661\u0662\u0663 \u096b\u096c", "\u00bd \u2167 \u2460",
    "!!!!!!", "...---...", "a-b--c---d", "C++ & C#; x+=1; i<=n", "def f(x):\n    return x**2\n",
    "F\u00fchrer \u00c4pfel na\u00efve caf\u00e9 e\u0301 n\u0303", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8", "\u4e2d\u6587\u5b57\u7b26\u4e32\u6d4b\u8bd5",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645", "\u05e9\u05dc\u05d5\u05dd", "\u043f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35", "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8", "\u1780\u17b6\u1793\u17cb\u178f\u17c2",
    "\U0001d518\U0001d52b\U0001d526\U0001d520\U0001d52c\U0001d521\U0001d522", "emoji \U0001f680 \U0001f636\u200d\U0001f32b\ufe0f \u2705 \U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 \U0001f1fa\U0001f1f8",
    "\x00\x01\x1b[31mred\x1b[0m\x7f", "tab\tseparated\tvalues", "zero\u200bwidth\u200djoiner", "\ufeffBOM",
    "<s>", "</s>", "<unk>", "<s>Hello</s>", "Hello <s> world", "[INST] What is 2+2? [/INST]",
    "<|begin_of_text|>", "<|eot_id|>", "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
    "<|reserved_special_token_5|>", "<|eot_id", "<|not_a_token|>", "x<|end_of_text|>y", "<|user|>hi<|assistant|>",
    "Call me Ishmael. Some years ago\u2014never mind how long precisely\u2014having little or no money in my purse.",
]


def text_cases(shared, root, max_chars):
    text_dir = os.path.join(shared, "assets", "text")
    if not os.path.isfile(os.path.join(text_dir, "moby-dick-chapters.jsonl")):
        # The device bundle carries only the tokenizers; the training corpus in the tree is public-domain text too.
        corpus = os.path.join(root, "lora4j-core", "src", "main", "resources", "dev", "lora4j", "tokenizer", "corpus.txt")
        print("note: %s is absent; using the paragraphs of %s" % (text_dir, corpus))
        with open(corpus, encoding="utf-8") as f:
            paragraphs = [p for p in f.read().split("\n\n") if p.strip()]
        cases = [("corpus:p%d" % i, p[:max_chars]) for i, p in enumerate(paragraphs)]
        cases += [("corpus:pairs%d" % i, "\n\n".join(paragraphs[i:i + 2])[:max_chars]) for i in range(0, len(paragraphs), 7)]
        return cases
    cases = []
    with open(os.path.join(text_dir, "moby-dick-chapters.jsonl"), encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            cases.append(("moby-dick:" + r["chapter"], r["text"][:max_chars]))
    with open(os.path.join(text_dir, "sotu-1790-1989.jsonl"), encoding="utf-8") as f:
        for i, line in enumerate(f):
            r = json.loads(line)
            if i % 2 == 0:
                cases.append(("sotu:%s" % r["year"], r["text"][:max_chars]))
            # Paragraph-sized pieces too: short texts exercise the start-of-text rules.
            for j, para in enumerate(p for p in r["text"].split("\n\n") if p.strip()):
                if j < 2 and i % 5 == 0:
                    cases.append(("sotu:%s:p%d" % (r["year"], j), para))
    return cases


def stream_chunks(tok, ids):
    try:
        from tokenizers.decoders import DecodeStream
    except ImportError:
        return None
    ds = DecodeStream(skip_special_tokens=False)
    try:
        return [ds.step(tok, i) or "" for i in ids]
    except Exception:  # the reference refuses some invalid byte runs; such cases are compared without a stream
        return None


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    default_shared = os.path.normpath(os.path.join(root, "..", "shared"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSONL file to write")
    ap.add_argument("--shared", default=default_shared, help="the shared folder (default: ../shared)")
    ap.add_argument("--tokenizer", action="append", default=[], metavar="NAME=DIR",
                    help="a tokenizer folder to include (default: llama3, mistral and the trained fixture)")
    ap.add_argument("--max-chars", type=int, default=8000, help="truncate long texts to this many characters")
    args = ap.parse_args()
    try:
        from tokenizers import Tokenizer
        import tokenizers
    except ImportError:
        sys.exit("compare_tokenizers.py needs Hugging Face tokenizers: pip install tokenizers")

    folders = [t.split("=", 1) for t in args.tokenizer] or [
        ("llama3", os.path.join(args.shared, "assets", "tokenizers", "llama3")),
        ("mistral", os.path.join(args.shared, "assets", "tokenizers", "mistral")),
        ("trained-bpe", os.path.join(root, "lora4j-core", "src", "test", "resources", "dev", "lora4j", "tokenizer", "trained-bpe")),
    ]
    cases = text_cases(args.shared, root, args.max_chars)
    written = 0
    with open(args.out, "w", encoding="utf-8") as out:
        for name, folder in folders:
            tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
            rel = os.path.relpath(os.path.abspath(folder), root)
            out.write(json.dumps({"kind": "tokenizer", "name": name, "path": rel,
                                  "tokenizers_version": tokenizers.__version__}) + "\n")
            for source, text in [("tricky:%d" % i, t) for i, t in enumerate(TRICKY)] + cases:
                ids = tok.encode(text, add_special_tokens=False).ids
                ids_special = tok.encode(text).ids
                case = {"kind": "case", "tokenizer": name, "source": source, "text": text, "ids": ids,
                        "ids_special": ids_special, "decoded": tok.decode(ids, skip_special_tokens=False),
                        "decoded_skip": tok.decode(ids_special, skip_special_tokens=True)}
                if source.startswith("tricky:"):
                    chunks = stream_chunks(tok, ids)
                    if chunks is not None:
                        case["stream"] = chunks
                out.write(json.dumps(case, ensure_ascii=False) + "\n")
                written += 1
    print("wrote %d cases for %d tokenizers to %s (tokenizers %s)" % (written, len(folders), args.out, tokenizers.__version__))


if __name__ == "__main__":
    main()
