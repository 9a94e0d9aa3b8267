// Rotary position embedding in place, Hugging Face's rotate_half layout: within each head, element j pairs with
// element j + headDim/2. One thread per (row, pair j); it computes the angle once and rotates that pair in every head.
// The backward pass rotates by the opposite angle (the transpose of a rotation is its inverse). BF16 activations are
// widened, rotated in FP32 and rounded once.
#include "common.cuh"

template <bool INVERSE, typename T>
__device__ __forceinline__ void l4j_rope(T* x, const int* __restrict__ positions, const float* __restrict__ inv_freq,
                                         int n, int width, int head_dim) {
    int half = head_dim / 2;
    int heads = width / head_dim;
    L4J_FOR_EACH(idx, (long long) n * half) {
        long long r = idx / half;
        int j = (int) (idx - r * half);
        // The angle is an FP32 product, as torch computes it; cosf/sinf are the accurate ones (no fast math), which
        // matters because positions times frequencies reach tens of thousands of radians.
        float angle = __fmul_rn((float) positions[r], inv_freq[j]);
        float c = cosf(angle), s = sinf(angle);
        T* base = x + r * width + j;
        for (int h = 0; h < heads; h++) {
            T* p = base + (long long) h * head_dim;
            float a = l4j_load(p, 0), b = l4j_load(p, half);
            // Explicit roundings keep the compiler from fusing these into FMAs, so they round as the CPU's do.
            if (INVERSE) {
                l4j_store(p, 0, __fadd_rn(__fmul_rn(a, c), __fmul_rn(b, s)));
                l4j_store(p, half, __fsub_rn(__fmul_rn(b, c), __fmul_rn(a, s)));
            } else {
                l4j_store(p, 0, __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s)));
                l4j_store(p, half, __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s)));
            }
        }
    }
}

extern "C" __global__ void lora4j_rope_f32(float* x, const int* positions, const float* inv_freq, int n, int width,
                                           int head_dim) {
    l4j_rope<false>(x, positions, inv_freq, n, width, head_dim);
}

extern "C" __global__ void lora4j_rope_backward_f32(float* x, const int* positions, const float* inv_freq, int n,
                                                    int width, int head_dim) {
    l4j_rope<true>(x, positions, inv_freq, n, width, head_dim);
}

extern "C" __global__ void lora4j_rope_bf16(l4j_bf16* x, const int* positions, const float* inv_freq, int n, int width,
                                            int head_dim) {
    l4j_rope<false>(x, positions, inv_freq, n, width, head_dim);
}

extern "C" __global__ void lora4j_rope_backward_bf16(l4j_bf16* x, const int* positions, const float* inv_freq, int n,
                                                     int width, int head_dim) {
    l4j_rope<true>(x, positions, inv_freq, n, width, head_dim);
}
