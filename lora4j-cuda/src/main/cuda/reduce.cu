// Reductions for the backward pass and the optimizer: column sums over the rows of a matrix (bias gradients) and
// the sum of squares of a tensor (the gradient norm). Both are deterministic: a fixed grid and a fixed order of
// additions for a given shape, no atomics, so a training run repeats bit for bit.
#include "common.cuh"

#define L4J_COLUMN_THREADS_X 32
#define L4J_COLUMN_THREADS_Y 8

// out[j] += sum over rows r of dy[r, j], out F32 whatever dy's type. A block of 256 threads takes 32 adjacent
// columns (each warp reads a coalesced piece of a row) and 8 row lanes, whose partial sums are added in shared memory.
template <typename G>
__device__ __forceinline__ void l4j_sum_rows(const G* __restrict__ dy, float* __restrict__ out, long long rows,
                                             int cols) {
    __shared__ float partial[L4J_COLUMN_THREADS_Y][L4J_COLUMN_THREADS_X];
    const int tx = threadIdx.x % L4J_COLUMN_THREADS_X, ty = threadIdx.x / L4J_COLUMN_THREADS_X;
    const int j = blockIdx.x * L4J_COLUMN_THREADS_X + tx;
    float s = 0.0f;
    if (j < cols) {
        for (long long r = ty; r < rows; r += L4J_COLUMN_THREADS_Y) s += l4j_load(dy, r * cols + j);
    }
    partial[ty][tx] = s;
    __syncthreads();
    if (ty == 0 && j < cols) {
        float total = partial[0][tx];
        for (int y = 1; y < L4J_COLUMN_THREADS_Y; y++) total += partial[y][tx];
        out[j] += total;
    }
}

extern "C" __global__ void __launch_bounds__(L4J_COLUMN_THREADS_X * L4J_COLUMN_THREADS_Y)
lora4j_sum_rows_f32(const float* dy, float* out, long long rows, int cols) {
    l4j_sum_rows(dy, out, rows, cols);
}

extern "C" __global__ void __launch_bounds__(L4J_COLUMN_THREADS_X * L4J_COLUMN_THREADS_Y)
lora4j_sum_rows_bf16(const l4j_bf16* dy, float* out, long long rows, int cols) {
    l4j_sum_rows(dy, out, rows, cols);
}

#define L4J_SQUARES_THREADS 256
#define L4J_SQUARES_MAX_BLOCKS 1024

// First stage of the sum of squares: each block's share of sum(x[i]^2), in double, into partial[blockIdx.x]. Each
// value is widened to double (exactly, from F32 or BF16) before it is squared. BF16 values (a pure-BF16 model's
// gradients, the whole model's worth each step) are read 8 at a time with 16-byte accesses where x is aligned. F32
// values keep the element-by-element loop: grouping would change the order of their additions, and so the last bits
// of the gradient norms that F32 training runs have given so far.
template <typename T>
__device__ __forceinline__ void l4j_sum_squares_partial(const T* __restrict__ x, double* __restrict__ partial,
                                                        long long n, bool grouped) {
    __shared__ double shared32[32];
    double s = 0.0;
    l4j_groups_then_rest(
            n, grouped && l4j_aligned16(x),
            [&](long long j) {
                float v[L4J_GROUP];
                l4j_load8(x, j, v);
#pragma unroll
                for (int k = 0; k < L4J_GROUP; k++) s += (double) v[k] * (double) v[k];
            },
            [&](long long i) {
                double v = (double) l4j_load(x, i);
                s += v * v;
            });
    s = l4j_block_sum(s, shared32);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

extern "C" __global__ void __launch_bounds__(L4J_SQUARES_THREADS)
lora4j_sum_squares_partial_f32(const float* __restrict__ x, double* __restrict__ partial, long long n) {
    l4j_sum_squares_partial(x, partial, n, false);
}

extern "C" __global__ void __launch_bounds__(L4J_SQUARES_THREADS)
lora4j_sum_squares_partial_bf16(const l4j_bf16* __restrict__ x, double* __restrict__ partial, long long n) {
    l4j_sum_squares_partial(x, partial, n, true);
}

// Second stage, one block: total[0] = sum of the blocks' partial sums.
extern "C" __global__ void __launch_bounds__(L4J_SQUARES_THREADS)
lora4j_sum_squares_total(const double* __restrict__ partial, double* __restrict__ total, int count) {
    __shared__ double shared32[32];
    double s = 0.0;
    for (int i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
    s = l4j_block_sum(s, shared32);
    if (threadIdx.x == 0) total[0] = s;
}
