// bitsandbytes' binary search of a sorted 256-value 8-bit code, in both of its forms (dev.lora4j.quant.Blockwise8bit
// .search is the host definition): from index 127 in seven halving steps, remembering the last code below and above
// x (starting from lower_bound below and 1 above), then the nearer of the final candidate and its neighbour on x's
// side by their midpoint (a + b) * 0.5f, a value on the midpoint keeping the final candidate. dQuantize<0> (double
// quantization) starts from -1 and takes the bounds at the ends of the code from the code itself
// (bounds_from_code); the 8-bit optimizers' quantize_2D starts from -1 (signed map) or 0 (unsigned) and keeps its
// bounds. NaN ends at index 0, every comparison with it being false. Exact (never fused) float operations.
#pragma once

#include "exact.cuh"

__device__ __forceinline__ int l4j_code_search(const float* code, float x, float lower_bound, bool bounds_from_code) {
    int pivot = 127, upper_pivot = 255, lower_pivot = 0;
    float lower = lower_bound, upper = 1.0f;
    float val = code[pivot];
    for (int i = 64; i > 0; i >>= 1) {
        if (x > val) {
            lower_pivot = pivot;
            lower = val;
            pivot += i;
        } else {
            upper_pivot = pivot;
            upper = val;
            pivot -= i;
        }
        val = code[pivot];
    }
    if (bounds_from_code) {
        if (upper_pivot == 255) upper = code[upper_pivot];
        if (lower_pivot == 0) lower = code[lower_pivot];
    }
    if (x > val) return x > l4j_mul(l4j_add(upper, val), 0.5f) ? upper_pivot : pivot;
    return x < l4j_mul(l4j_add(lower, val), 0.5f) ? lower_pivot : pivot;
}
