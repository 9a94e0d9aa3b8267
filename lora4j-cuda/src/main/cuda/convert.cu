// Element type conversion between the float dtypes: dst[i] = (D) src[i], through float, rounding to nearest even.
// Conversions to and from F64 go through float too, exactly as HostConversions does on the CPU.
#include "common.cuh"

template <typename S, typename D>
__device__ __forceinline__ void l4j_convert(const S* __restrict__ src, D* __restrict__ dst, long long n) {
    l4j_groups_then_rest(
            n, l4j_aligned16(src) && l4j_aligned16(dst),
            [&](long long g) {
                float v[L4J_GROUP];
                l4j_load8(src, g, v);
                l4j_store8(dst, g, v);
            },
            [&](long long i) { l4j_store(dst, i, l4j_load(src, i)); });
}

#define L4J_CONVERT(sname, S, dname, D) \
    extern "C" __global__ void lora4j_convert_##sname##_##dname(const S* src, D* dst, long long n) { \
        l4j_convert<S, D>(src, dst, n); \
    }

L4J_CONVERT(f32, float, bf16, l4j_bf16)
L4J_CONVERT(f32, float, f16, l4j_f16)
L4J_CONVERT(f32, float, f64, double)
L4J_CONVERT(bf16, l4j_bf16, f32, float)
L4J_CONVERT(bf16, l4j_bf16, f16, l4j_f16)
L4J_CONVERT(bf16, l4j_bf16, f64, double)
L4J_CONVERT(f16, l4j_f16, f32, float)
L4J_CONVERT(f16, l4j_f16, bf16, l4j_bf16)
L4J_CONVERT(f16, l4j_f16, f64, double)
L4J_CONVERT(f64, double, f32, float)
L4J_CONVERT(f64, double, bf16, l4j_bf16)
L4J_CONVERT(f64, double, f16, l4j_f16)
