// RMSNorm as Hugging Face's LlamaRMSNorm: out = weight * (x * 1/sqrt(mean(x^2) + eps)), FP32 throughout; x and out
// are activations (F32, or BF16 widened on load and rounded once on store), the weight F32, BF16 or F16.
// One block per row; the block's threads stride over the row, then reduce the sum of squares.
#include "common.cuh"

// A row of at most this many bytes (for the backward pass: x's row and dy's together) is first copied into shared
// memory with 16-byte loads, when its length is a multiple of 8 and it starts on a 16-byte boundary; the host gives
// every launch whose rows fit this much dynamic shared memory (CudaKernels.ROW_STAGE_BYTES). The sums then read the
// staged row in exactly the order they read global memory otherwise, so both ways give the same bits.
#define L4J_ROW_STAGE_BYTES (48 * 1024)

// Copies count 16-byte pieces from global src to shared dst with the block's threads (no barrier).
__device__ __forceinline__ void l4j_stage(l4j_u32x4* dst, const void* src, int count) {
    const l4j_u32x4* s = reinterpret_cast<const l4j_u32x4*>(src);
    for (int c = threadIdx.x; c < count; c += blockDim.x) dst[c] = s[c];
}

// weight[j .. j+7] as floats, with one 16-byte access when the weight is aligned.
template <typename W>
__device__ __forceinline__ void l4j_load8_any(const W* w, int j, bool aligned, float v[L4J_GROUP]) {
    if (aligned) {
        l4j_load8(w, j, v);
    } else {
#pragma unroll
        for (int k = 0; k < L4J_GROUP; k++) v[k] = l4j_load(w, j + k);
    }
}

template <typename X, typename W>
__device__ __forceinline__ void l4j_rmsnorm(const X* x, const W* __restrict__ w, float eps, X* out, int d) {
    __shared__ float partial[32];
    L4J_DYNAMIC_SHARED(l4j_u32x4, stage);
    const X* row = x + (long long) blockIdx.x * d;
    X* dst = out + (long long) blockIdx.x * d;
    const bool staged = (long long) d * (long long) sizeof(X) <= L4J_ROW_STAGE_BYTES && d % L4J_GROUP == 0
            && l4j_aligned16(row) && l4j_aligned16(dst);
    if (staged) {
        l4j_stage(stage, row, (int) (d * sizeof(X) / 16));
        __syncthreads();
        row = reinterpret_cast<const X*>(stage);
    }
    float ss = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float v = l4j_load(row, j);
        ss += v * v;
    }
    ss = l4j_block_sum(ss, partial);
    // The mean and eps in float, the reciprocal square root in double then rounded once: what the CPU backend does.
    float inv = (float) (1.0 / sqrt((double) (ss / (float) d + eps)));
    // out may alias x: every read of the row happened before the reduction's barriers.
    if (staged) {
        const bool w_aligned = l4j_aligned16(w);
        for (int j = threadIdx.x * L4J_GROUP; j < d; j += blockDim.x * L4J_GROUP) {
            float v[L4J_GROUP], wv[L4J_GROUP];
            l4j_load8(row, j, v);
            l4j_load8_any(w, j, w_aligned, wv);
#pragma unroll
            for (int k = 0; k < L4J_GROUP; k++) v[k] = wv[k] * (v[k] * inv);
            l4j_store8(dst, j, v);
        }
    } else {
        for (int j = threadIdx.x; j < d; j += blockDim.x) l4j_store(dst, j, l4j_load(w, j) * (l4j_load(row, j) * inv));
    }
}

#define L4J_RMSNORM(name, X, W) \
    extern "C" __global__ void lora4j_rmsnorm_##name(const X* x, const W* w, float eps, X* out, int d) { \
        l4j_rmsnorm<X, W>(x, w, eps, out, d); \
    }

L4J_RMSNORM(f32, float, float)
L4J_RMSNORM(bf16, float, l4j_bf16)
L4J_RMSNORM(f16, float, l4j_f16)
L4J_RMSNORM(bf16act_f32, l4j_bf16, float)
L4J_RMSNORM(bf16act_bf16, l4j_bf16, l4j_bf16)
L4J_RMSNORM(bf16act_f16, l4j_bf16, l4j_f16)

// 1/sqrt(mean(x^2) + eps) of each row, exactly as the forward pass computes it.
__device__ __forceinline__ float l4j_rms_inverse(float ss, int d, float eps) {
    return (float) (1.0 / sqrt((double) (ss / (float) d + eps)));
}

// The input gradient of RMSNorm, one block per row. With r = 1/sqrt(mean(x^2) + eps) and y_j = w_j * x_j * r:
//   dx_j = r * w_j * dy_j - x_j * r^3 / d * sum_k(w_k * dy_k * x_k).
// dx may alias x or dy: each element is read and written by the same thread, and every read of the row for the
// sums happens before the reductions' barriers.
template <typename X, typename W>
__device__ __forceinline__ void l4j_rmsnorm_backward(const X* x, const W* __restrict__ w, float eps, const X* dy, X* dx,
                                                     int d) {
    __shared__ float partial[32];
    L4J_DYNAMIC_SHARED(l4j_u32x4, stage);
    const long long base = (long long) blockIdx.x * d;
    const X* xr = x + base;
    const X* dyr = dy + base;
    X* dxr = dx + base;
    // Both rows are staged (x's, then dy's), or neither.
    const bool staged = 2 * (long long) d * (long long) sizeof(X) <= L4J_ROW_STAGE_BYTES && d % L4J_GROUP == 0
            && l4j_aligned16(xr) && l4j_aligned16(dyr) && l4j_aligned16(dxr);
    if (staged) {
        int pieces = (int) (d * sizeof(X) / 16);
        l4j_stage(stage, xr, pieces);
        l4j_stage(stage + pieces, dyr, pieces);
        __syncthreads();
        xr = reinterpret_cast<const X*>(stage);
        dyr = reinterpret_cast<const X*>(stage + pieces);
    }
    float ss = 0.0f, dot = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float v = l4j_load(xr, j);
        ss += v * v;
        dot += l4j_load(w, j) * l4j_load(dyr, j) * v;
    }
    ss = l4j_block_sum(ss, partial);
    dot = l4j_block_sum(dot, partial);
    float r = l4j_rms_inverse(ss, d, eps);
    float c = r * r * r * dot / (float) d;
    if (staged) {
        const bool w_aligned = l4j_aligned16(w);
        for (int j = threadIdx.x * L4J_GROUP; j < d; j += blockDim.x * L4J_GROUP) {
            float v[L4J_GROUP], g[L4J_GROUP], wv[L4J_GROUP];
            l4j_load8(xr, j, v);
            l4j_load8(dyr, j, g);
            l4j_load8_any(w, j, w_aligned, wv);
#pragma unroll
            for (int k = 0; k < L4J_GROUP; k++) v[k] = r * (wv[k] * g[k]) - v[k] * c;
            l4j_store8(dxr, j, v);
        }
    } else {
        for (int j = threadIdx.x; j < d; j += blockDim.x) {
            float v = l4j_load(xr, j);
            l4j_store(dxr, j, r * (l4j_load(w, j) * l4j_load(dyr, j)) - v * c);
        }
    }
}

#define L4J_RMSNORM_BACKWARD(name, X, W) \
    extern "C" __global__ void lora4j_rmsnorm_backward_##name(const X* x, const W* w, float eps, const X* dy, X* dx, \
                                                              int d) { \
        l4j_rmsnorm_backward<X, W>(x, w, eps, dy, dx, d); \
    }

L4J_RMSNORM_BACKWARD(f32, float, float)
L4J_RMSNORM_BACKWARD(bf16, float, l4j_bf16)
L4J_RMSNORM_BACKWARD(f16, float, l4j_f16)
L4J_RMSNORM_BACKWARD(bf16act_f32, l4j_bf16, float)
L4J_RMSNORM_BACKWARD(bf16act_bf16, l4j_bf16, l4j_bf16)
L4J_RMSNORM_BACKWARD(bf16act_f16, l4j_bf16, l4j_f16)

// inv[row] = 1/sqrt(mean(x^2) + eps), one block per row: what the weight gradient below needs.
template <typename X>
__device__ __forceinline__ void l4j_rmsnorm_inverse(const X* __restrict__ x, float eps, float* __restrict__ inv, int d) {
    __shared__ float partial[32];
    const X* row = x + (long long) blockIdx.x * d;
    float ss = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float v = l4j_load(row, j);
        ss += v * v;
    }
    ss = l4j_block_sum(ss, partial);
    if (threadIdx.x == 0) inv[blockIdx.x] = l4j_rms_inverse(ss, d, eps);
}

extern "C" __global__ void lora4j_rmsnorm_inverse_f32(const float* x, float eps, float* inv, int d) {
    l4j_rmsnorm_inverse(x, eps, inv, d);
}

extern "C" __global__ void lora4j_rmsnorm_inverse_bf16(const l4j_bf16* x, float eps, float* inv, int d) {
    l4j_rmsnorm_inverse(x, eps, inv, d);
}

// The weight gradient of RMSNorm: dw[j] += sum over rows of dy[r, j] * (x[r, j] * inv[r]), dw F32. Same layout as
// lora4j_sum_rows_f32 (256 threads: 32 columns by 8 row lanes), and like it deterministic. It runs before the
// input gradient, which may overwrite x or dy.
template <typename X>
__device__ __forceinline__ void l4j_rmsnorm_weight_grad(const X* __restrict__ x, const X* __restrict__ dy,
                                                        const float* __restrict__ inv, float* __restrict__ dw,
                                                        long long rows, int d) {
    __shared__ float partial[8][32];
    const int tx = threadIdx.x % 32, ty = threadIdx.x / 32;
    const int j = blockIdx.x * 32 + tx;
    float s = 0.0f;
    if (j < d) {
        for (long long r = ty; r < rows; r += 8) s += l4j_load(dy, r * d + j) * (l4j_load(x, r * d + j) * inv[r]);
    }
    partial[ty][tx] = s;
    __syncthreads();
    if (ty == 0 && j < d) {
        float total = partial[0][tx];
        for (int y = 1; y < 8; y++) total += partial[y][tx];
        dw[j] += total;
    }
}

extern "C" __global__ void __launch_bounds__(256)
lora4j_rmsnorm_weight_grad_f32(const float* x, const float* dy, const float* inv, float* dw, long long rows, int d) {
    l4j_rmsnorm_weight_grad(x, dy, inv, dw, rows, d);
}

extern "C" __global__ void __launch_bounds__(256)
lora4j_rmsnorm_weight_grad_bf16(const l4j_bf16* x, const l4j_bf16* dy, const float* inv, float* dw, long long rows,
                                int d) {
    l4j_rmsnorm_weight_grad(x, dy, inv, dw, rows, d);
}
