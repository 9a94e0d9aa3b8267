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
