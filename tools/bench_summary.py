"""The summary table of scripts/device-bench.sh: for each configuration folder (reference.txt with
hf_peft_bench.py's RESULT line, lora4j.json from `lora4j bench --json`), the two stacks' figures side by side and
the targets of the GPU-performance work. Several bench folders may be given: separate device commands, or the rounds
of one (BENCH_ROUNDS). A configuration found in several gets a row per folder, named "config (run i)", and a line
of the runs' ratios with their median: the clock moves both stacks' figures by a few percent from one run to the
next, so a target met by a few percent is judged on the median of alternating runs rather than on one.

    python3 tools/bench_summary.py OUT/bench [OUT2/bench ...] [--markdown summary.md] [--json summary.json]

Sequence-length sweeps (folders named seq-sweep-*: reference.txt with one RESULT line per length, lora4j.json with
one row per length) get a second table: the peak at each length, and the longest length within 24 GiB.
"""
import argparse, json, os, statistics, sys

GIB = 2 ** 30

# The targets of the GPU-performance work (issue 5), per configuration folder name.
TARGETS = {
    "lora-qv": "samples/s >= 1.3x reference, peak <= reference",
    "lora-all-gc": "samples/s >= 2x reference, peak <= 16 GiB",
    "qlora-all-gc": "samples/s >= 0.9x lora4j lora-all-gc, peak <= 7 GiB",
    "full-gc": "samples/s >= 1.2x reference",
    "full-bf16-gc": "samples/s >= 1.2x reference",
    "qlora-70b-mb1": "peak <= 48 GiB",
}


ORDER = ["lora-qv", "lora-all", "lora-all-gc", "qlora-all-gc", "full-gc", "full-bf16-gc", "lora-all-gc-llama3-8b",
         "qlora-all-gc-llama3-8b", "qlora-llama3-8b-mb1", "qlora-70b-mb1"]


def reference_result(folder):
    path = os.path.join(folder, "reference.txt")
    if not os.path.exists(path):
        return None
    found = None
    with open(path) as f:
        for line in f:
            if line.startswith("RESULT "):
                found = json.loads(line[len("RESULT "):])
    return found or {"error": "no RESULT line (see reference.txt)"}


def lora4j_result(folder):
    path = os.path.join(folder, "lora4j.json")
    if not os.path.exists(path):
        return {"error": "no lora4j.json (see lora4j.txt)"}
    with open(path) as f:
        doc = json.load(f)
    results = doc.get("results") or [{}]
    r = dict(results[0])
    r["gemm_tflops"] = (doc.get("gemm_peak") or {}).get("tflops")
    return r


def met(name, ref, ours, rows):
    """Whether the target of `name` is met: True, False, or None when a figure is missing."""
    sps, peak = ours.get("samples_per_s"), ours.get("peak_bytes")
    if sps is None or peak is None:
        return None
    peak_gib = peak / GIB
    ref_sps = ref.get("samples_per_s") if ref else None
    if name == "lora-qv":
        return None if ref_sps is None else sps >= 1.3 * ref_sps and peak_gib <= ref["peak_gib"]
    if name == "lora-all-gc":
        return None if ref_sps is None else sps >= 2 * ref_sps and peak_gib <= 16
    if name == "qlora-all-gc":
        lora = rows.get("lora-all-gc", {}).get("lora4j", {}).get("samples_per_s")
        return None if lora is None else sps >= 0.9 * lora and peak_gib <= 7
    if name in ("full-gc", "full-bf16-gc"):
        return None if ref_sps is None else sps >= 1.2 * ref_sps
    if name == "qlora-70b-mb1":
        return peak_gib <= 48
    return None


BUDGET_GIB = 24


def reference_results(folder):
    """Every RESULT line of a sweep's reference.txt, by sequence length."""
    path = os.path.join(folder, "reference.txt")
    found = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.startswith("RESULT "):
                    r = json.loads(line[len("RESULT "):])
                    found[r["seq"]] = r
    return found


def sweep_table(name, folder):
    """Peak memory by sequence length for both stacks, and the longest length each trains within BUDGET_GIB."""
    ref = reference_results(folder)
    ours = {}
    path = os.path.join(folder, "lora4j.json")
    if os.path.exists(path):
        with open(path) as f:
            for r in json.load(f).get("results", []):
                ours[r["seq"]] = r
    lines = ["| %s: seq | reference peak | reference tokens/s | lora4j peak | lora4j tokens/s |" % name,
             "|---|---|---|---|---|"]
    for seq in sorted(set(ref) | set(ours)):
        r, o = ref.get(seq, {}), ours.get(seq, {})
        lines.append("| %d | %s | %s | %s | %s |" % (
            seq,
            r["error"] if "error" in r else fmt(r.get("peak_gib"), ".2f") + " GiB" if r else "-",
            fmt(r.get("tokens_per_s"), ",") if r else "-",
            o["error"] if "error" in o else fmt(o.get("peak_gib"), ".2f") + " GiB" if o else "-",
            fmt(o.get("tokens_per_s"), ",") if o else "-"))

    def longest(rows):
        ok = [s for s, r in rows.items() if "error" not in r and r.get("peak_gib") is not None
              and r["peak_gib"] <= BUDGET_GIB]
        return max(ok) if ok else None

    lines.append("")
    lines.append("Longest measured sequence within %d GiB: reference %s, lora4j %s." % (
        BUDGET_GIB, fmt(longest(ref), "d") if ref else "not run", fmt(longest(ours), "d")))
    return "\n".join(lines) + "\n", {"reference": ref, "lora4j": ours, "longest_reference": longest(ref),
                                     "longest_lora4j": longest(ours)}


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("folders", nargs="+", help="bench output folders holding one folder per configuration")
    p.add_argument("--markdown")
    p.add_argument("--json")
    a = p.parse_args()
    runs, sweeps = [], {}  # runs: one {configuration: data} per folder, in the order given
    for top in a.folders:
        found = {}
        for name in sorted(os.listdir(top)):
            folder = os.path.join(top, name)
            if not os.path.isdir(folder):
                continue
            if name.startswith("seq-sweep-"):
                sweeps[name] = sweep_table(name, folder)
            else:
                found[name] = {"reference": reference_result(folder), "lora4j": lora4j_result(folder)}
        runs.append(found)
    names = {n for found in runs for n in found}
    # The target table's order first, then the other configurations by name.
    order = [n for n in ORDER if n in names] + sorted(n for n in names if n not in ORDER)
    counts = {n: sum(1 for found in runs if n in found) for n in order}
    rows, ratios = {}, {}
    lines = ["| configuration | reference samples/s | reference peak | reference loss | lora4j samples/s | lora4j peak"
             " | lora4j loss | lora4j MFU | lora4j / reference | target | met |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in order:
        for i, found in enumerate(runs):
            if name not in found:
                continue
            row = found[name]
            label = name if counts[name] == 1 else "%s (run %d)" % (name, i + 1)
            ref, ours = row["reference"], row["lora4j"]
            ref_ok = ref is not None and "error" not in ref
            ours_ok = "error" not in ours and ours.get("samples_per_s") is not None
            ratio = ours["samples_per_s"] / ref["samples_per_s"] if ref_ok and ours_ok else None
            # qlora-all-gc's target is against lora4j's LoRA of the same run
            ok = met(name, ref if ref_ok else None, ours, found) if ours_ok else None
            row["ratio"], row["met"], row["target"] = ratio, ok, TARGETS.get(name)
            rows[label] = row
            ratios.setdefault(name, []).append((ratio, ok))
            lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                label,
                fmt(ref.get("samples_per_s"), ".2f") if ref_ok else ("-" if ref is None else ref["error"]),
                fmt(ref.get("peak_gib"), ".2f") + " GiB" if ref_ok else "-",
                fmt(ref.get("loss"), ".4f") if ref_ok else "-",
                fmt(ours.get("samples_per_s"), ".2f") if ours_ok else ours.get("error", "-"),
                fmt(ours.get("peak_bytes", 0) / GIB, ".2f") + " GiB" if ours_ok else "-",
                fmt(ours.get("loss"), ".4f") if ours_ok else "-",
                fmt(100 * ours["mfu"], ".1f") + "%" if ours_ok and ours.get("mfu") is not None else "-",
                fmt(ratio, ".3f") + "x" if ratio is not None else "-",
                TARGETS.get(name, "-"),
                {True: "yes", False: "no", None: "-"}[ok]))
    medians = []
    for name in order:
        measured = [r for r, _ in ratios.get(name, []) if r is not None]
        if counts[name] < 2 or not measured:
            continue
        median = statistics.median(measured)
        verdicts = [ok for _, ok in ratios[name]]
        medians.append("%s: lora4j / reference over %d runs %s; median %.3fx; target met in %d of %d runs" % (
            name, len(measured), ", ".join("%.3fx" % r for r in measured), median,
            sum(1 for ok in verdicts if ok), len(verdicts)))
        rows[name + " (median)"] = {"ratios": measured, "median_ratio": median,
                                    "met_runs": sum(1 for ok in verdicts if ok), "runs": len(verdicts)}
    if medians:
        lines.append("")
        lines.extend(medians)
    table = "\n".join(lines) + "\n"
    for name, (text, data) in sweeps.items():
        table += "\n" + text
        rows[name] = data
    sys.stdout.write(table)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(table)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
