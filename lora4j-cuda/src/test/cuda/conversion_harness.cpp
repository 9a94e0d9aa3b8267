// Runs the element conversions of src/main/cuda/common.cuh on the host, for KernelConversionRoundingTest:
// the kernels use these very functions, so checking them here against dev.lora4j.tensor.Half checks the GPU's
// rounding without a GPU.
//
// Output (little-endian, to stdout): for every 16-bit pattern h = 0..65535, the float bits of f16 h and of
// bf16 h (two uint32); then, for every uint32 float pattern read from stdin, its bf16 and its f16 (two uint16).
#include <stdio.h>
#include "common.cuh"

int main() {
    static uint32_t table[65536 * 2];
    for (uint32_t h = 0; h < 65536; h++) {
        table[2 * h] = l4j_float_bits(l4j_f16_to_float((uint16_t) h));
        table[2 * h + 1] = l4j_float_bits(l4j_bf16_to_float((uint16_t) h));
    }
    fwrite(table, sizeof(uint32_t), 65536 * 2, stdout);
    static uint32_t in[4096];
    static uint16_t out[4096 * 2];
    size_t n;
    while ((n = fread(in, sizeof(uint32_t), 4096, stdin)) > 0) {
        for (size_t i = 0; i < n; i++) {
            float f = l4j_bits_float(in[i]);
            out[2 * i] = l4j_float_to_bf16(f);
            out[2 * i + 1] = l4j_float_to_f16(f);
        }
        fwrite(out, sizeof(uint16_t), 2 * n, stdout);
    }
    return 0;
}
