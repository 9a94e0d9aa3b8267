// Embedding lookup: out[i, :] = table[ids[i], :] as F32. The ids were checked against the vocabulary on the host.
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void l4j_embedding(const T* __restrict__ table, const int* __restrict__ ids,
                                              float* __restrict__ out, int n, long long d) {
    L4J_FOR_EACH(idx, (long long) n * d) {
        long long i = idx / d, j = idx - i * d;
        out[idx] = l4j_load(table, (long long) ids[i] * d + j);
    }
}

#define L4J_EMBEDDING(name, T) \
    extern "C" __global__ void lora4j_embedding_##name(const T* table, const int* ids, float* out, int n, long long d) { \
        l4j_embedding<T>(table, ids, out, n, d); \
    }

L4J_EMBEDDING(f32, float)
L4J_EMBEDDING(bf16, l4j_bf16)
L4J_EMBEDDING(f16, l4j_f16)

// The gradient of the lookup: d_table[ids[i], :] += d_out[i, :]. Rows of repeated ids meet in the same table row,
// so the additions are atomic (their order, and so the last bits of a repeated row, may vary from run to run).
extern "C" __global__ void lora4j_embedding_backward_f32(const int* __restrict__ ids, const float* __restrict__ d_out,
                                                         float* d_table, int n, long long d) {
    L4J_FOR_EACH(idx, (long long) n * d) {
        long long i = idx / d, j = idx - i * d;
        atomicAdd(d_table + (long long) ids[i] * d + j, d_out[idx]);
    }
}
