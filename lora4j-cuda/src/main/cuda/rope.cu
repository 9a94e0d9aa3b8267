// Rotary position embedding in place, Hugging Face's rotate_half layout: within each head, element j pairs with
// element j + headDim/2. One thread per (row, pair j), or per (row, 8 adjacent pairs) when 16-byte accesses are
// possible; it computes the angles once and rotates those pairs in every head. The backward pass rotates by the
// opposite angle (the transpose of a rotation is its inverse). BF16 activations are widened, rotated in FP32 and
// rounded once.
#include "common.cuh"

// One pair rotated by (c, s). Explicit roundings keep the compiler from fusing these into FMAs, so they round as the
// CPU's do.
template <bool INVERSE>
__device__ __forceinline__ void l4j_rotate(float& a, float& b, float c, float s) {
    float ra, rb;
    if (INVERSE) {
        ra = __fadd_rn(__fmul_rn(a, c), __fmul_rn(b, s));
        rb = __fsub_rn(__fmul_rn(b, c), __fmul_rn(a, s));
    } else {
        ra = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
        rb = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
    }
    a = ra;
    b = rb;
}

// The angle of pair j at a position is an FP32 product, as torch computes it; cosf/sinf are the accurate ones (no fast
// math), which matters because positions times frequencies reach tens of thousands of radians.
__device__ __forceinline__ float l4j_rope_angle(int position, float inv_freq) {
    return __fmul_rn((float) position, inv_freq);
}

template <bool INVERSE, typename T>
__device__ __forceinline__ void l4j_rope(T* x, const int* __restrict__ positions, const float* __restrict__ inv_freq,
                                         int n, int width, int head_dim) {
    int half = head_dim / 2;
    int heads = width / head_dim;
    if (half % L4J_GROUP == 0 && l4j_aligned16(x)) {
        // Eight adjacent pairs per thread: 16-byte accesses to both halves of each head (rows stay aligned, as width
        // is a multiple of head_dim and so of 16).
        int groups = half / L4J_GROUP;
        L4J_FOR_EACH(idx, (long long) n * groups) {
            long long r = idx / groups;
            int j = (int) (idx - r * groups) * L4J_GROUP;
            float c[L4J_GROUP], s[L4J_GROUP];
#pragma unroll
            for (int k = 0; k < L4J_GROUP; k++) {
                float angle = l4j_rope_angle(positions[r], inv_freq[j + k]);
                c[k] = cosf(angle);
                s[k] = sinf(angle);
            }
            T* base = x + r * width + j;
            for (int h = 0; h < heads; h++) {
                T* p = base + (long long) h * head_dim;
                float a[L4J_GROUP], b[L4J_GROUP];
                l4j_load8(p, 0, a);
                l4j_load8(p, half, b);
#pragma unroll
                for (int k = 0; k < L4J_GROUP; k++) l4j_rotate<INVERSE>(a[k], b[k], c[k], s[k]);
                l4j_store8(p, 0, a);
                l4j_store8(p, half, b);
            }
        }
        return;
    }
    L4J_FOR_EACH(idx, (long long) n * half) {
        long long r = idx / half;
        int j = (int) (idx - r * half);
        float angle = l4j_rope_angle(positions[r], inv_freq[j]);
        float c = cosf(angle), s = sinf(angle);
        T* base = x + r * width + j;
        for (int h = 0; h < heads; h++) {
            T* p = base + (long long) h * head_dim;
            float a = l4j_load(p, 0), b = l4j_load(p, half);
            l4j_rotate<INVERSE>(a, b, c, s);
            l4j_store(p, 0, a);
            l4j_store(p, half, b);
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
