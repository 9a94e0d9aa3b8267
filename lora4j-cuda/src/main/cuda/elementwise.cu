// Element-wise ops on F32 activations: x += y, x[r, :] += bias, out = silu(gate) * up.
#include "common.cuh"

extern "C" __global__ void lora4j_add_f32(float* __restrict__ x, const float* __restrict__ y, long long n) {
    L4J_FOR_EACH(i, n) x[i] = x[i] + y[i];
}

template <typename B>
__device__ __forceinline__ void l4j_add_bias(float* __restrict__ x, const B* __restrict__ bias, long long n, int d) {
    L4J_FOR_EACH(i, n) x[i] = x[i] + l4j_load(bias, i % d);
}

#define L4J_ADD_BIAS(name, B) \
    extern "C" __global__ void lora4j_add_bias_##name(float* x, const B* bias, long long n, int d) { \
        l4j_add_bias<B>(x, bias, n, d); \
    }

L4J_ADD_BIAS(f32, float)
L4J_ADD_BIAS(bf16, l4j_bf16)
L4J_ADD_BIAS(f16, l4j_f16)

// silu(g) * u with g / (1 + exp(-g)) in that order, as the CPU backend and torch's silu compute it; expf is the
// accurate one (this file is never built with --use_fast_math).
extern "C" __global__ void lora4j_swiglu_f32(const float* __restrict__ gate, const float* __restrict__ up,
                                             float* __restrict__ out, long long n) {
    L4J_FOR_EACH(i, n) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}
