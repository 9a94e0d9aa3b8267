#!/usr/bin/env python3
"""Values of the dropout hash (DropoutHash.java), computed independently with Python integers.

SplitMix64's finaliser over seed + (j + 1) * golden gamma, modulo 2^64, serves the pair of elements 2j and 2j + 1:
element 2j draws the top 24 bits of the output, element 2j + 1 the 24 bits below them (bits 16 to 39); a draw
scaled by 2^-24 is the uniform float in [0, 1). DropoutHashTest pins these values, so that the Java and CUDA
implementations are both checked against the same numbers. Run: python3 tools/dropout_hash_values.py
"""
MASK = (1 << 64) - 1


def mix(seed, index):
    z = (seed + (index + 1) * 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def bits(seed, index):
    z = mix(seed, index >> 1)
    return z >> 40 if index % 2 == 0 else (z >> 16) & 0xFFFFFF


def uniform(seed, index):
    return bits(seed, index) / 2.0 ** 24


MIX_CASES = [(0, 0), (0, 1), (42, 0), (42, 12345), (-1, 7), (1234567890123, 1 << 33)]
BITS_CASES = [(0, 0), (0, 1), (0, 2), (0, 3), (42, 24690), (42, 24691), (-1, 14), (-1, 15),
              (1234567890123, 1 << 34), (1234567890123, (1 << 34) + 1)]

if __name__ == "__main__":
    for seed, index in MIX_CASES:
        print(f"mix  seed {seed:>14} index {index:>11}: 0x{mix(seed & MASK, index):016x}")
    for seed, index in BITS_CASES:
        b = bits(seed & MASK, index)
        print(f"bits seed {seed:>14} index {index:>11}: {b:>8} (uniform {uniform(seed & MASK, index)!r})")
