#!/usr/bin/env python3
"""Values of the dropout hash (DropoutHash.java), computed independently with Python integers.

SplitMix64's finaliser over seed + (index + 1) * golden gamma, modulo 2^64; the top 24 bits scaled by 2^-24
give the uniform float in [0, 1). DropoutHashTest pins these values, so that the Java and CUDA implementations
are both checked against the same numbers. Run: python3 tools/dropout_hash_values.py
"""
MASK = (1 << 64) - 1


def mix(seed, index):
    z = (seed + (index + 1) * 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def uniform(seed, index):
    return (mix(seed, index) >> 40) / 2.0 ** 24


CASES = [(0, 0), (0, 1), (42, 0), (42, 12345), (-1, 7), (1234567890123, 1 << 33)]

if __name__ == "__main__":
    for seed, index in CASES:
        m = mix(seed & MASK, index)
        print(f"seed {seed:>14} index {index:>11}: mix 0x{m:016x}, uniform {uniform(seed & MASK, index)!r}"
              f" = {m >> 40} * 2^-24")
