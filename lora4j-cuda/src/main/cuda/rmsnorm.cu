// RMSNorm as Hugging Face's LlamaRMSNorm: out = weight * (x * 1/sqrt(mean(x^2) + eps)), FP32 throughout; x and out
// are activations (F32, or BF16 widened on load and rounded once on store), the weight F32, BF16 or F16.
//
// One block per row, of T threads: the multiple of 32 at or above groups / L4J_ROW_GROUPS, from 32 to
// L4J_ROW_MAX_THREADS, for a row of `groups` groups of 8 elements (CudaKernels.rowThreads; every kernel here is launched
// so). Thread t owns groups t, t+T, t+2T, ..., loads the first L4J_ROW_GROUPS of them at once (16-byte accesses when
// the rows allow) and keeps them in registers from the sums to the store, so that each element is read from memory
// once and a block has all its loads in flight together. Blocks are small (128 threads for rows of 4096), so that many
// rows are in flight on each multiprocessor while others reduce. Only rows longer than L4J_ROW_GROUPS * 8 *
// L4J_ROW_MAX_THREADS (16384) elements read their remaining groups twice.
//
// Every kernel here sums a row's squares in one order: each thread its groups in order, each group's elements in
// order, with fused multiply-adds, then l4j_block_sum. So the 16-byte and the element-by-element paths give the same
// bits, and so do the forward pass, the backward pass and the scale the weight gradient uses.
#include "groups.cuh"

#define L4J_ROW_GROUPS 4
#define L4J_ROW_MAX_THREADS 512

// 1/sqrt(mean(x^2) + eps) from the row's sum of squares: the mean and eps in float, the reciprocal square root in
// double then rounded once, as the CPU backend computes it.
__device__ __forceinline__ float l4j_rms_inverse(float ss, int d, float eps) {
    return (float) (1.0 / sqrt((double) (ss / (float) d + eps)));
}

__device__ __forceinline__ float l4j_add_squares(const float v[8], float ss) {
#pragma unroll
    for (int k = 0; k < 8; k++) ss = __fmaf_rn(v[k], v[k], ss);
    return ss;
}

__device__ __forceinline__ int l4j_row_groups(int d) { return (int) (((long long) d + L4J_GROUP - 1) / L4J_GROUP); }

// Whether a row kernel may take the 16-byte path: whole groups, and every row of every tensor it touches aligned.
__device__ __forceinline__ bool l4j_rows_aligned(int d, const void* a, const void* b) {
    return d % L4J_GROUP == 0 && l4j_aligned16(a) && l4j_aligned16(b);
}

// Loads the thread's first L4J_ROW_GROUPS groups of the row into held, and returns the sum of the squares of all its
// groups (those past the held ones read once more here), in the order described above.
template <bool VEC, typename X>
__device__ __forceinline__ float l4j_hold_and_square(const X* row, int d, l4j_group<X> held[L4J_ROW_GROUPS]) {
    const int T = blockDim.x, t = threadIdx.x, groups = l4j_row_groups(d);
#pragma unroll
    for (int k = 0; k < L4J_ROW_GROUPS; k++) {
        if (t + k * T < groups) held[k].template load<VEC>(row, 8LL * (t + k * T), d);
    }
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < L4J_ROW_GROUPS; k++) {
        if (t + k * T < groups) {
            float v[8];
            held[k].get(v);
            ss = l4j_add_squares(v, ss);
        }
    }
    for (int q = t + L4J_ROW_GROUPS * T; q < groups; q += T) {
        float v[8];
        l4j_group_load<VEC>(row, 8LL * q, d, v);
        ss = l4j_add_squares(v, ss);
    }
    return ss;
}

// The weights of group q (the weight may be at any offset: it is read element by element unless aligned).
template <bool VEC, typename W>
__device__ __forceinline__ void l4j_weights(const W* w, int q, int d, bool w_aligned, float wv[8]) {
    if (VEC && w_aligned) l4j_group_load<true>(w, 8LL * q, d, wv);
    else l4j_group_load<false>(w, 8LL * q, d, wv);
}

template <bool VEC, typename X, typename W>
__device__ __forceinline__ void l4j_rmsnorm_row(const X* row, const W* __restrict__ w, float eps, X* dst, int d) {
    __shared__ float partial[32];
    const int T = blockDim.x, t = threadIdx.x, groups = l4j_row_groups(d);
    l4j_group<X> held[L4J_ROW_GROUPS];
    const float ss = l4j_block_sum(l4j_hold_and_square<VEC>(row, d, held), partial);
    const float inv = l4j_rms_inverse(ss, d, eps);
    // dst may be row: every read of the row happened before the reduction's barriers, or (groups past the held ones)
    // is made again by the thread that writes it, before it does.
    const bool w_aligned = l4j_aligned16(w);
    auto scale = [&](float v[8], int q) {
        float wv[8];
        l4j_weights<VEC>(w, q, d, w_aligned, wv);
#pragma unroll
        for (int k = 0; k < 8; k++) v[k] = __fmul_rn(wv[k], __fmul_rn(v[k], inv));
        l4j_group_store<VEC>(dst, 8LL * q, d, v);
    };
#pragma unroll
    for (int k = 0; k < L4J_ROW_GROUPS; k++) {
        if (t + k * T < groups) {
            float v[8];
            held[k].get(v);
            scale(v, t + k * T);
        }
    }
    for (int q = t + L4J_ROW_GROUPS * T; q < groups; q += T) {
        float v[8];
        l4j_group_load<VEC>(row, 8LL * q, d, v);
        scale(v, q);
    }
}

template <typename X, typename W>
__device__ __forceinline__ void l4j_rmsnorm(const X* x, const W* __restrict__ w, float eps, X* out, int d) {
    const X* row = x + (long long) blockIdx.x * d;
    X* dst = out + (long long) blockIdx.x * d;
    if (l4j_rows_aligned(d, row, dst)) l4j_rmsnorm_row<true>(row, w, eps, dst, d);
    else l4j_rmsnorm_row<false>(row, w, eps, dst, d);
}

#define L4J_RMSNORM(name, X, W) \
    extern "C" __global__ void __launch_bounds__(L4J_ROW_MAX_THREADS) \
    lora4j_rmsnorm_##name(const X* x, const W* w, float eps, X* out, int d) { \
        l4j_rmsnorm<X, W>(x, w, eps, out, d); \
    }

L4J_RMSNORM(f32, float, float)
L4J_RMSNORM(bf16, float, l4j_bf16)
L4J_RMSNORM(f16, float, l4j_f16)
L4J_RMSNORM(bf16act_f32, l4j_bf16, float)
L4J_RMSNORM(bf16act_bf16, l4j_bf16, l4j_bf16)
L4J_RMSNORM(bf16act_f16, l4j_bf16, l4j_f16)

// Calls f(x group, dy group, group index, held index) for each group of 8 of this thread in the row: those held in
// registers (hx[k], hdy[k]: held index k, a constant once unrolled), then those past what registers hold, read again
// (held index -1).
template <bool VEC, typename X, typename F>
__device__ __forceinline__ void l4j_rmsnorm_each_group_pair(const l4j_group<X>* hx, const l4j_group<X>* hdy,
                                                            const X* xr, const X* dyr, int d, int groups, F f) {
    const int T = blockDim.x, t = threadIdx.x;
#pragma unroll
    for (int k = 0; k < L4J_ROW_GROUPS; k++) {
        if (t + k * T < groups) {
            float v[8], g[8];
            hx[k].get(v);
            hdy[k].get(g);
            f(v, g, t + k * T, k);
        }
    }
    for (int q = t + L4J_ROW_GROUPS * T; q < groups; q += T) {
        float v[8], g[8];
        l4j_group_load<VEC>(xr, 8LL * q, d, v);
        l4j_group_load<VEC>(dyr, 8LL * q, d, g);
        f(v, g, q, -1);
    }
}

// The input gradient of RMSNorm, one block per row as the forward pass. With r = 1/sqrt(mean(x^2) + eps), y_j =
// w_j * x_j * r and g_j = w_j * dy_j:
//   dx_j = r * g_j - x_j * r^3 / d * sum_k(g_k * x_k).
// Each thread keeps its held groups of x and dy in registers from the sums to the store. dx may alias x or dy: each
// element is read and written by the same thread, and every read for the sums happens before the reductions' barriers.
//
// With DW, the row's term of the weight gradient, dy_j * x_j * r, is also added to dw[k] for each held group k (the
// caller's registers; the fused kernel below holds every group of the row), before dx may overwrite x or dy.
template <bool VEC, typename X, typename W, bool DW = false>
__device__ __forceinline__ void l4j_rmsnorm_backward_row(const X* xr, const W* __restrict__ w, float eps, const X* dyr,
                                                         X* dxr, int d, bool accumulate,
                                                         float (*dw)[L4J_GROUP] = nullptr) {
    __shared__ float partial[32];
    const int T = blockDim.x, t = threadIdx.x, groups = l4j_row_groups(d);
    const bool w_aligned = l4j_aligned16(w);
    // With accumulate, the residual gradient's old values of the held groups are loaded with x and dy, so that their
    // loads are in flight during the sums and reductions instead of after them: for 16-bit activations, where the
    // registers allow it (F32 groups would spill).
    constexpr bool HOLD_OLD = sizeof(X) == 2;
    l4j_group<X> hx[L4J_ROW_GROUPS], hdy[L4J_ROW_GROUPS], hold[HOLD_OLD ? L4J_ROW_GROUPS : 1];
#pragma unroll
    for (int k = 0; k < L4J_ROW_GROUPS; k++) {
        if (t + k * T < groups) {
            hx[k].template load<VEC>(xr, 8LL * (t + k * T), d);
            hdy[k].template load<VEC>(dyr, 8LL * (t + k * T), d);
            if (HOLD_OLD && accumulate) hold[HOLD_OLD ? k : 0].template load<VEC>(dxr, 8LL * (t + k * T), d);
        }
    }
    float ss = 0.0f, dot = 0.0f;
    auto sums = [&](const float v[8], const float g[8], int q, int) {
        float wv[8];
        l4j_weights<VEC>(w, q, d, w_aligned, wv);
#pragma unroll
        for (int k = 0; k < 8; k++) {
            ss = __fmaf_rn(v[k], v[k], ss);
            dot = __fmaf_rn(__fmul_rn(wv[k], g[k]), v[k], dot);
        }
    };
    l4j_rmsnorm_each_group_pair<VEC>(hx, hdy, xr, dyr, d, groups, sums);
    ss = l4j_block_sum(ss, partial);
    dot = l4j_block_sum(dot, partial);
    const float r = l4j_rms_inverse(ss, d, eps);
    const float c = r * r * r * dot / (float) d;
    auto gradient = [&](float v[8], const float g[8], int q, int held) {
        if (DW && held >= 0) {
#pragma unroll
            for (int k = 0; k < 8; k++) dw[held][k] = __fmaf_rn(__fmul_rn(g[k], v[k]), r, dw[held][k]);
        }
        float wv[8];
        l4j_weights<VEC>(w, q, d, w_aligned, wv);
#pragma unroll
        for (int k = 0; k < 8; k++) v[k] = __fsub_rn(__fmul_rn(r, __fmul_rn(wv[k], g[k])), __fmul_rn(v[k], c));
        if (accumulate) {
            // The residual stream's gradient: the old value plus this one, rounded once.
            float old[8];
            if (HOLD_OLD && held >= 0) {
                hold[HOLD_OLD ? held : 0].get(old);
            } else {
                l4j_group_load<VEC>(dxr, 8LL * q, d, old);
            }
#pragma unroll
            for (int k = 0; k < 8; k++) v[k] = __fadd_rn(old[k], v[k]);
        }
        l4j_group_store<VEC>(dxr, 8LL * q, d, v);
    };
    l4j_rmsnorm_each_group_pair<VEC>(hx, hdy, xr, dyr, d, groups, gradient);
}

template <typename X, typename W>
__device__ __forceinline__ void l4j_rmsnorm_backward(const X* x, const W* __restrict__ w, float eps, const X* dy, X* dx,
                                                     int d, bool accumulate) {
    const long long base = (long long) blockIdx.x * d;
    if (l4j_rows_aligned(d, x + base, dy + base) && l4j_aligned16(dx + base)) {
        l4j_rmsnorm_backward_row<true>(x + base, w, eps, dy + base, dx + base, d, accumulate);
    } else {
        l4j_rmsnorm_backward_row<false>(x + base, w, eps, dy + base, dx + base, d, accumulate);
    }
}

// accumulate != 0: dx += the gradient (dx then neither x nor dy).
#define L4J_RMSNORM_BACKWARD(name, X, W) \
    extern "C" __global__ void __launch_bounds__(L4J_ROW_MAX_THREADS) \
    lora4j_rmsnorm_backward_##name(const X* x, const W* w, float eps, const X* dy, X* dx, int d, int accumulate) { \
        l4j_rmsnorm_backward<X, W>(x, w, eps, dy, dx, d, accumulate != 0); \
    }

L4J_RMSNORM_BACKWARD(f32, float, float)
L4J_RMSNORM_BACKWARD(bf16, float, l4j_bf16)
L4J_RMSNORM_BACKWARD(f16, float, l4j_f16)
L4J_RMSNORM_BACKWARD(bf16act_f32, l4j_bf16, float)
L4J_RMSNORM_BACKWARD(bf16act_bf16, l4j_bf16, l4j_bf16)
L4J_RMSNORM_BACKWARD(bf16act_f16, l4j_bf16, l4j_f16)

// The input gradient and the weight gradient's partial sums in one pass, for rows a block holds whole in registers
// (at most L4J_ROW_GROUPS groups per thread: CudaKernels.fusedRmsNormBackward): each block takes rows_per_block rows
// in order, one after another, computing each row's dx as lora4j_rmsnorm_backward does (the same bits) while its
// threads add dy_j * x_j * r into registers for their own columns, the same columns in every row; then it writes
// partial[block, j], and lora4j_rmsnorm_weight_grad_sum adds the blocks' sums to dw in block order. So x and dy are
// read once, where the unfused path reads x three times and dy twice (the inverse, the weight gradient's pass, then
// the input gradient).
template <bool VEC, typename X, typename W>
__device__ __forceinline__ void l4j_rmsnorm_backward_fused_rows(const X* x, const W* __restrict__ w, float eps,
                                                                const X* dy, X* dx, float* __restrict__ partial,
                                                                long long rows, int d, int rows_per_block,
                                                                bool accumulate) {
    float acc[L4J_ROW_GROUPS][L4J_GROUP];
#pragma unroll
    for (int k = 0; k < L4J_ROW_GROUPS; k++) {
#pragma unroll
        for (int e = 0; e < L4J_GROUP; e++) acc[k][e] = 0.0f;
    }
    const long long first = (long long) blockIdx.x * rows_per_block;
    const long long end = first + rows_per_block < rows ? first + rows_per_block : rows;
    for (long long row = first; row < end; row++) {
        const long long base = row * d;
        l4j_rmsnorm_backward_row<VEC, X, W, true>(x + base, w, eps, dy + base, dx + base, d, accumulate, acc);
    }
    const int T = blockDim.x, t = threadIdx.x, groups = l4j_row_groups(d);
    float* dst = partial + (long long) blockIdx.x * d;
#pragma unroll
    for (int k = 0; k < L4J_ROW_GROUPS; k++) {
        if (t + k * T < groups) l4j_group_store<VEC>(dst, 8LL * (t + k * T), d, acc[k]);
    }
}

template <typename X, typename W>
__device__ __forceinline__ void l4j_rmsnorm_backward_fused(const X* x, const W* __restrict__ w, float eps, const X* dy,
                                                           X* dx, float* partial, long long rows, int d,
                                                           int rows_per_block, bool accumulate) {
    // Every row is aligned when the first is and rows are whole groups; partial's rows are then too.
    if (l4j_rows_aligned(d, x, dy) && l4j_aligned16(dx) && l4j_aligned16(partial)) {
        l4j_rmsnorm_backward_fused_rows<true>(x, w, eps, dy, dx, partial, rows, d, rows_per_block, accumulate);
    } else {
        l4j_rmsnorm_backward_fused_rows<false>(x, w, eps, dy, dx, partial, rows, d, rows_per_block, accumulate);
    }
}

#define L4J_RMSNORM_BACKWARD_FUSED(name, X, W) \
    extern "C" __global__ void __launch_bounds__(L4J_ROW_MAX_THREADS) \
    lora4j_rmsnorm_backward_fused_##name(const X* x, const W* w, float eps, const X* dy, X* dx, float* partial, \
                                         long long rows, int d, int rows_per_block, int accumulate) { \
        l4j_rmsnorm_backward_fused<X, W>(x, w, eps, dy, dx, partial, rows, d, rows_per_block, accumulate != 0); \
    }

L4J_RMSNORM_BACKWARD_FUSED(f32, float, float)
L4J_RMSNORM_BACKWARD_FUSED(bf16, float, l4j_bf16)
L4J_RMSNORM_BACKWARD_FUSED(f16, float, l4j_f16)
L4J_RMSNORM_BACKWARD_FUSED(bf16act_f32, l4j_bf16, float)
L4J_RMSNORM_BACKWARD_FUSED(bf16act_bf16, l4j_bf16, l4j_bf16)
L4J_RMSNORM_BACKWARD_FUSED(bf16act_f16, l4j_bf16, l4j_f16)

// inv[row] = 1/sqrt(mean(x^2) + eps), one block per row as above: the scale of the forward and
// backward passes bit for bit (the same sum), for the weight gradient below.
template <bool VEC, typename X>
__device__ __forceinline__ void l4j_rmsnorm_inverse_row(const X* row, float eps, float* __restrict__ inv, int d) {
    __shared__ float partial[32];
    l4j_group<X> held[L4J_ROW_GROUPS];
    const float ss = l4j_block_sum(l4j_hold_and_square<VEC>(row, d, held), partial);
    if (threadIdx.x == 0) inv[blockIdx.x] = l4j_rms_inverse(ss, d, eps);
}

template <typename X>
__device__ __forceinline__ void l4j_rmsnorm_inverse(const X* x, float eps, float* __restrict__ inv, int d) {
    const X* row = x + (long long) blockIdx.x * d;
    if (l4j_rows_aligned(d, row, row)) l4j_rmsnorm_inverse_row<true>(row, eps, inv, d);
    else l4j_rmsnorm_inverse_row<false>(row, eps, inv, d);
}

extern "C" __global__ void __launch_bounds__(L4J_ROW_MAX_THREADS)
lora4j_rmsnorm_inverse_f32(const float* x, float eps, float* inv, int d) {
    l4j_rmsnorm_inverse(x, eps, inv, d);
}

extern "C" __global__ void __launch_bounds__(L4J_ROW_MAX_THREADS)
lora4j_rmsnorm_inverse_bf16(const l4j_bf16* x, float eps, float* inv, int d) {
    l4j_rmsnorm_inverse(x, eps, inv, d);
}

// The weight gradient of RMSNorm, dw[j] += sum over rows of dy[r, j] * x[r, j] * inv[r] (dw F32), in two steps with
// a fixed order, so deterministic and the same on every GPU. It runs before the input gradient, which may overwrite x
// or dy.
//
// First, partial[c, j] = the sum over chunk c's L4J_WGRAD_ROWS rows. A block of 256 threads takes 256 columns of one
// chunk: 32 lanes of 8 columns (16-byte loads when rows are aligned) by 8 row lanes, each of which adds its rows in
// order, L4J_WGRAD_BATCH rows' loads at a time; the row lanes' sums are then added in order. Blocks are numbered
// column tile first. Then lora4j_rmsnorm_weight_grad_sum adds the chunks' partial sums to dw in chunk order.
#define L4J_WGRAD_ROWS 64
#define L4J_WGRAD_BATCH 4

template <bool VEC, typename X>
__device__ __forceinline__ void l4j_rmsnorm_weight_partial(const X* x, const X* dy, const float* __restrict__ inv,
                                                           float* __restrict__ partial, long long rows, int d) {
    __shared__ float sums[8][256];
    const int tiles = (d + 255) / 256;
    const int tile = (int) (blockIdx.x % tiles);
    const long long chunk = blockIdx.x / tiles;
    const int lane = threadIdx.x % 32, ry = threadIdx.x / 32;
    const long long j = (long long) tile * 256 + lane * L4J_GROUP;
    float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    if (j < d) {
        for (int b = 0; b < L4J_WGRAD_ROWS / 8; b += L4J_WGRAD_BATCH) {
            l4j_group<X> gx[L4J_WGRAD_BATCH], gdy[L4J_WGRAD_BATCH];
            float r[L4J_WGRAD_BATCH];
#pragma unroll
            for (int k = 0; k < L4J_WGRAD_BATCH; k++) {
                long long row = chunk * L4J_WGRAD_ROWS + ry + 8 * (b + k);
                if (row < rows) {
                    gx[k].template load<VEC>(x + row * d, j, d);
                    gdy[k].template load<VEC>(dy + row * d, j, d);
                    r[k] = inv[row];
                }
            }
#pragma unroll
            for (int k = 0; k < L4J_WGRAD_BATCH; k++) {
                if (chunk * L4J_WGRAD_ROWS + ry + 8 * (b + k) < rows) {
                    float v[8], g[8];
                    gx[k].get(v);
                    gdy[k].get(g);
#pragma unroll
                    for (int e = 0; e < 8; e++) acc[e] = __fmaf_rn(__fmul_rn(g[e], v[e]), r[k], acc[e]);
                }
            }
        }
    }
#pragma unroll
    for (int e = 0; e < 8; e++) sums[ry][lane * L4J_GROUP + e] = acc[e];
    __syncthreads();
    const long long column = (long long) tile * 256 + threadIdx.x;
    if (column < d) {
        float total = sums[0][threadIdx.x];
        for (int y = 1; y < 8; y++) total = __fadd_rn(total, sums[y][threadIdx.x]);
        partial[chunk * d + column] = total;
    }
}

template <typename X>
__device__ __forceinline__ void l4j_rmsnorm_weight_grad(const X* x, const X* dy, const float* __restrict__ inv,
                                                        float* __restrict__ partial, long long rows, int d) {
    if (l4j_rows_aligned(d, x, dy)) l4j_rmsnorm_weight_partial<true>(x, dy, inv, partial, rows, d);
    else l4j_rmsnorm_weight_partial<false>(x, dy, inv, partial, rows, d);
}

extern "C" __global__ void __launch_bounds__(256)
lora4j_rmsnorm_weight_grad_f32(const float* x, const float* dy, const float* inv, float* partial, long long rows,
                               int d) {
    l4j_rmsnorm_weight_grad(x, dy, inv, partial, rows, d);
}

extern "C" __global__ void __launch_bounds__(256)
lora4j_rmsnorm_weight_grad_bf16(const l4j_bf16* x, const l4j_bf16* dy, const float* inv, float* partial,
                                long long rows, int d) {
    l4j_rmsnorm_weight_grad(x, dy, inv, partial, rows, d);
}

// dw[j] += the sum of partial[c, j] over the chunks c, in a fixed order: a block of 256 threads takes 32 columns, and
// its 8 row lanes each add every 8th chunk (lane r: chunks r, r + 8, ...) in order, then the lanes' sums are added in
// lane order. One thread per column adding every chunk in turn would be a chain of dependent loads hundreds long (the
// fused backward pass writes a row of partial sums per 8 rows: 512 for 4096 tokens), with only d threads in flight.
#define L4J_WGRAD_SUM_LANES 8

extern "C" __global__ void __launch_bounds__(32 * L4J_WGRAD_SUM_LANES)
lora4j_rmsnorm_weight_grad_sum(const float* __restrict__ partial, float* __restrict__ dw, int chunks, int d) {
    __shared__ float sums[L4J_WGRAD_SUM_LANES][32];
    const int lane = threadIdx.x % 32, r = threadIdx.x / 32;
    const long long j = (long long) blockIdx.x * 32 + lane;
    float total = 0.0f;
    if (j < d) {
#pragma unroll 8
        for (int c = r; c < chunks; c += L4J_WGRAD_SUM_LANES) total = __fadd_rn(total, partial[(long long) c * d + j]);
    }
    sums[r][lane] = total;
    __syncthreads();
    if (r == 0 && j < d) {
        float all = sums[0][lane];
#pragma unroll
        for (int y = 1; y < L4J_WGRAD_SUM_LANES; y++) all = __fadd_rn(all, sums[y][lane]);
        dw[j] = __fadd_rn(dw[j], all);
    }
}
