#!/usr/bin/env python3
"""Reads the TensorBoard event files of a lora4j training run with TensorBoard's own reader (EventAccumulator)
and checks them against the run's metrics.jsonl: every scalar logged there must be in the event file, at the same
step, with the same value (as float32, which is what an event stores).

  python3 tools/read_tensorboard.py OUTPUT_DIR      # OUTPUT_DIR of `lora4j train` (holds runs/ and metrics.jsonl)

Prints the tags with their first and last points; exits 1 on any difference. Needs the `tensorboard` package.
"""
import glob
import json
import math
import os
import struct
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def main(out_dir):
    files = sorted(glob.glob(os.path.join(out_dir, "runs", "*", "events.out.tfevents.*")))
    if not files:
        print(f"no event files under {out_dir}/runs", file=sys.stderr)
        return 1
    run = os.path.dirname(files[-1])
    acc = EventAccumulator(run, size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags()["scalars"]
    scalars = {t: {e.step: e.value for e in acc.Scalars(t)} for t in tags}
    for t in sorted(tags):
        points = acc.Scalars(t)
        print(f"{t}: {len(points)} points, step {points[0].step} = {points[0].value:.6g} ... step {points[-1].step} = {points[-1].value:.6g}")

    problems = 0
    checked = 0
    with open(os.path.join(out_dir, "metrics.jsonl"), encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            step = record["step"]
            if "train_loss" in record:
                continue  # the end-of-run summary is not a TensorBoard scalar
            prefix = "eval/" if "eval_loss" in record else "train/"
            for key, value in record.items():
                if key == "step" or not isinstance(value, (int, float)):
                    continue
                tag = prefix + (key[5:] if key.startswith("eval_") else key)
                got = scalars.get(tag, {}).get(step)
                if got is None:
                    print(f"missing: {tag} at step {step}", file=sys.stderr)
                    problems += 1
                elif not (got == f32(value) or (math.isnan(got) and math.isnan(value))):
                    print(f"differs: {tag} at step {step}: event file {got!r}, metrics.jsonl {value!r}", file=sys.stderr)
                    problems += 1
                checked += 1
    print(f"{checked} scalars of metrics.jsonl checked against {os.path.basename(files[-1])}: {problems} problem(s)")
    if "train/loss" not in tags:
        print("no train/loss tag", file=sys.stderr)
        problems += 1
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
