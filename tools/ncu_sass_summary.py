"""What a kernel spends its instructions and stalls on, from Nsight Compute's per-SASS-instruction source page
(scripts/device-ncu.sh writes it: `ncu --import R.ncu-rep --page source --print-source sass --csv`).

    python3 tools/ncu_sass_summary.py KERNEL-sass.csv [--annotated out.txt] [--top 20]

Prints the instructions executed (warp level) by opcode, the stall reasons summed over the kernel, the blocks of
straight-line code grouped by how many times they ran (a loop body shows up as many instructions sharing one count:
the count says how often it ran, the number of instructions how long it is), and the instructions with the most
stall samples. --annotated writes every instruction with its count, samples and top two stall reasons.
"""
import argparse, collections, csv, sys


def number(text):
    try:
        return int(text.replace(",", ""))
    except ValueError:
        return 0


def opcode(source):
    s = source.strip()
    if s.startswith("@"):  # a predicate guard
        s = s.split(None, 1)[1] if " " in s else s
    return s.split()[0].split(".")[0] if s else "?"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("csv")
    p.add_argument("--annotated")
    p.add_argument("--top", type=int, default=20)
    a = p.parse_args()
    with open(a.csv, newline="") as f:
        rows = list(csv.reader(f))
    # The page starts with a "Kernel Name" line; the header row follows.
    start = next(i for i, r in enumerate(rows) if r and r[0] == "Address")
    header, data = rows[start], [r for r in rows[start + 1:] if len(r) > 2]
    col = {name: i for i, name in enumerate(header)}
    executed, source = col["Instructions Executed"], col["Source"]
    samples = col.get("Warp Stall Sampling (All Samples)")
    stalls = [i for i, h in enumerate(header) if h.startswith("stall_") and "Not Issued" not in h]

    total = sum(number(r[executed]) for r in data)
    by_op, stall_by_op, reasons, by_count = (collections.Counter() for _ in range(4))
    lengths = collections.Counter()
    for r in data:
        n = number(r[executed])
        op = opcode(r[source])
        by_op[op] += n
        if samples is not None:
            stall_by_op[op] += number(r[samples])
        for i in stalls:
            reasons[header[i][len("stall_"):]] += number(r[i])
        if n:
            by_count[n] += n
            lengths[n] += 1
    print("%s: %s instructions executed (warp level), %d in the code" % (a.csv, format(total, ","), len(data)))
    print("\nby opcode:")
    for op, n in by_op.most_common(a.top):
        print("  %-10s %12s %5.1f%%   stall samples %d" % (op, format(n, ","), 100.0 * n / max(total, 1), stall_by_op[op]))
    print("\nstall reasons (samples):")
    for reason, n in reasons.most_common(10):
        print("  %-18s %d" % (reason, n))
    print("\ncode by times run (times run x instructions = share):")
    for n, share in sorted(by_count.items(), key=lambda kv: -kv[1])[:12]:
        print("  %10s x %5d = %5.1f%%" % (format(n, ","), lengths[n], 100.0 * share / max(total, 1)))
    if samples is not None:
        print("\nmost stalled instructions:")
        top = sorted(range(len(data)), key=lambda i: -number(data[i][samples]))[:a.top]
        for i in top:
            r = data[i]
            why = sorted(((number(r[j]), header[j][len("stall_"):]) for j in stalls), reverse=True)[:2]
            print("  #%-5d %8s samples %5d  %-58s %s" % (i, format(number(r[executed]), ","), number(r[samples]),
                                                       r[source].strip()[:58], ", ".join("%s %d" % (w, c) for c, w in why if c)))
    if a.annotated:
        with open(a.annotated, "w") as out:
            for i, r in enumerate(data):
                why = sorted(((number(r[j]), header[j][len("stall_"):]) for j in stalls), reverse=True)[:2]
                out.write("%5d %12s %6d  %-60s %s\n" % (i, r[executed], number(r[samples]) if samples is not None else 0,
                                                        r[source].strip(), " ".join("%s:%d" % (w, c) for c, w in why)))


if __name__ == "__main__":
    sys.exit(main())
