// bitsandbytes' AdamW updates (docs/optimizers.md): the 8-bit blockwise one (kOptimizerStatic8bit2StateBlockwise)
// and the 32-bit one (kOptimizer32bit2State), for F32 parameters and gradients. Every product, sum, quotient and
// square root goes through exact.cuh's correctly rounded, never fused operations, in the order the CPU backend
// (BitsandbytesAdamKernels) performs them, so that both backends write the same bytes. The per-step scalars come
// from the host (BitsandbytesAdam.Scalars); 1 - beta is one float subtraction on either side.
#include "code_search.cuh"
#include "exact.cuh"

// Elements per absmax, and threads per block of the 8-bit kernel: one thread per element of a block.
#define L4J_BNB_BLOCK 256
#define L4J_BNB_LOWEST (-3.402823466e+38f)  // -FLT_MAX, where bitsandbytes starts its maximum

__device__ __forceinline__ bool l4j_bnb_finite(float x) {
    return (l4j_float_bits(x) & 0x7f800000u) != 0x7f800000u;
}

__device__ __forceinline__ bool l4j_bnb_sign(float x) { return (l4j_float_bits(x) >> 31) != 0; }

// bitsandbytes' quantize_2D (code_search.cuh): bounds -1 (signed) or 0 (unsigned) below and 1 above, kept.
__device__ __forceinline__ int l4j_bnb_quantize(const float* code, float x, bool is_signed) {
    return l4j_code_search(code, x, is_signed ? -1.0f : 0.0f, false);
}

// One step over n elements; block b of 256 elements is handled by one CUDA block of 256 threads at a time. Lanes past
// the end of the tensor take part in the absmax as bitsandbytes' do: gradient 0, m code 128, v code 0.
extern "C" __global__ void __launch_bounds__(L4J_BNB_BLOCK)
lora4j_adamw_8bit_f32(float* __restrict__ param, const float* __restrict__ grad, unsigned char* __restrict__ m8,
                      unsigned char* __restrict__ v8, float* __restrict__ absmax_m, float* __restrict__ absmax_v,
                      const float* __restrict__ code_signed, const float* __restrict__ code_unsigned, float beta1,
                      float beta2, float step_size, float eps_c2, float decay, int decays, long long n) {
    const float one_minus_beta1 = l4j_sub(1.0f, beta1), one_minus_beta2 = l4j_sub(1.0f, beta2);
    __shared__ float qs[L4J_BNB_BLOCK];
    __shared__ float qu[L4J_BNB_BLOCK];
    __shared__ float shared32[32];
    const int t = threadIdx.x;
    qs[t] = code_signed[t];
    qu[t] = code_unsigned[t];
    __syncthreads();
    const long long blocks = (n + L4J_BNB_BLOCK - 1) / L4J_BNB_BLOCK;
    for (long long b = blockIdx.x; b < blocks; b += gridDim.x) {
        const long long i = b * L4J_BNB_BLOCK + t;
        const bool valid = i < n;
        const float g = valid ? grad[i] : 0.0f;
        const int c1 = valid ? m8[i] : 128;
        const int c2 = valid ? v8[i] : 0;
        const bool finite = l4j_bnb_finite(g);
        float s1 = 0.0f, s2 = 0.0f;
        if (finite) {
            s2 = l4j_mul(qu[c2], absmax_v[b]);
            s2 = l4j_add(l4j_mul(s2, beta2), l4j_mul(l4j_mul(one_minus_beta2, g), g));
            s1 = l4j_mul(qs[c1], absmax_m[b]);
            s1 = l4j_add(l4j_mul(s1, beta1), l4j_mul(one_minus_beta1, g));
        }
        // NaN magnitudes drop out (fmaxf passes over them); the others give the exact maximum in any order.
        const float a1 = fabsf(s1), a2 = fabsf(s2);
        // Every thread has read the old absmax before these barriers, so thread 0 may overwrite it after them.
        const float new_m = l4j_block_max(a1 > L4J_BNB_LOWEST ? a1 : L4J_BNB_LOWEST, shared32);
        const float new_v = l4j_block_max(a2 > L4J_BNB_LOWEST ? a2 : L4J_BNB_LOWEST, shared32);
        if (t == 0) {
            absmax_m[b] = new_m;
            absmax_v[b] = new_v;
        }
        if (valid) {
            if (finite) {
                float p = l4j_add(param[i], l4j_mul(step_size, l4j_div(s1, l4j_add(l4j_sqrt(s2), eps_c2))));
                if (decays) p = l4j_mul(p, decay);
                param[i] = p;
            }
            int q1 = l4j_bnb_quantize(qs, l4j_div(s1, new_m), true);
            // The moment keeps its sign: one code further if the nearest code has the other sign bit.
            if (l4j_bnb_sign(qs[q1]) != l4j_bnb_sign(s1)) q1 = (s1 > 0.0f ? q1 + 1 : q1 - 1) & 0xff;
            m8[i] = (unsigned char) q1;
            v8[i] = (unsigned char) l4j_bnb_quantize(qu, l4j_div(s2, new_v), false);
        }
    }
}

// One step of the 32-bit update over n elements (grid-stride).
extern "C" __global__ void lora4j_adamw_32bit_f32(float* __restrict__ param, const float* __restrict__ grad,
                                                  float* __restrict__ m, float* __restrict__ v, float beta1,
                                                  float beta2, float step_size, float eps_c2, float decay, int decays,
                                                  long long n) {
    const float one_minus_beta1 = l4j_sub(1.0f, beta1), one_minus_beta2 = l4j_sub(1.0f, beta2);
    L4J_FOR_EACH(i, n) {
        const float g = grad[i];
        const float mi = l4j_add(l4j_mul(m[i], beta1), l4j_mul(one_minus_beta1, g));
        const float vi = l4j_add(l4j_mul(v[i], beta2), l4j_mul(one_minus_beta2, l4j_mul(g, g)));
        float p = l4j_add(param[i], l4j_mul(step_size, l4j_div(mi, l4j_add(l4j_sqrt(vi), eps_c2))));
        if (decays) p = l4j_mul(p, decay);
        param[i] = p;
        m[i] = mi;
        v[i] = vi;
    }
}
