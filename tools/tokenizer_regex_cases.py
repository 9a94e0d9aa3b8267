#!/usr/bin/env python3
"""Reference splits for the pre-tokenization regexes of byte-level tokenizers, for the Java translation of
those Oniguruma patterns (dev.lora4j.tokenizer.SplitRegex) to be checked against.

Python's `regex` module implements the same constructs as Oniguruma for these patterns (Unicode properties,
Unicode-aware \\s and (?i), lookahead, possessive quantifiers) and is independent of java.util.regex. For each
pattern and each test string it records the list of matched substrings (what a Split pre-tokenizer with
behavior Isolated keeps as words).

Usage, from the repository root (python3 with the `regex` package):
    python3 tools/tokenizer_regex_cases.py lora4j-core/src/test/resources/dev/lora4j/tokenizer/regex-splits.json
"""
import json
import sys

import regex

PATTERNS = {
    "gpt2": r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
    "llama3": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "cl100k-possessive": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",
    "o200k": r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
             r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
             r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "han-script": r"\p{Han}+|\P{Han}+",
}

TEXTS = [
    "Hello world", " Hello world", "Hello  world", "   leading and trailing   ", "\n", "\n\n\n", " \n \n ", "\t\t\n  \n",
    "\r\n\r\nwindows\r\n", "I'm you're he's we've they'd she'll", "I'M YOU'RE HE'S WE'VE THEY'D SHE'LL", "'s'S'll'LL",
    "don't DON'T Don'T", "12345678901234567890", "3.14159, 2,718,281", "\u0661\u0662\u0663 \u096b\u096c \u00bd \u2167",
    "!!!!!! ...--- a-b--c", "C++ & C#; x+=1; i<=n", "def f(x):\n    return x**2\n\n\nclass A:\n\tpass",
    "F\u00fchrer \u00c4pfel na\u00efve caf\u00e9 e\u0301 n\u0303", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 and \u4e2d\u6587",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645", "\u043f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440 \u041f\u0420\u0418\u0412\u0415\u0422",
    "\u1780\u17b6\u1793\u17cb\u178f\u17c2", "\U0001d518\U0001d52b\U0001d526 bold \U0001d400\U0001d401",
    "emoji \U0001f680 \U0001f636\u200d\U0001f32b\ufe0f \u2705 \U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f1fa\U0001f1f8",
    "\x00\x01\x1b[31mred\x1b[0m\x7f", "no\u00a0break\u00a0space", "ideographic\u3000space", "line\u2028separator\u2029para",
    "zero\u200bwidth\u200djoiner", "\ufeffBOM", "camelCaseWords andHTTPServer XMLHttpRequest", "https://example.com/a/b?c=d&e=f",
    "path/to/file.txt // comment /* block */", "    Hello\n    Hello", "\u017f 's \u212a", "ied 4 \u00bd months",
]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    cases = []
    for name, pattern in PATTERNS.items():
        compiled = regex.compile(pattern)
        for text in TEXTS:
            cases.append({"pattern": name, "regex": pattern, "text": text,
                          "matches": [m.group() for m in compiled.finditer(text)]})
    with open(sys.argv[1], "w", encoding="utf-8") as out:
        json.dump({"regex_version": regex.__version__, "cases": cases}, out, ensure_ascii=False, indent=1)
        out.write("\n")
    print("wrote %d cases to %s" % (len(cases), sys.argv[1]))


if __name__ == "__main__":
    main()
