#!/usr/bin/env python3
"""Derives lora4j-train's bundled demo datasets from the public-domain texts in ../shared/assets/text.

  sotu-presidents-train.jsonl / -eval.jsonl: prompt/completion records, "Who gave the State of the Union address
      in 1862?" -> " Abraham Lincoln.", one per address (1790-1989), shuffled with a fixed seed, 21 held out.
  moby-dick-passages.jsonl: text records, passages of whole sentences (at most 280 characters) from the first
      chapters of Moby-Dick.

Run from the repository root:  python3 tools/make_demo_datasets.py [path/to/shared/assets/text]
The output is deterministic; rerunning it rewrites the same files.
"""
import json
import random
import re
import sys
from pathlib import Path

text_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/assets/text")
out = Path("lora4j-train/src/main/resources/dev/lora4j/train/datasets")
out.mkdir(parents=True, exist_ok=True)


def write(name, records):
    with open(out / name, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


addresses = [json.loads(line) for line in open(text_dir / "sotu-1790-1989.jsonl", encoding="utf-8")]
records = [{"prompt": f"Who gave the State of the Union address in {a['year']}?", "completion": f" {a['name']}."}
           for a in addresses]
random.Random(1).shuffle(records)
write("sotu-presidents-train.jsonl", records[:-21])
write("sotu-presidents-eval.jsonl", records[-21:])

passages = []
for line in open(text_dir / "moby-dick-chapters.jsonl", encoding="utf-8"):
    chapter = json.loads(line)
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(chapter["text"].split()))
    current = ""
    for s in sentences:
        if len(s) > 280:
            continue
        if current and len(current) + 1 + len(s) > 280:
            passages.append(current)
            current = ""
        current = f"{current} {s}".strip()
    if current:
        passages.append(current)
    if len(passages) >= 400:
        break
write("moby-dick-passages.jsonl", [{"text": p} for p in passages[:400]])
print(f"wrote {len(records) - 21} + 21 State of the Union records and {min(400, len(passages))} Moby-Dick passages to {out}")
