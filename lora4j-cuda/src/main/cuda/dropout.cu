// Inverted dropout with the counter-based mask of dev.lora4j.backend.DropoutHash: element i is dropped when
// uniform(seed, i) < p, otherwise multiplied by scale. The mask depends only on the seed and the flat element
// index, so it is the same as the CPU backend's for any grid. out may be x.
#include "exact.cuh"

extern "C" __global__ void lora4j_dropout_f32(const float* x, float* out, float p, float scale,
                                              unsigned long long seed, long long n) {
    L4J_FOR_EACH(i, n) out[i] = l4j_dropout(x[i], p, scale, seed, (uint64_t) i);
}
