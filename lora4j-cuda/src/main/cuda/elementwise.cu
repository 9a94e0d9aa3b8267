// Element-wise ops on activations: x += y, x[r, :] += bias, out = silu(gate) * up, and their gradients.
// Activations are F32 or BF16 (the backend's activation dtype); a BF16 element is widened to float, the arithmetic
// is FP32 and the result is rounded once (to nearest even) where it is stored. The F32 kernels keep their names;
// the BF16 ones are named after the activation type, or with "bf16act" where the name already carries another type.
#include "common.cuh"

template <typename X, typename Y>
__device__ __forceinline__ void l4j_add(X* __restrict__ x, const Y* __restrict__ y, long long n) {
    l4j_groups_then_rest(
            n, l4j_aligned16(x) && l4j_aligned16(y),
            [&](long long g) {
                float a[L4J_GROUP], b[L4J_GROUP];
                l4j_load8(x, g, a);
                l4j_load8(y, g, b);
#pragma unroll
                for (int k = 0; k < L4J_GROUP; k++) a[k] = a[k] + b[k];
                l4j_store8(x, g, a);
            },
            [&](long long i) { l4j_store(x, i, l4j_load(x, i) + l4j_load(y, i)); });
}

extern "C" __global__ void lora4j_add_f32(float* x, const float* y, long long n) { l4j_add(x, y, n); }
extern "C" __global__ void lora4j_add_bf16(l4j_bf16* x, const l4j_bf16* y, long long n) { l4j_add(x, y, n); }
// A BF16 tensor plus an F32 one, rounded once: where a product formed in F32 joins BF16 activations.
extern "C" __global__ void lora4j_add_bf16act_f32(l4j_bf16* x, const float* y, long long n) { l4j_add(x, y, n); }

template <typename X, typename B>
__device__ __forceinline__ void l4j_add_bias(X* __restrict__ x, const B* __restrict__ bias, long long n, int d) {
    L4J_FOR_EACH(i, n) l4j_store(x, i, l4j_load(x, i) + l4j_load(bias, i % d));
}

#define L4J_ADD_BIAS(name, X, B) \
    extern "C" __global__ void lora4j_add_bias_##name(X* x, const B* bias, long long n, int d) { \
        l4j_add_bias<X, B>(x, bias, n, d); \
    }

L4J_ADD_BIAS(f32, float, float)
L4J_ADD_BIAS(bf16, float, l4j_bf16)
L4J_ADD_BIAS(f16, float, l4j_f16)
L4J_ADD_BIAS(bf16act_f32, l4j_bf16, float)
L4J_ADD_BIAS(bf16act_bf16, l4j_bf16, l4j_bf16)
L4J_ADD_BIAS(bf16act_f16, l4j_bf16, l4j_f16)

// silu(g) * u with g / (1 + exp(-g)) in that order, as the CPU backend and torch's silu compute it; expf is the
// accurate one (this file is never built with --use_fast_math).
template <typename T>
__device__ __forceinline__ void l4j_swiglu(const T* __restrict__ gate, const T* __restrict__ up, T* __restrict__ out,
                                           long long n) {
    l4j_groups_then_rest(
            n, l4j_aligned16(gate) && l4j_aligned16(up) && l4j_aligned16(out),
            [&](long long j) {
                float g[L4J_GROUP], u[L4J_GROUP];
                l4j_load8(gate, j, g);
                l4j_load8(up, j, u);
#pragma unroll
                for (int k = 0; k < L4J_GROUP; k++) g[k] = g[k] / (1.0f + expf(-g[k])) * u[k];
                l4j_store8(out, j, g);
            },
            [&](long long i) {
                float g = l4j_load(gate, i);
                l4j_store(out, i, g / (1.0f + expf(-g)) * l4j_load(up, i));
            });
}

extern "C" __global__ void lora4j_swiglu_f32(const float* gate, const float* up, float* out, long long n) {
    l4j_swiglu(gate, up, out, n);
}

extern "C" __global__ void lora4j_swiglu_bf16(const l4j_bf16* gate, const l4j_bf16* up, l4j_bf16* out, long long n) {
    l4j_swiglu(gate, up, out, n);
}

// The gradients of out = silu(g) * u with s = sigmoid(g): dUp = dOut * (g * s) and
// dGate = dOut * u * s * (g * (1 - s) + 1), in the CPU backend's order of operations. A gate so negative that
// exp(-g) overflows gives s = 0 and finite gradients. Every element is read before its gradients are written, so
// the outputs may alias the inputs.
template <typename T>
__device__ __forceinline__ void l4j_swiglu_backward(const T* gate, const T* up, const T* d_out, T* d_gate, T* d_up,
                                                    long long n) {
    l4j_groups_then_rest(
            n, l4j_aligned16(gate) && l4j_aligned16(up) && l4j_aligned16(d_out) && l4j_aligned16(d_gate)
                    && l4j_aligned16(d_up),
            [&](long long j) {
                float g[L4J_GROUP], u[L4J_GROUP], dy[L4J_GROUP], dg[L4J_GROUP], du[L4J_GROUP];
                l4j_load8(gate, j, g);
                l4j_load8(up, j, u);
                l4j_load8(d_out, j, dy);
#pragma unroll
                for (int k = 0; k < L4J_GROUP; k++) {
                    float s = 1.0f / (1.0f + expf(-g[k]));
                    du[k] = dy[k] * (g[k] * s);
                    dg[k] = dy[k] * u[k] * s * (g[k] * (1.0f - s) + 1.0f);
                }
                l4j_store8(d_up, j, du);
                l4j_store8(d_gate, j, dg);
            },
            [&](long long i) {
                float g = l4j_load(gate, i), u = l4j_load(up, i), dy = l4j_load(d_out, i);
                float s = 1.0f / (1.0f + expf(-g));
                l4j_store(d_up, i, dy * (g * s));
                l4j_store(d_gate, i, dy * u * s * (g * (1.0f - s) + 1.0f));
            });
}

extern "C" __global__ void lora4j_swiglu_backward_f32(const float* gate, const float* up, const float* d_out,
                                                      float* d_gate, float* d_up, long long n) {
    l4j_swiglu_backward(gate, up, d_out, d_gate, d_up, n);
}

extern "C" __global__ void lora4j_swiglu_backward_bf16(const l4j_bf16* gate, const l4j_bf16* up,
                                                       const l4j_bf16* d_out, l4j_bf16* d_gate, l4j_bf16* d_up,
                                                       long long n) {
    l4j_swiglu_backward(gate, up, d_out, d_gate, d_up, n);
}

// t *= s, in the tensor's own type (16-bit values are widened, scaled in FP32 and rounded back).
template <typename T>
__device__ __forceinline__ void l4j_scale(T* t, float s, long long n) {
    l4j_groups_then_rest(
            n, l4j_aligned16(t),
            [&](long long g) {
                float v[L4J_GROUP];
                l4j_load8(t, g, v);
#pragma unroll
                for (int k = 0; k < L4J_GROUP; k++) v[k] = v[k] * s;
                l4j_store8(t, g, v);
            },
            [&](long long i) { l4j_store(t, i, l4j_load(t, i) * s); });
}

#define L4J_SCALE(name, T) \
    extern "C" __global__ void lora4j_scale_##name(T* t, float s, long long n) { l4j_scale<T>(t, s, n); }

L4J_SCALE(f32, float)
L4J_SCALE(bf16, l4j_bf16)
L4J_SCALE(f16, l4j_f16)

// ---- many zero fills in one launch ----------------------------------------------------------------------------
// A new accumulation zeroes every gradient that is added into: a LoRA model's hundreds of small adapter gradients,
// each a fill of a few microseconds on its own. One launch takes a table of them (CudaBackend.zeroAll writes it), each
// block filling L4J_ZERO_CHUNK bytes of one tensor, 16 bytes at a time where the tensor is aligned.
struct l4j_zero_entry {
    unsigned char* p;
    long long bytes;
    long long first_block;  // the launch's first block on this tensor
    long long unused;
};

#define L4J_ZERO_CHUNK 65536  // bytes per block (CudaKernels.ZERO_CHUNK): a multiple of 16, so chunks stay aligned

extern "C" __global__ void lora4j_zero_all(const l4j_zero_entry* __restrict__ table, int count) {
    const long long b = blockIdx.x;
    int lo = 0, hi = count - 1;
    while (lo < hi) {  // the last entry whose first block is at or before this one
        const int mid = (lo + hi + 1) >> 1;
        if (table[mid].first_block <= b) lo = mid;
        else hi = mid - 1;
    }
    const long long start = (b - table[lo].first_block) * L4J_ZERO_CHUNK;
    const long long rest = table[lo].bytes - start;
    const long long n = rest < L4J_ZERO_CHUNK ? rest : L4J_ZERO_CHUNK;
    unsigned char* p = table[lo].p + start;
    long long done = 0;
    if (l4j_aligned16(p)) {
        const l4j_u32x4 zero = {0u, 0u, 0u, 0u};
        for (long long i = threadIdx.x; i < n / 16; i += blockDim.x) reinterpret_cast<l4j_u32x4*>(p)[i] = zero;
        done = n / 16 * 16;
    }
    for (long long i = done + threadIdx.x; i < n; i += blockDim.x) p[i] = 0;
}
