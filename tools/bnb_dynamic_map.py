#!/usr/bin/env python3
"""bitsandbytes' 8-bit dynamic map (create_dynamic_map), value by value, checked against lora4j's tables.

bitsandbytes builds the map at run time with torch in float32:
    for i in 0..6: b = torch.linspace(0.1, 1, n_i)   (n_i = 2**i + 1 signed, 2**(i+1) + 1 unsigned)
                   means = (b[:-1] + b[1:]) / 2.0
                   data += (10 ** (i - 6)) * means   (and, signed, -(10 ** (i - 6)) * means)
    data += [0, 1.0]; sorted.
lora4j's DynamicMap reproduces torch's float32 arithmetic, with each linspace point computed as one fused
multiply-add (torch's CPU kernel compiled for AVX2/AVX512 with FMA contraction). This script prints

  * the map from torch, if torch is installed (the authority),
  * the map from a pure-Python float32 emulation, with and without the fused multiply-add,

and compares each with lora4j-core/src/test/resources/dev/lora4j/quant/dynamic-map-{signed,unsigned}.txt.

Usage (on a machine with torch, e.g. the GPU machine):  python3 tools/bnb_dynamic_map.py [--print]
Exit status 0 when torch (or, without torch, the fused emulation) matches lora4j's tables bit for bit.
"""
import os
import struct
import sys
from fractions import Fraction

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLES = os.path.join(ROOT, "lora4j-core", "src", "test", "resources", "dev", "lora4j", "quant")


def f32(x):
    """x rounded to the nearest float32 (as a Python float)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def bits(x):
    return "%08x" % struct.unpack("<I", struct.pack("<f", x))[0]


def fma32(a, b, c):
    """a * b + c with one rounding to float32."""
    return f32(float(Fraction(a) * Fraction(b) + Fraction(c)))


def linspace32(steps, fused):
    """torch.linspace(0.1, 1, steps, dtype=float32) as torch's CPU kernel computes it."""
    start, end = f32(0.1), f32(1.0)
    step = f32(f32(end - start) / float(steps - 1))
    out = []
    for j in range(steps):
        if j < steps // 2:
            out.append(fma32(step, float(j), start) if fused else f32(start + f32(step * j)))
        else:
            k = float(steps - j - 1)
            out.append(fma32(-step, k, end) if fused else f32(end - f32(step * k)))
    return out


def emulated_map(signed, fused):
    data = []
    for i in range(7):
        points = 2 ** i + 1 if signed else 2 ** (i + 1) + 1
        b = linspace32(points, fused)
        means = [f32(f32(b[j] + b[j + 1]) / 2.0) for j in range(points - 1)]
        scale = f32(10 ** (i - 6))
        data += [f32(scale * m) for m in means]
        if signed:
            data += [f32(-scale * m) for m in means]
    data += [0.0, 1.0]
    return sorted(data)


def torch_map(signed):
    import torch
    data = []
    for i in range(7):
        points = 2 ** i + 1 if signed else 2 ** (i + 1) + 1
        b = torch.linspace(0.1, 1, points, dtype=torch.float32)
        means = (b[:-1] + b[1:]) / 2.0
        data += ((10 ** (i - 6)) * means).tolist()
        if signed:
            data += (-(10 ** (i - 6)) * means).tolist()
    data += [0, 1.0]
    data.sort()
    return torch.tensor(data, dtype=torch.float32).tolist()


def lora4j_table(signed):
    name = "dynamic-map-%s.txt" % ("signed" if signed else "unsigned")
    with open(os.path.join(TABLES, name)) as f:
        return [l.strip() for l in f if l.strip() and not l.startswith("#")]


def compare(label, values, table):
    got = [bits(v) for v in values]
    diff = [i for i in range(256) if got[i] != table[i]]
    print("  %-34s %s" % (label, "matches lora4j bit for bit" if not diff else "%d values differ, first at %s" % (len(diff), diff[:8])))
    return not diff


def main():
    show = "--print" in sys.argv
    try:
        import torch
        print("torch %s, CPU capability %s" % (torch.__version__, torch.backends.cpu.get_cpu_capability()))
        have_torch = True
    except ImportError:
        print("torch is not installed: comparing the float32 emulations only")
        have_torch = False
    ok = True
    for signed in (True, False):
        table = lora4j_table(signed)
        print("create_dynamic_map(signed=%s):" % signed)
        fused = emulated_map(signed, True)
        compare("emulation, fused multiply-add", fused, table)
        compare("emulation, separate roundings", emulated_map(signed, False), table)
        if have_torch:
            t = torch_map(signed)
            ok &= compare("torch", t, table)
            if show:
                print("\n".join("%3d %s %r" % (i, bits(v), v) for i, v in enumerate(t)))
        else:
            ok &= compare("(fused emulation)", fused, table)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
