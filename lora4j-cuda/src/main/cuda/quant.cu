// 4-bit weights as bitsandbytes stores them (dev.lora4j.quant): NF4 and FP4 codes with one F32 absmax per block of
// 64..4096 elements, two codes per byte with element 2j in the high nibble; double quantization, where the absmax
// values minus their mean ("offset") are quantized to 8 bits with the signed dynamic map in blocks of 256; and
// dequantization to F32, BF16 or F16 (bitsandbytes' kDequantizeBlockwise).
//
// The results must be the bytes dev.lora4j.quant.HostQuantizer computes, so every float operation is the one it
// performs: a block's scale is 1.0f / absmax (an IEEE division), a value is value * scale, the code is found by
// bitsandbytes' comparisons against the same float thresholds, and a double-quantized absmax is
// code8[q] * nestedAbsmax + offset with both roundings (never one fused multiply-add).
#include "code_search.cuh"
#include "exact.cuh"

#define L4J_QUANT_NF4 0
#define L4J_QUANT_FP4 1

// Threads per block of the quantization kernels: one warp quantizes one block of values at a time.
#define L4J_QUANT_THREADS 256
// Dequantization: threads per block and the steps of one thread in a tile (see l4j_dequantize4bit_vector).
#define L4J_DEQUANT_THREADS 256
#define L4J_DEQUANT_STEPS 4

// ---- the codes -----------------------------------------------------------------------------------------------

// The 16 values of each 4-bit code by index, as dev.lora4j.quant.QuantType lists them (FP4: bitsandbytes' table
// divided by its absmax 12, the indices 8..15 negative).
__device__ static const float l4j_nf4_values[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
    -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
    0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f,
    1.0f};
__device__ static const float l4j_fp4_values[16] = {
    0.0f, 0.0625f / 12, 8.0f / 12, 12.0f / 12, 4.0f / 12, 6.0f / 12, 2.0f / 12, 3.0f / 12,
    -0.0f, -0.0625f / 12, -8.0f / 12, -12.0f / 12, -4.0f / 12, -6.0f / 12, -2.0f / 12, -3.0f / 12};

// bitsandbytes' NF4 decision tree (dQuantizeNF4): the thresholds are the midpoints between neighbouring codes.
// A NaN fails every comparison and so becomes code 0, as there.
L4J_HD unsigned l4j_quantize_nf4(float x) {
    if (x > 0.03979014977812767f) {
        if (x > 0.3893125355243683f) {
            if (x > 0.6427869200706482f) return x > 0.8614784181118011f ? 15u : 14u;
            return x > 0.5016634166240692f ? 13u : 12u;
        }
        if (x > 0.2035212516784668f) return x > 0.2920137718319893f ? 11u : 10u;
        return x > 0.1202552504837513f ? 9u : 8u;
    }
    if (x > -0.33967943489551544f) {
        if (x > -0.13791173323988914f) return x > -0.045525018125772476f ? 7u : 6u;
        return x > -0.23460740596055984f ? 5u : 4u;
    }
    if (x > -0.6106329262256622f) return x > -0.4599952697753906f ? 3u : 2u;
    return x > -0.8480964004993439f ? 1u : 0u;
}

// bitsandbytes' FP4 decision tree (dQuantizeFP4): the sign bit from x < 0 (so -0 and NaN count as positive), then
// the magnitude against the midpoints of the positive codes.
L4J_HD unsigned l4j_quantize_fp4(float x) {
    unsigned sign = x < 0.0f ? 8u : 0u;
    x = fabsf(x);
    unsigned code;
    if (x > 0.29166667f) {
        if (x > 0.583333f) code = x > 0.8333333f ? 3u : 2u;
        else code = x > 0.4166667f ? 5u : 4u;
    } else if (x > 0.0859375f) {
        code = x > 0.20833333f ? 7u : 6u;
    } else {
        code = x > 0.00260417f ? 1u : 0u;
    }
    return code + sign;
}

template <int TYPE>
__device__ __forceinline__ unsigned l4j_quantize_4bit(float x) {
    return TYPE == L4J_QUANT_NF4 ? l4j_quantize_nf4(x) : l4j_quantize_fp4(x);
}

// bitsandbytes' dQuantize<0> over a sorted 256-value code (code_search.cuh).
__device__ __forceinline__ unsigned l4j_quantize_dynamic(const float* code, float x) {
    return (unsigned) l4j_code_search(code, x, -1.0f, true);
}

// ---- 4-bit quantization ----------------------------------------------------------------------------------------

// One warp per block of block_size values (grid-stride over blocks): the absmax is the largest |value|, the scale
// 1.0f / absmax, and each pair of values becomes one byte. An odd-length tensor's last byte takes 0 as the value
// after the end (bitsandbytes loads past the end as 0); a block whose absmax is 0 has an infinite scale, so its
// values (0 * inf = NaN) take code 0, as in bitsandbytes. A NaN or infinite value makes the block's absmax infinite
// and sets *nonfinite: the caller rejects such a weight, as HostQuantizer does.
template <typename T, int TYPE>
__device__ __forceinline__ void l4j_quantize4bit(const T* __restrict__ w, float* __restrict__ absmax,
                                                 unsigned char* __restrict__ packed, int* __restrict__ nonfinite,
                                                 long long n, int block_size) {
    const int lane = threadIdx.x & 31;
    const long long warps = ((long long) gridDim.x * blockDim.x) >> 5;
    const long long blocks = (n + block_size - 1) / block_size;
    for (long long b = ((long long) blockIdx.x * blockDim.x + threadIdx.x) >> 5; b < blocks; b += warps) {
        const long long start = b * block_size;
        const long long end = min(start + (long long) block_size, n);
        float m = 0.0f;
        for (long long i = start + lane; i < end; i += 32) {
            const float a = fabsf(l4j_load(w, i));
            m = fmaxf(m, a != a ? INFINITY : a);  // fmaxf would pass over a NaN
        }
        m = l4j_warp_max(m);
        if (lane == 0) {
            absmax[b] = m;
            if (m == INFINITY) *nonfinite = 1;
        }
        const float scale = l4j_div(1.0f, m);
        // block_size is even, so the block's pairs are whole bytes: bytes [start/2, (end+1)/2).
        for (long long p = start / 2 + lane; p < (end + 1) / 2; p += 32) {
            const long long i = 2 * p;
            const float hi = l4j_load(w, i);
            const float lo = i + 1 < n ? l4j_load(w, i + 1) : 0.0f;
            packed[p] = (unsigned char) ((l4j_quantize_4bit<TYPE>(l4j_mul(hi, scale)) << 4)
                                         | l4j_quantize_4bit<TYPE>(l4j_mul(lo, scale)));
        }
    }
}

#define L4J_QUANTIZE4BIT(tname, TYPE, sname, T) \
    extern "C" __global__ void lora4j_quantize4bit_##tname##_##sname(const T* w, float* absmax, unsigned char* packed, \
                                                                     int* nonfinite, long long n, int block_size) { \
        l4j_quantize4bit<T, TYPE>(w, absmax, packed, nonfinite, n, block_size); \
    }

L4J_QUANTIZE4BIT(nf4, L4J_QUANT_NF4, f32, float)
L4J_QUANTIZE4BIT(nf4, L4J_QUANT_NF4, bf16, l4j_bf16)
L4J_QUANTIZE4BIT(nf4, L4J_QUANT_NF4, f16, l4j_f16)
L4J_QUANTIZE4BIT(fp4, L4J_QUANT_FP4, f32, float)
L4J_QUANTIZE4BIT(fp4, L4J_QUANT_FP4, bf16, l4j_bf16)
L4J_QUANTIZE4BIT(fp4, L4J_QUANT_FP4, f16, l4j_f16)

// Double quantization: v = absmax[i] - offset, quantized in blocks of 256 with the 256-value dynamic map `code`
// (bitsandbytes' quantize_blockwise): one F32 nested absmax per block (the largest |v|) and one byte per value, the
// index of v * (1.0f / nested absmax) in the map. One warp per block; the map sits in shared memory.
extern "C" __global__ void lora4j_quantize_absmax_8bit(const float* __restrict__ absmax, float offset,
                                                       const float* __restrict__ code, unsigned char* __restrict__ q,
                                                       float* __restrict__ nested_absmax, long long count) {
    __shared__ float map[256];
    for (int i = threadIdx.x; i < 256; i += blockDim.x) map[i] = code[i];
    __syncthreads();
    const int lane = threadIdx.x & 31;
    const long long warps = ((long long) gridDim.x * blockDim.x) >> 5;
    const long long blocks = (count + 255) / 256;
    for (long long b = ((long long) blockIdx.x * blockDim.x + threadIdx.x) >> 5; b < blocks; b += warps) {
        const long long start = b * 256;
        const long long end = min(start + 256, count);
        float m = 0.0f;
        for (long long i = start + lane; i < end; i += 32) m = fmaxf(m, fabsf(l4j_sub(absmax[i], offset)));
        m = l4j_warp_max(m);
        if (lane == 0) nested_absmax[b] = m;
        const float scale = l4j_div(1.0f, m);
        for (long long i = start + lane; i < end; i += 32) {
            q[i] = (unsigned char) l4j_quantize_dynamic(map, l4j_mul(l4j_sub(absmax[i], offset), scale));
        }
    }
}

// ---- dequantization ------------------------------------------------------------------------------------------

// `via`: the dtype a value is rounded to before the output's own rounding. A product multiplies the weight as
// bitsandbytes does, dequantized to the weight's original dtype and then cast to the compute dtype
// (HostQuantizer.matmulValue); the caller passes that original dtype when it is 16-bit and differs from the output.
#define L4J_VIA_NONE 0
#define L4J_VIA_BF16 1
#define L4J_VIA_F16 2

__device__ __forceinline__ float l4j_q4_via(float v, int via) {
    if (via == L4J_VIA_BF16) return l4j_bf16_to_float(l4j_float_to_bf16(v));
    if (via == L4J_VIA_F16) return l4j_f16_to_float(l4j_float_to_f16(v));
    return v;
}

// The absmax of block `block`: stored as F32, or (absmax == nullptr) double-quantized, map[q] * nested + offset.
__device__ __forceinline__ float l4j_q4_block_absmax(long long block, const float* __restrict__ absmax,
                                                     const unsigned char* __restrict__ absmax_q, const float* map,
                                                     const float* __restrict__ nested_absmax, float offset) {
    if (absmax != nullptr) return absmax[block];
    return l4j_add(l4j_mul(map[absmax_q[block]], nested_absmax[block >> 8]), offset);
}

// Loads the 4-bit code table of `type` and, with double quantization, the dynamic map into shared memory.
__device__ __forceinline__ void l4j_q4_tables(int type, const float* __restrict__ nested_code, float* codes,
                                              float* map) {
    for (int i = threadIdx.x; i < 16; i += blockDim.x) codes[i] = type == L4J_QUANT_NF4 ? l4j_nf4_values[i] : l4j_fp4_values[i];
    if (nested_code != nullptr) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x) map[i] = nested_code[i];
    }
    __syncthreads();
}

// Element i of the packed codes.
__device__ __forceinline__ unsigned l4j_q4_nibble(const unsigned char* __restrict__ packed, long long i) {
    const unsigned byte = packed[i >> 1];
    return (i & 1) ? (byte & 15u) : (byte >> 4);
}

// Sixteen bytes, for vector loads and stores (nvcc turns a 16-byte aligned struct copy into one instruction).
struct alignas(16) l4j_q4_bytes16 {
    uint32_t x, y, z, w;
};

// Two floats as two 16-bit values in one word, `lo` at the lower address, rounded to nearest even. Without NaNs the
// hardware's paired conversion (one instruction) gives exactly the bits of l4j_float_to_bf16/f16; only NaN payloads
// would differ, so the caller passes finite = false when a value may be NaN and the bitwise path is taken.
__device__ __forceinline__ uint32_t l4j_q4_pack2(const l4j_bf16*, float lo, float hi, bool finite) {
#ifdef __CUDA_ARCH__
    if (finite) {
        uint32_t r;
        asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
        return r;
    }
#endif
    (void) finite;
    return (uint32_t) l4j_float_to_bf16(lo) | ((uint32_t) l4j_float_to_bf16(hi) << 16);
}

__device__ __forceinline__ uint32_t l4j_q4_pack2(const l4j_f16*, float lo, float hi, bool finite) {
#ifdef __CUDA_ARCH__
    if (finite) {
        uint32_t r;
        asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
        return r;
    }
#endif
    (void) finite;
    return (uint32_t) l4j_float_to_f16(lo) | ((uint32_t) l4j_float_to_f16(hi) << 16);
}

// Sixteen bytes of output from the codes of one group: 8 elements (4 packed bytes in `word`) for 16-bit outputs.
// A finite absmax times a code in [-1, 1] is finite, and stays free of NaN through the `via` rounding.
template <typename T>
__device__ __forceinline__ l4j_q4_bytes16 l4j_q4_group(uint32_t word, float a, const float* codes, int via) {
    const bool finite = fabsf(a) <= 3.402823466e38f;
    float v[8];
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const unsigned byte = (word >> (8 * j)) & 0xffu;
        v[2 * j] = l4j_mul(codes[byte >> 4], a);
        v[2 * j + 1] = l4j_mul(codes[byte & 15u], a);
    }
    if (via != L4J_VIA_NONE) {
#pragma unroll
        for (int j = 0; j < 8; j++) v[j] = l4j_q4_via(v[j], via);
    }
    l4j_q4_bytes16 out;
    out.x = l4j_q4_pack2((const T*) nullptr, v[0], v[1], finite);
    out.y = l4j_q4_pack2((const T*) nullptr, v[2], v[3], finite);
    out.z = l4j_q4_pack2((const T*) nullptr, v[4], v[5], finite);
    out.w = l4j_q4_pack2((const T*) nullptr, v[6], v[7], finite);
    return out;
}

// F32 output: 4 elements (2 packed bytes in the low half of `word`).
template <>
__device__ __forceinline__ l4j_q4_bytes16 l4j_q4_group<float>(uint32_t word, float a, const float* codes, int via) {
    l4j_q4_bytes16 out;
    out.x = l4j_float_bits(l4j_q4_via(l4j_mul(codes[(word >> 4) & 15u], a), via));
    out.y = l4j_float_bits(l4j_q4_via(l4j_mul(codes[word & 15u], a), via));
    out.z = l4j_float_bits(l4j_q4_via(l4j_mul(codes[(word >> 12) & 15u], a), via));
    out.w = l4j_float_bits(l4j_q4_via(l4j_mul(codes[(word >> 8) & 15u], a), via));
    return out;
}

template <typename T> struct l4j_q4_word { typedef uint32_t type; };  // 16-bit outputs: 4 bytes of codes
template <> struct l4j_q4_word<float> { typedef uint16_t type; };    // F32 output: 2 bytes of codes

// The fast dequantization, for 16-byte aligned outputs and packed codes aligned to their group's bytes. A group is
// the elements one thread writes with one 16-byte store (8 for BF16/F16, 4 for F32); a thread takes
// L4J_DEQUANT_STEPS groups of a tile, a warp's loads and stores each cover consecutive memory, and all loads of a
// thread are issued before its first store. Since blocks hold at least 64 elements, a group lies in one block and
// needs one absmax. Memory traffic per element: half a byte of codes in, 2 (or 4) bytes out, the absmax amortised.
template <typename T>
__device__ __forceinline__ void l4j_dequantize4bit_vector(
        const unsigned char* __restrict__ packed, const float* __restrict__ absmax,
        const unsigned char* __restrict__ absmax_q, const float* __restrict__ nested_code,
        const float* __restrict__ nested_absmax, float offset, int type, int block_shift, int via,
        T* __restrict__ out, long long n) {
    typedef typename l4j_q4_word<T>::type word_t;
    const int group = 16 / (int) sizeof(T);
    __shared__ float codes[16];
    __shared__ float map[256];
    l4j_q4_tables(type, nested_code, codes, map);

    const long long groups = n / group;
    const long long tile = (long long) L4J_DEQUANT_THREADS * L4J_DEQUANT_STEPS;
    const word_t* __restrict__ words = (const word_t*) packed;
    for (long long g0 = (long long) blockIdx.x * tile; g0 < groups; g0 += (long long) gridDim.x * tile) {
        uint32_t w[L4J_DEQUANT_STEPS];
        float a[L4J_DEQUANT_STEPS];
#pragma unroll
        for (int s = 0; s < L4J_DEQUANT_STEPS; s++) {
            const long long g = g0 + s * L4J_DEQUANT_THREADS + threadIdx.x;
            if (g < groups) {
                w[s] = words[g];
                a[s] = l4j_q4_block_absmax((g * group) >> block_shift, absmax, absmax_q, map, nested_absmax, offset);
            }
        }
#pragma unroll
        for (int s = 0; s < L4J_DEQUANT_STEPS; s++) {
            const long long g = g0 + s * L4J_DEQUANT_THREADS + threadIdx.x;
            if (g < groups) *(l4j_q4_bytes16*) (out + g * group) = l4j_q4_group<T>(w[s], a[s], codes, via);
        }
    }
    // The last n % group elements, one per thread of the first block.
    if (blockIdx.x == 0) {
        const long long i = groups * group + threadIdx.x;
        if (i < n) {
            const float a0 = l4j_q4_block_absmax(i >> block_shift, absmax, absmax_q, map, nested_absmax, offset);
            l4j_store(out, i, l4j_q4_via(l4j_mul(codes[l4j_q4_nibble(packed, i)], a0), via));
        }
    }
}

// Any alignment: one element per thread, grid-stride.
template <typename T>
__device__ __forceinline__ void l4j_dequantize4bit_scalar(
        const unsigned char* __restrict__ packed, const float* __restrict__ absmax,
        const unsigned char* __restrict__ absmax_q, const float* __restrict__ nested_code,
        const float* __restrict__ nested_absmax, float offset, int type, int block_shift, int via,
        T* __restrict__ out, long long n) {
    __shared__ float codes[16];
    __shared__ float map[256];
    l4j_q4_tables(type, nested_code, codes, map);
    L4J_FOR_EACH(i, n) {
        const float a = l4j_q4_block_absmax(i >> block_shift, absmax, absmax_q, map, nested_absmax, offset);
        l4j_store(out, i, l4j_q4_via(l4j_mul(codes[l4j_q4_nibble(packed, i)], a), via));
    }
}

// absmax is null for a double-quantized weight (then absmax_q, nested_code and nested_absmax are used); type is
// L4J_QUANT_NF4 or L4J_QUANT_FP4; block_shift is log2 of the block size; via is one of L4J_VIA_*.
#define L4J_DEQUANTIZE4BIT(kind, oname, T) \
    extern "C" __global__ void lora4j_dequantize4bit_##kind##_##oname( \
            const unsigned char* packed, const float* absmax, const unsigned char* absmax_q, const float* nested_code, \
            const float* nested_absmax, float offset, int type, int block_shift, int via, T* out, long long n) { \
        l4j_dequantize4bit_##kind<T>(packed, absmax, absmax_q, nested_code, nested_absmax, offset, type, block_shift, \
                                     via, out, n); \
    }

L4J_DEQUANTIZE4BIT(vector, f32, float)
L4J_DEQUANTIZE4BIT(vector, bf16, l4j_bf16)
L4J_DEQUANTIZE4BIT(vector, f16, l4j_f16)
L4J_DEQUANTIZE4BIT(scalar, f32, float)
L4J_DEQUANTIZE4BIT(scalar, bf16, l4j_bf16)
L4J_DEQUANTIZE4BIT(scalar, f16, l4j_f16)
