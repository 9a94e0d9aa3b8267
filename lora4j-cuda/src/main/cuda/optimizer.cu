// One AdamW step over F32 parameters, gradients and moments of equal length, element by element, with the same
// float operations in the same order as the CPU backend (exact.cuh): the two backends keep identical weights.
#include "exact.cuh"

extern "C" __global__ void lora4j_adamw_f32(float* param, const float* grad, float* m, float* v, float decay,
                                            float one_minus_beta1, float beta2, float one_minus_beta2,
                                            float neg_step_size, float bias2_sqrt, float eps, long long n) {
    l4j_adamw_scalars s;
    s.decay = decay;
    s.one_minus_beta1 = one_minus_beta1;
    s.beta2 = beta2;
    s.one_minus_beta2 = one_minus_beta2;
    s.neg_step_size = neg_step_size;
    s.bias2_sqrt = bias2_sqrt;
    s.eps = eps;
    L4J_FOR_EACH(i, n) {
        float pi = param[i], mi = m[i], vi = v[i];
        l4j_adamw_step(&pi, grad[i], &mi, &vi, s);
        param[i] = pi;
        m[i] = mi;
        v[i] = vi;
    }
}
