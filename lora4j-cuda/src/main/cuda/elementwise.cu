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

// The gradients of out = silu(g) * u with s = sigmoid(g): dUp = dOut * (g * s) and
// dGate = dOut * u * s * (g * (1 - s) + 1), in the CPU backend's order of operations. A gate so negative that
// exp(-g) overflows gives s = 0 and finite gradients. Every element is read before its gradients are written, so
// the outputs may alias the inputs.
extern "C" __global__ void lora4j_swiglu_backward_f32(const float* gate, const float* up, const float* d_out,
                                                      float* d_gate, float* d_up, long long n) {
    L4J_FOR_EACH(i, n) {
        float g = gate[i], u = up[i], dy = d_out[i];
        float s = 1.0f / (1.0f + expf(-g));
        d_up[i] = dy * (g * s);
        d_gate[i] = dy * u * s * (g * (1.0f - s) + 1.0f);
    }
}

// t *= s, in the tensor's own type (16-bit values are widened, scaled in FP32 and rounded back).
template <typename T>
__device__ __forceinline__ void l4j_scale(T* t, float s, long long n) {
    L4J_FOR_EACH(i, n) l4j_store(t, i, l4j_load(t, i) * s);
}

#define L4J_SCALE(name, T) \
    extern "C" __global__ void lora4j_scale_##name(T* t, float s, long long n) { l4j_scale<T>(t, s, n); }

L4J_SCALE(f32, float)
L4J_SCALE(bf16, l4j_bf16)
L4J_SCALE(f16, l4j_f16)
