// RMSNorm as Hugging Face's LlamaRMSNorm: out = weight * (x * 1/sqrt(mean(x^2) + eps)), FP32 throughout.
// One block per row; the block's threads stride over the row, then reduce the sum of squares.
#include "common.cuh"

template <typename W>
__device__ __forceinline__ void l4j_rmsnorm(const float* x, const W* __restrict__ w, float eps, float* out, int d) {
    __shared__ float partial[32];
    const float* row = x + (long long) blockIdx.x * d;
    float* dst = out + (long long) blockIdx.x * d;
    float ss = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float v = row[j];
        ss += v * v;
    }
    ss = l4j_block_sum(ss, partial);
    // The mean and eps in float, the reciprocal square root in double then rounded once: what the CPU backend does.
    float inv = (float) (1.0 / sqrt((double) (ss / (float) d + eps)));
    // out may alias x: every read of the row happened before the reduction's barriers.
    for (int j = threadIdx.x; j < d; j += blockDim.x) dst[j] = l4j_load(w, j) * (row[j] * inv);
}

#define L4J_RMSNORM(name, W) \
    extern "C" __global__ void lora4j_rmsnorm_##name(const float* x, const W* w, float eps, float* out, int d) { \
        l4j_rmsnorm<W>(x, w, eps, out, d); \
    }

L4J_RMSNORM(f32, float)
L4J_RMSNORM(bf16, l4j_bf16)
L4J_RMSNORM(f16, l4j_f16)
