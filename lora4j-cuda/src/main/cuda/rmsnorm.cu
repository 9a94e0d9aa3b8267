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

// 1/sqrt(mean(x^2) + eps) of each row, exactly as the forward pass computes it.
__device__ __forceinline__ float l4j_rms_inverse(float ss, int d, float eps) {
    return (float) (1.0 / sqrt((double) (ss / (float) d + eps)));
}

// The input gradient of RMSNorm, one block per row. With r = 1/sqrt(mean(x^2) + eps) and y_j = w_j * x_j * r:
//   dx_j = r * w_j * dy_j - x_j * r^3 / d * sum_k(w_k * dy_k * x_k).
// dx may alias x or dy: each element is read and written by the same thread, and every read of the row for the
// sums happens before the reductions' barriers.
template <typename W>
__device__ __forceinline__ void l4j_rmsnorm_backward(const float* x, const W* __restrict__ w, float eps,
                                                     const float* dy, float* dx, int d) {
    __shared__ float partial[32];
    const long long base = (long long) blockIdx.x * d;
    float ss = 0.0f, dot = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float v = x[base + j];
        ss += v * v;
        dot += l4j_load(w, j) * dy[base + j] * v;
    }
    ss = l4j_block_sum(ss, partial);
    dot = l4j_block_sum(dot, partial);
    float r = l4j_rms_inverse(ss, d, eps);
    float c = r * r * r * dot / (float) d;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float v = x[base + j];
        dx[base + j] = r * (l4j_load(w, j) * dy[base + j]) - v * c;
    }
}

#define L4J_RMSNORM_BACKWARD(name, W) \
    extern "C" __global__ void lora4j_rmsnorm_backward_##name(const float* x, const W* w, float eps, const float* dy, \
                                                              float* dx, int d) { \
        l4j_rmsnorm_backward<W>(x, w, eps, dy, dx, d); \
    }

L4J_RMSNORM_BACKWARD(f32, float)
L4J_RMSNORM_BACKWARD(bf16, l4j_bf16)
L4J_RMSNORM_BACKWARD(f16, l4j_f16)

// inv[row] = 1/sqrt(mean(x^2) + eps), one block per row: what the weight gradient below needs.
extern "C" __global__ void lora4j_rmsnorm_inverse_f32(const float* __restrict__ x, float eps, float* __restrict__ inv,
                                                      int d) {
    __shared__ float partial[32];
    const float* row = x + (long long) blockIdx.x * d;
    float ss = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float v = row[j];
        ss += v * v;
    }
    ss = l4j_block_sum(ss, partial);
    if (threadIdx.x == 0) inv[blockIdx.x] = l4j_rms_inverse(ss, d, eps);
}

// The weight gradient of RMSNorm: dw[j] += sum over rows of dy[r, j] * (x[r, j] * inv[r]). Same layout as
// lora4j_sum_rows_f32 (256 threads: 32 columns by 8 row lanes), and like it deterministic. It runs before the
// input gradient, which may overwrite x or dy.
extern "C" __global__ void __launch_bounds__(256)
lora4j_rmsnorm_weight_grad_f32(const float* __restrict__ x, const float* __restrict__ dy,
                               const float* __restrict__ inv, float* __restrict__ dw, long long rows, int d) {
    __shared__ float partial[8][32];
    const int tx = threadIdx.x % 32, ty = threadIdx.x / 32;
    const int j = blockIdx.x * 32 + tx;
    float s = 0.0f;
    if (j < d) {
        for (long long r = ty; r < rows; r += 8) s += dy[r * d + j] * (x[r * d + j] * inv[r]);
    }
    partial[ty][tx] = s;
    __syncthreads();
    if (ty == 0 && j < d) {
        float total = partial[0][tx];
        for (int y = 1; y < 8; y++) total += partial[y][tx];
        dw[j] += total;
    }
}
