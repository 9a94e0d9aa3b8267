// Fused cross-entropy over rows of F32 logits, in place: one block per row reads the row for its maximum, again
// for the sum of exp(x - max), and then overwrites it with the gradient (softmax - onehot) * grad_scale.
// Subtracting the maximum keeps every exponential in [0, 1]; their sum is kept in double (a vocabulary of 150,000
// small terms), the loss max + log(sum) - x[target] is formed in double and rounded once, and the gradient is
// exp(x - max) * (grad_scale / sum): the CPU backend's arithmetic. A row whose target is negative (ignored) gets
// loss 0 and a zero gradient.
#include "common.cuh"

#define L4J_CE_THREADS 512

extern "C" __global__ void __launch_bounds__(L4J_CE_THREADS)
lora4j_cross_entropy_f32(float* logits, const int* __restrict__ targets, float grad_scale, float* __restrict__ losses,
                         int vocab) {
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
    float m = -INFINITY;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) m = fmaxf(m, row[j]);
    m = l4j_block_max(m, partial);
    double s = 0.0;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) s += (double) expf(row[j] - m);
    s = l4j_block_sum(s, partial_d);
    if (threadIdx.x == 0) losses[blockIdx.x] = (float) ((double) m + log(s) - (double) x_target);
    const float factor = (float) ((double) grad_scale / s);
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
        float g = expf(row[j] - m) * factor;
        row[j] = j == target ? g - grad_scale : g;
    }
}
