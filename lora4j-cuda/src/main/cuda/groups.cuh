// A group of L4J_GROUP (8) consecutive elements as one thread holds it between a load and a store, for the row
// kernels (rmsnorm.cu, rope.cu, embedding.cu) that load everything a thread needs first and compute on it after.
//
// It stays in registers as its elements lie in memory (four registers for BF16 instead of eight floats), so that more
// groups, and more rows, can be in flight at once. With VEC (the caller checked that every group starts on a 16-byte
// boundary and lies wholly in the row) a group travels as 16-byte accesses; without, element by element, clipped at
// `end`: elements past it read as 0 and are never stored. Both give the same floats, so kernels that choose the path
// at run time give the same bits either way.
#pragma once

#include "common.cuh"

__device__ __forceinline__ void l4j_bits_to_floats(const l4j_u32x4* b, float v[8], const l4j_bf16*) {
    l4j_halves_to_float(b[0], v, true);
}
__device__ __forceinline__ void l4j_bits_to_floats(const l4j_u32x4* b, float v[8], const l4j_f16*) {
    l4j_halves_to_float(b[0], v, false);
}
__device__ __forceinline__ void l4j_bits_to_floats(const l4j_u32x4* b, float v[8], const float*) {
#pragma unroll
    for (int h = 0; h < 2; h++) {
        v[4 * h] = l4j_bits_float(b[h].x);
        v[4 * h + 1] = l4j_bits_float(b[h].y);
        v[4 * h + 2] = l4j_bits_float(b[h].z);
        v[4 * h + 3] = l4j_bits_float(b[h].w);
    }
}

// The bits of element i of p, in the low bits of a word.
__device__ __forceinline__ uint32_t l4j_element_bits(const float* p, long long i) { return l4j_float_bits(p[i]); }
__device__ __forceinline__ uint32_t l4j_element_bits(const l4j_bf16* p, long long i) { return p[i].bits; }
__device__ __forceinline__ uint32_t l4j_element_bits(const l4j_f16* p, long long i) { return p[i].bits; }

template <typename T>
struct l4j_group {
    static_assert(sizeof(T) == 2 || sizeof(T) == 4, "groups of 16- and 32-bit elements");
    // The elements' bits as they lie in memory (little-endian: the lower element in the lower bits).
    l4j_u32x4 bits[sizeof(T) / 2];

    // Elements j .. j+7 of p: with VEC p + j is 16-byte aligned and the group whole; without, elements from end on
    // are not read and hold 0.
    template <bool VEC>
    __device__ __forceinline__ void load(const T* p, long long j, long long end) {
        if constexpr (VEC) {
            const l4j_u32x4* q = reinterpret_cast<const l4j_u32x4*>(p + j);
#pragma unroll
            for (int h = 0; h < (int) (sizeof(T) / 2); h++) bits[h] = q[h];
        } else {
            uint32_t e[8];
#pragma unroll
            for (int k = 0; k < 8; k++) e[k] = j + k < end ? l4j_element_bits(p, j + k) : 0u;
            if constexpr (sizeof(T) == 2) {
                bits[0].x = e[0] | (e[1] << 16);
                bits[0].y = e[2] | (e[3] << 16);
                bits[0].z = e[4] | (e[5] << 16);
                bits[0].w = e[6] | (e[7] << 16);
            } else {
                bits[0].x = e[0];
                bits[0].y = e[1];
                bits[0].z = e[2];
                bits[0].w = e[3];
                bits[1].x = e[4];
                bits[1].y = e[5];
                bits[1].z = e[6];
                bits[1].w = e[7];
            }
        }
    }

    __device__ __forceinline__ void get(float v[8]) const { l4j_bits_to_floats(bits, v, (const T*) nullptr); }
};

// Elements j .. j+7 of p as floats (VEC: one group of 16-byte accesses, p + j aligned), or those of them before end.
template <bool VEC, typename T>
__device__ __forceinline__ void l4j_group_load(const T* p, long long j, long long end, float v[8]) {
    if constexpr (VEC) {
        l4j_load8(p, j, v);
    } else {
#pragma unroll
        for (int k = 0; k < 8; k++) v[k] = j + k < end ? l4j_load(p, j + k) : 0.0f;
    }
}

// v as elements j .. j+7 of p, each rounded once to T (VEC: p + j aligned), or those of them before end.
template <bool VEC, typename T>
__device__ __forceinline__ void l4j_group_store(T* p, long long j, long long end, const float v[8]) {
    if constexpr (VEC) {
        l4j_store8(p, j, v);
    } else {
#pragma unroll
        for (int k = 0; k < 8; k++) {
            if (j + k < end) l4j_store(p, j + k, v[k]);
        }
    }
}
