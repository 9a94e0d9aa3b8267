// Fused cross-entropy over rows of F32 logits, in place: one block per row reads the row for its maximum, again
// for the sum of exp(x - max), and then overwrites it with the gradient (softmax - onehot) * grad_scale. The loss
// is log(sum) + max - x[target]; subtracting the maximum keeps every exponential in [0, 1]. A row whose target
// is negative (ignored) gets loss 0 and a zero gradient.
#include "common.cuh"

#define L4J_CE_THREADS 512

extern "C" __global__ void __launch_bounds__(L4J_CE_THREADS)
lora4j_cross_entropy_f32(float* logits, const int* __restrict__ targets, float grad_scale, float* __restrict__ losses,
                         int vocab) {
    __shared__ float partial[32];
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
    float s = 0.0f;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) s += expf(row[j] - m);
    s = l4j_block_sum(s, partial);
    if (threadIdx.x == 0) losses[blockIdx.x] = (m + logf(s)) - x_target;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
        float p = expf(row[j] - m) / s;
        row[j] = (j == target ? p - 1.0f : p) * grad_scale;
    }
}
