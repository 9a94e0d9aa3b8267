// Fused cross-entropy over rows of F32 logits, in place: one block per row reads the row for its maximum, again
// for the sum of exp(x - max), and then overwrites it with the gradient (softmax - onehot) * grad_scale (the rows
// that fit in registers are read once: see below).
// Subtracting the maximum keeps every exponential in [0, 1]; their sum is kept in double (a vocabulary of 150,000
// small terms), the loss max + log(sum) - x[target] is formed in double and rounded once, and the gradient is
// exp(x - max) * (grad_scale / sum): the CPU backend's arithmetic. A row whose target is negative (ignored) gets
// loss 0 and a zero gradient.
#include "common.cuh"

#define L4J_CE_THREADS 512

// Rows of at most L4J_CE_HELD_THREADS * L4J_CE_HELD logits (32,768: Llama 2's and Mistral's 32,000) are read once
// instead, by blocks of 1024 threads: each thread holds its elements, j = t, t + T, ..., in registers from the maximum
// to the gradient it writes, and keeps exp(x - max) there between the sum and the gradient. The arithmetic is the
// streaming kernel's (each thread's terms in order, then the block's sum), over 1024 threads instead of 512; the held
// rows move a third of the bytes.
#define L4J_CE_HELD 32
#define L4J_CE_HELD_THREADS 1024

template <int HELD>  // 0: stream the row from memory three times; else launched with L4J_CE_HELD_THREADS threads
__device__ __forceinline__ void l4j_cross_entropy(float* logits, const int* __restrict__ targets, float grad_scale,
                                                  float* __restrict__ losses, int vocab) {
    __shared__ float partial[32];
    __shared__ double partial_d[32];
    float* row = logits + (long long) blockIdx.x * vocab;
    const int target = targets[blockIdx.x];
    if (target < 0) {
        for (int j = threadIdx.x; j < vocab; j += blockDim.x) row[j] = 0.0f;
        if (threadIdx.x == 0) losses[blockIdx.x] = 0.0f;
        return;
    }
    const float x_target = row[target];  // read before the barriers below, after which the row is overwritten
    constexpr int H = HELD > 0 ? HELD : 1;
    float held[H];
    float m = -INFINITY;
    if (HELD > 0) {
#pragma unroll
        for (int k = 0; k < H; k++) {
            const int j = threadIdx.x + k * L4J_CE_HELD_THREADS;  // a constant stride: offsets in the instructions
            held[k] = j < vocab ? row[j] : -INFINITY;
            m = fmaxf(m, held[k]);
        }
    } else {
        for (int j = threadIdx.x; j < vocab; j += blockDim.x) m = fmaxf(m, row[j]);
    }
    m = l4j_block_max(m, partial);
    double s = 0.0;
    if (HELD > 0) {
#pragma unroll
        for (int k = 0; k < H; k++) {
            if (threadIdx.x + k * L4J_CE_HELD_THREADS < vocab) {
                held[k] = expf(held[k] - m);
                s += (double) held[k];
            }
        }
    } else {
        for (int j = threadIdx.x; j < vocab; j += blockDim.x) s += (double) expf(row[j] - m);
    }
    s = l4j_block_sum(s, partial_d);
    if (threadIdx.x == 0) losses[blockIdx.x] = (float) ((double) m + log(s) - (double) x_target);
    const float factor = (float) ((double) grad_scale / s);
    if (HELD > 0) {
#pragma unroll
        for (int k = 0; k < H; k++) {
            const int j = threadIdx.x + k * L4J_CE_HELD_THREADS;
            if (j < vocab) {
                const float g = held[k] * factor;
                row[j] = j == target ? g - grad_scale : g;
            }
        }
    } else {
        for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
            float g = expf(row[j] - m) * factor;
            row[j] = j == target ? g - grad_scale : g;
        }
    }
}

extern "C" __global__ void __launch_bounds__(L4J_CE_THREADS)
lora4j_cross_entropy_f32(float* logits, const int* targets, float grad_scale, float* losses, int vocab) {
    l4j_cross_entropy<0>(logits, targets, grad_scale, losses, vocab);
}

extern "C" __global__ void __launch_bounds__(L4J_CE_HELD_THREADS)
lora4j_cross_entropy_held_f32(float* logits, const int* targets, float grad_scale, float* losses, int vocab) {
    l4j_cross_entropy<L4J_CE_HELD>(logits, targets, grad_scale, losses, vocab);
}
