// Arithmetic that must give the same bits on the GPU as on the CPU backend: the dropout hash (a pure function
// of seed and element index, one mix per group of four elements) and the AdamW update (a fixed sequence of correctly
// rounded float operations).
//
// The functions compile for the device and for the host. On the device, nvcc would fuse a*b+c into one FMA
// (one rounding instead of two, and the CPU backend rounds twice), so every product and sum goes through the
// _rn intrinsics, which nvcc never contracts. On the host they are plain operations; the test harness
// (src/test/cuda/exact_harness.cpp) is built with -ffp-contract=off and checks them bit for bit against Java.
#pragma once

#include "common.cuh"

#ifdef __CUDA_ARCH__
L4J_HD float l4j_fma(float a, float b, float c) { return __fmaf_rn(a, b, c); }
L4J_HD float l4j_mul(float a, float b) { return __fmul_rn(a, b); }
L4J_HD float l4j_add(float a, float b) { return __fadd_rn(a, b); }
L4J_HD float l4j_sub(float a, float b) { return __fsub_rn(a, b); }
L4J_HD float l4j_div(float a, float b) { return __fdiv_rn(a, b); }
L4J_HD float l4j_sqrt(float a) { return __fsqrt_rn(a); }
#else
#include <math.h>
L4J_HD float l4j_fma(float a, float b, float c) { return fmaf(a, b, c); }
L4J_HD float l4j_mul(float a, float b) { return a * b; }
L4J_HD float l4j_add(float a, float b) { return a + b; }
L4J_HD float l4j_sub(float a, float b) { return a - b; }
L4J_HD float l4j_div(float a, float b) { return a / b; }
L4J_HD float l4j_sqrt(float a) { return sqrtf(a); }
#endif

// dev.lora4j.backend.DropoutHash.mix: SplitMix64's finaliser over seed + (index + 1) * golden gamma. Java's long
// arithmetic wraps exactly as uint64_t does, and >>> is the unsigned shift.
L4J_HD uint64_t l4j_dropout_mix(uint64_t seed, uint64_t index) {
    uint64_t z = seed + (index + 1u) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Draw k (0 to 3) of a group's hash z (DropoutHash.draw): bits 16k .. 16k + 15, the draw of element 4j + k.
L4J_HD uint32_t l4j_dropout_draw(uint64_t z, uint32_t k) {
    return (uint32_t) (z >> (16u * k)) & 0xffffu;
}

// DropoutHash.bits: the 16-bit draw of one element, from its group's hash (one per four elements). Kernels draw a
// group, or half of one, at a time: the two 64-bit multiplies of a hash are the dropout mask's whole cost.
L4J_HD uint32_t l4j_dropout_bits(uint64_t seed, uint64_t index) {
    return l4j_dropout_draw(l4j_dropout_mix(seed, index >> 2), (uint32_t) (index & 3u));
}

// DropoutHash.uniform: the draw as a float in [0, 1); both the conversion and the scaling are exact.
L4J_HD float l4j_dropout_uniform(uint64_t seed, uint64_t index) {
    return (float) l4j_dropout_bits(seed, index) * 1.52587890625e-5f;  // 2^-16
}

// DropoutHash.dropThreshold: a draw below it is dropped (p in [0, 1]; p * 2^16 and its ceiling are exact in float).
L4J_HD uint32_t l4j_dropout_threshold(float p) {
    return (uint32_t) ceilf(p * 65536.0f);
}

// Inverted dropout of one element: 0 when dropped, x * scale otherwise (scale = 1 / (1 - p) in double, rounded
// to float, computed by the caller as the CPU backend and torch compute it).
L4J_HD float l4j_dropout(float x, float p, float scale, uint64_t seed, uint64_t index) {
    return l4j_dropout_bits(seed, index) < l4j_dropout_threshold(p) ? 0.0f : l4j_mul(x, scale);
}

// Keep flags (bit 0: the first element, bit 1: the second) of two elements whose draws are the low and high 16 bits
// of `draws`: a 32-bit half of a group's hash holds the draws of elements 4j, 4j+1 (low half) or 4j+2, 4j+3.
L4J_HD uint32_t l4j_dropout_keep_half(uint32_t draws, uint32_t threshold) {
    return (uint32_t) ((draws & 0xffffu) >= threshold) | ((uint32_t) ((draws >> 16) >= threshold) << 1);
}

// Which of elements f and f+1 are kept (bit 0: f, bit 1: f+1) for drop threshold `threshold`: one mix when both
// are in one group of four (f % 4 != 3), two otherwise.
L4J_HD uint32_t l4j_dropout_keep2(uint64_t seed, uint64_t f, uint32_t threshold) {
    uint32_t a, b;
    const uint32_t q = (uint32_t) (f & 3u);
    if (q != 3u) {
        const uint64_t z = l4j_dropout_mix(seed, f >> 2);
        a = l4j_dropout_draw(z, q);
        b = l4j_dropout_draw(z, q + 1u);
    } else {
        a = l4j_dropout_bits(seed, f);
        b = l4j_dropout_bits(seed, f + 1);
    }
    return (uint32_t) (a >= threshold) | ((uint32_t) (b >= threshold) << 1);
}

// The scalars of one AdamW step that do not depend on the element, computed once on the host (in double, then
// rounded to float, as torch turns its Python-float hyperparameters into the tensor's type).
struct l4j_adamw_scalars {
    float decay;          // 1 - lr * weight_decay
    float one_minus_beta1;
    float beta2;
    float one_minus_beta2;
    float neg_step_size;  // -lr / (1 - beta1^step)
    float bias2_sqrt;     // sqrt(1 - beta2^step)
    float eps;
};

// One element of torch.optim.AdamW (no amsgrad, not maximising) in the float32 operations of torch's CPU kernels,
// which the CPU backend performs in the same order:
//   param.mul_(decay); exp_avg.lerp_(grad, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
//   denom = exp_avg_sq.sqrt() / bias2_sqrt + eps; param.addcdiv_(exp_avg, denom, -step_size).
// lerp is one fused multiply-add, fma(1 - beta1, g - m, m); addcmul is v + ((1 - beta2) * g) * g; addcdiv is
// p + (-step_size * m) / denom.
L4J_HD void l4j_adamw_step(float* param, float grad, float* m, float* v, const l4j_adamw_scalars& s) {
    float p = l4j_mul(*param, s.decay);
    float mm = l4j_fma(s.one_minus_beta1, l4j_sub(grad, *m), *m);
    float vv = l4j_add(l4j_mul(*v, s.beta2), l4j_mul(l4j_mul(s.one_minus_beta2, grad), grad));
    float denom = l4j_add(l4j_div(l4j_sqrt(vv), s.bias2_sqrt), s.eps);
    p = l4j_add(p, l4j_div(l4j_mul(s.neg_step_size, mm), denom));
    *param = p;
    *m = mm;
    *v = vv;
}
