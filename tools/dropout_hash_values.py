#!/usr/bin/env python3
"""Values of the dropout hash (DropoutHash.java), computed independently with Python integers.

SplitMix64's finaliser over seed + (j + 1) * golden gamma, modulo 2^64, serves the group of elements 4j .. 4j + 3:
element 4j + k draws bits 16k to 16k + 15 of the output; a draw scaled by 2^-16 is the uniform float in [0, 1), and
an element is dropped at probability p when its draw is below ceil(p * 2^16). DropoutHashTest pins these values, so that the Java and CUDA
implementations are both checked against the same numbers. Run: python3 tools/dropout_hash_values.py
"""
MASK = (1 << 64) - 1


def mix(seed, index):
    z = (seed + (index + 1) * 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def bits(seed, index):
    z = mix(seed, index // 4)
    return (z >> (16 * (index % 4))) & 0xFFFF


def uniform(seed, index):
    return bits(seed, index) / 2.0 ** 16


def drop_threshold(p):
    """ceil(p * 2^16) for the float32 p given as a Python float (exact: p * 2^16 only moves the exponent)."""
    import math
    return math.ceil(p * 65536)


MIX_CASES = [(0, 0), (0, 1), (42, 0), (42, 12345), (-1, 7), (1234567890123, 1 << 33)]
BITS_CASES = [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (42, 49380), (42, 49381), (42, 49382), (42, 49383),
              (-1, 28), (-1, 31), (1234567890123, 1 << 35), (1234567890123, (1 << 35) + 3)]
THRESHOLD_CASES = [0.05, 0.1, 0.5, 1.0]

if __name__ == "__main__":
    for seed, index in MIX_CASES:
        print(f"mix  seed {seed:>14} index {index:>11}: 0x{mix(seed & MASK, index):016x}")
    for seed, index in BITS_CASES:
        b = bits(seed & MASK, index)
        print(f"bits seed {seed:>14} index {index:>11}: {b:>8} (uniform {uniform(seed & MASK, index)!r})")
    import struct
    for p in THRESHOLD_CASES:
        p32 = struct.unpack("<f", struct.pack("<f", p))[0]  # the float32 Java passes
        print(f"threshold p {p}: {drop_threshold(p32)}")
