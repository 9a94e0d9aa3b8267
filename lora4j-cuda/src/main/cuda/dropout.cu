// Inverted dropout with the counter-based mask of dev.lora4j.backend.DropoutHash: element i is dropped when its
// 16-bit draw is below the threshold of p (uniform(seed, i) < p), otherwise multiplied by scale. The mask depends
// only on the seed and the flat element index, so it is the same as the CPU backend's for any grid. out may be x.
// With BF16 activations the kept value x * scale is formed in FP32 and rounded once: the input of a LoRA A product,
// written in the type it multiplies in.
#include "exact.cuh"

template <typename T>
__device__ __forceinline__ void l4j_dropout_all(const T* x, T* out, float p, float scale, unsigned long long seed,
                                                long long n) {
    const uint32_t threshold = l4j_dropout_threshold(p);
    // Eight elements per thread and pass: two groups of four, so two independent hashes to overlap, and 16-byte
    // accesses. g is a multiple of 8, so each half of the eight is one group.
    l4j_groups_then_rest(
            n, l4j_aligned16(x) && l4j_aligned16(out),
            [&](long long g) {
                float v[L4J_GROUP];
                l4j_load8(x, g, v);
#pragma unroll
                for (int h = 0; h < L4J_GROUP; h += 4) {
                    const uint64_t z = l4j_dropout_mix(seed, (uint64_t) (g + h) >> 2);
#pragma unroll
                    for (int q = 0; q < 4; q++) {
                        v[h + q] = l4j_dropout_draw(z, (uint32_t) q) < threshold ? 0.0f : l4j_mul(v[h + q], scale);
                    }
                }
                l4j_store8(out, g, v);
            },
            [&](long long i) {
                float v = l4j_load(x, i);
                l4j_store(out, i, l4j_dropout_bits(seed, (uint64_t) i) < threshold ? 0.0f : l4j_mul(v, scale));
            });
}

extern "C" __global__ void lora4j_dropout_f32(const float* x, float* out, float p, float scale,
                                              unsigned long long seed, long long n) {
    l4j_dropout_all(x, out, p, scale, seed, n);
}

extern "C" __global__ void lora4j_dropout_bf16(const l4j_bf16* x, l4j_bf16* out, float p, float scale,
                                               unsigned long long seed, long long n) {
    l4j_dropout_all(x, out, p, scale, seed, n);
}
