// Shared by every lora4j kernel: element types and their conversions, index helpers, block reductions.
//
// The 16-bit conversions are written on the bits rather than with cuda_fp16/cuda_bf16 intrinsics so that they
// round exactly as dev.lora4j.tensor.Half does (round to nearest even, Java's NaN patterns) and so that the same
// functions compile for the host, where tests check them against Java over every 16-bit pattern.
#pragma once

#include <stdint.h>

#ifdef __CUDACC__
#define L4J_HD __host__ __device__ __forceinline__
#else
#define L4J_HD inline
#endif

// The device code is compiled by nvcc, and also for the host by the tests' device emulator
// (src/test/cuda/emulator), which defines L4J_EMULATION and provides the CUDA built-ins.
#if defined(__CUDACC__) || defined(L4J_EMULATION)
#define L4J_DEVICE_CODE 1
#endif

#include <string.h>

L4J_HD uint32_t l4j_float_bits(float f) {
#ifdef __CUDA_ARCH__
    return __float_as_uint(f);
#else
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
#endif
}

L4J_HD float l4j_bits_float(uint32_t u) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, 4);
    return f;
#endif
}

// bfloat16 is the top half of an IEEE float.
L4J_HD float l4j_bf16_to_float(uint16_t h) { return l4j_bits_float(((uint32_t) h) << 16); }

// Round to nearest even; a NaN stays a NaN (quiet bit set), as torch and Half.floatToBf16 do.
L4J_HD uint16_t l4j_float_to_bf16(float f) {
    uint32_t bits = l4j_float_bits(f);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t) ((bits >> 16) | 0x0040u);
    uint32_t bias = 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t) ((bits + bias) >> 16);
}

// IEEE binary16 to float, exact; NaN significand bits are kept (as Float.float16ToFloat keeps them).
L4J_HD float l4j_f16_to_float(uint16_t h) {
    uint32_t sign = ((uint32_t) (h & 0x8000u)) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0) {
        // Zero or subnormal: man * 2^-24 is exact in float.
        float mag = (float) man * 5.9604644775390625e-8f;
        return l4j_bits_float(l4j_float_bits(mag) | sign);
    }
    if (exp == 31) return l4j_bits_float(sign | 0x7f800000u | (man << 13));
    return l4j_bits_float(sign | ((exp + 112u) << 23) | (man << 13));
}

// Float to IEEE binary16, round to nearest even, overflow to infinity, NaN as Float.floatToFloat16 makes it.
L4J_HD uint16_t l4j_float_to_f16(float f) {
    uint32_t x = l4j_float_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) {
        return (uint16_t) (sign | 0x7c00u | ((x & 0x007fe000u) >> 13) | ((x & 0x00001ff0u) >> 4) | (x & 0x0000000fu));
    }
    if (ax >= 0x477ff000u) return (uint16_t) (sign | 0x7c00u);  // >= 65520 (max half + half an ulp): infinity
    if (ax >= 0x38800000u) {                                     // >= 2^-14: a normal half
        uint32_t v = ax - 0x38000000u;                            // rebias the exponent from 127 to 15
        uint32_t r = v >> 13, rem = v & 0x1fffu;
        if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) r++;
        return (uint16_t) (sign | r);
    }
    if (ax <= 0x33000000u) return (uint16_t) sign;               // <= 2^-25 rounds (ties to even) to zero
    uint32_t e = ax >> 23;                                        // 102..112: a half subnormal
    uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - e;
    uint32_t r = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (r & 1u))) r++;
    return (uint16_t) (sign | r);
}

#ifdef L4J_DEVICE_CODE

// The dynamic shared memory of a launch as an array of T (the emulator defines its own).
#ifndef L4J_DYNAMIC_SHARED
#define L4J_DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#endif

// Storage types: 16-bit floats travel as their bits so that every conversion goes through the functions above.
struct l4j_bf16 { uint16_t bits; };
struct l4j_f16 { uint16_t bits; };

__device__ __forceinline__ float l4j_load(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float l4j_load(const double* p, long long i) { return (float) p[i]; }
__device__ __forceinline__ float l4j_load(const l4j_bf16* p, long long i) { return l4j_bf16_to_float(p[i].bits); }
__device__ __forceinline__ float l4j_load(const l4j_f16* p, long long i) { return l4j_f16_to_float(p[i].bits); }

__device__ __forceinline__ void l4j_store(float* p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void l4j_store(double* p, long long i, float v) { p[i] = (double) v; }
__device__ __forceinline__ void l4j_store(l4j_bf16* p, long long i, float v) { p[i].bits = l4j_float_to_bf16(v); }
__device__ __forceinline__ void l4j_store(l4j_f16* p, long long i, float v) { p[i].bits = l4j_float_to_f16(v); }

// A grid-stride loop over [0, n) with 64-bit indices: tensors may hold more than 2^31 elements.
#define L4J_FOR_EACH(i, n) \
    for (long long i = (long long) blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (long long) blockDim.x * gridDim.x)

__device__ __forceinline__ float l4j_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum of one value per thread over the whole block; every thread gets the result. blockDim.x % 32 == 0.
__device__ __forceinline__ float l4j_block_sum(float v, float* shared32) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = l4j_warp_sum(v);
    __syncthreads();  // shared32 may still be read by a previous call
    if (lane == 0) shared32[warp] = v;
    __syncthreads();
    float total = lane < warps ? shared32[lane] : 0.0f;
    return l4j_warp_sum(total);
}

__device__ __forceinline__ double l4j_warp_sum(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// The double-precision block sum, same contract as the float one.
__device__ __forceinline__ double l4j_block_sum(double v, double* shared32) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = l4j_warp_sum(v);
    __syncthreads();
    if (lane == 0) shared32[warp] = v;
    __syncthreads();
    double total = lane < warps ? shared32[lane] : 0.0;
    return l4j_warp_sum(total);
}

__device__ __forceinline__ float l4j_warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Maximum of one value per thread over the whole block; every thread gets the result. blockDim.x % 32 == 0.
__device__ __forceinline__ float l4j_block_max(float v, float* shared32) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = l4j_warp_max(v);
    __syncthreads();
    if (lane == 0) shared32[warp] = v;
    __syncthreads();
    float total = lane < warps ? shared32[lane] : -INFINITY;
    return l4j_warp_max(total);
}

// ---- 16-byte accesses ------------------------------------------------------------------------------------------
// The memory-bound kernels move their elements in groups of L4J_GROUP (8: one 16-byte access of BF16 or F16, two of
// F32, four of F64) when every pointer they touch is 16-byte aligned; a view at another offset, and the last
// n % L4J_GROUP elements, take the element-by-element path. Only how elements travel changes: each is still widened
// to float, computed on alone and rounded once, so both paths give the same bits.
#define L4J_GROUP 8

#if defined(__CUDACC__)
typedef uint4 l4j_u32x4;
typedef double2 l4j_f64x2;
#else
struct alignas(16) l4j_u32x4 { uint32_t x, y, z, w; };
struct alignas(16) l4j_f64x2 { double x, y; };
#endif

__device__ __forceinline__ bool l4j_aligned16(const void* p) { return ((uintptr_t) p & 15u) == 0; }

__device__ __forceinline__ void l4j_halves_to_float(const l4j_u32x4& c, float v[8], bool bf16) {
    uint32_t w[4] = {c.x, c.y, c.z, c.w};
#pragma unroll
    for (int k = 0; k < 4; k++) {
        // Little-endian: the element at the lower address is the low half of the word.
        uint16_t lo = (uint16_t) (w[k] & 0xffffu), hi = (uint16_t) (w[k] >> 16);
        v[2 * k] = bf16 ? l4j_bf16_to_float(lo) : l4j_f16_to_float(lo);
        v[2 * k + 1] = bf16 ? l4j_bf16_to_float(hi) : l4j_f16_to_float(hi);
    }
}

__device__ __forceinline__ l4j_u32x4 l4j_float_to_halves(const float v[8], bool bf16) {
    uint32_t w[4];
#pragma unroll
    for (int k = 0; k < 4; k++) {
        uint32_t lo = bf16 ? l4j_float_to_bf16(v[2 * k]) : l4j_float_to_f16(v[2 * k]);
        uint32_t hi = bf16 ? l4j_float_to_bf16(v[2 * k + 1]) : l4j_float_to_f16(v[2 * k + 1]);
        w[k] = lo | (hi << 16);
    }
    l4j_u32x4 c;
    c.x = w[0]; c.y = w[1]; c.z = w[2]; c.w = w[3];
    return c;
}

// Elements i .. i+7 as floats; p + i must be 16-byte aligned.
__device__ __forceinline__ void l4j_load8(const l4j_bf16* p, long long i, float v[8]) {
    l4j_halves_to_float(*reinterpret_cast<const l4j_u32x4*>(p + i), v, true);
}
__device__ __forceinline__ void l4j_load8(const l4j_f16* p, long long i, float v[8]) {
    l4j_halves_to_float(*reinterpret_cast<const l4j_u32x4*>(p + i), v, false);
}
__device__ __forceinline__ void l4j_load8(const float* p, long long i, float v[8]) {
    const l4j_u32x4* q = reinterpret_cast<const l4j_u32x4*>(p + i);
#pragma unroll
    for (int h = 0; h < 2; h++) {
        l4j_u32x4 c = q[h];
        v[4 * h] = l4j_bits_float(c.x);
        v[4 * h + 1] = l4j_bits_float(c.y);
        v[4 * h + 2] = l4j_bits_float(c.z);
        v[4 * h + 3] = l4j_bits_float(c.w);
    }
}
__device__ __forceinline__ void l4j_load8(const double* p, long long i, float v[8]) {
    const l4j_f64x2* q = reinterpret_cast<const l4j_f64x2*>(p + i);
#pragma unroll
    for (int h = 0; h < 4; h++) {
        l4j_f64x2 c = q[h];
        v[2 * h] = (float) c.x;
        v[2 * h + 1] = (float) c.y;
    }
}

// Stores v as elements i .. i+7, each rounded once to the element type; p + i must be 16-byte aligned.
__device__ __forceinline__ void l4j_store8(l4j_bf16* p, long long i, const float v[8]) {
    *reinterpret_cast<l4j_u32x4*>(p + i) = l4j_float_to_halves(v, true);
}
__device__ __forceinline__ void l4j_store8(l4j_f16* p, long long i, const float v[8]) {
    *reinterpret_cast<l4j_u32x4*>(p + i) = l4j_float_to_halves(v, false);
}
__device__ __forceinline__ void l4j_store8(float* p, long long i, const float v[8]) {
    l4j_u32x4* q = reinterpret_cast<l4j_u32x4*>(p + i);
#pragma unroll
    for (int h = 0; h < 2; h++) {
        l4j_u32x4 c;
        c.x = l4j_float_bits(v[4 * h]);
        c.y = l4j_float_bits(v[4 * h + 1]);
        c.z = l4j_float_bits(v[4 * h + 2]);
        c.w = l4j_float_bits(v[4 * h + 3]);
        q[h] = c;
    }
}
__device__ __forceinline__ void l4j_store8(double* p, long long i, const float v[8]) {
    l4j_f64x2* q = reinterpret_cast<l4j_f64x2*>(p + i);
#pragma unroll
    for (int h = 0; h < 4; h++) {
        l4j_f64x2 c;
        c.x = (double) v[2 * h];
        c.y = (double) v[2 * h + 1];
        q[h] = c;
    }
}

// The element-wise pattern: whole groups (only when `aligned`) over a grid-stride loop, then the rest one element at
// a time. group(g) handles elements g .. g+7 (g a multiple of 8), one(i) element i.
template <typename Group, typename One>
__device__ __forceinline__ void l4j_groups_then_rest(long long n, bool aligned, Group group, One one) {
    const long long groups = aligned ? n / L4J_GROUP : 0;
    L4J_FOR_EACH(q, groups) group(q * L4J_GROUP);
    const long long done = groups * L4J_GROUP;
    L4J_FOR_EACH(r, n - done) one(done + r);
}

// The same over [0, n) by the threads of one block alone (for kernels whose blocks each take their own range).
template <typename Group, typename One>
__device__ __forceinline__ void l4j_block_groups_then_rest(long long n, bool aligned, Group group, One one) {
    const long long groups = aligned ? n / L4J_GROUP : 0;
    for (long long q = threadIdx.x; q < groups; q += blockDim.x) group(q * L4J_GROUP);
    const long long done = groups * L4J_GROUP;
    for (long long r = threadIdx.x; r < n - done; r += blockDim.x) one(done + r);
}

// ---- tensor cores -------------------------------------------------------------------------------------------
// The warp-collective operations of the tensor-core kernels (attention_flash.cu), each behind one small function:
// inline PTX on the GPU (sm_80 and newer), and in the device emulator an exact implementation of the same operation
// over the 32 lanes' fragments (src/test/cuda/emulator/runtime.cpp), so that one kernel source runs in both.
// Fragment layouts are PTX's (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type" and
// "ldmatrix"), with g = lane / 4 and t = lane % 4; a 32-bit register holds two bf16, the lower column (or row, for
// B) in its low half:
//   A (16x16, row-major): a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..2t+1], a[2] = A[g][2t+8..], a[3] = A[g+8][2t+8..]
//   B (16x8, "col"):      b[0] = B[2t..2t+1][g], b[1] = B[2t+8..2t+9][g]
//   C, D (16x8, f32):     c[0..1] = C[g][2t..2t+1], c[2..3] = C[g+8][2t..2t+1]

// Two floats as the bf16 pair of one fragment register, each rounded to nearest even (lo in the low half).
__device__ __forceinline__ uint32_t l4j_pack_bf16x2(float lo, float hi) {
#if defined(__CUDA_ARCH__)
    uint32_t r;  // cvt puts its first source in the upper half
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
#else
    return (uint32_t) l4j_float_to_bf16(lo) | ((uint32_t) l4j_float_to_bf16(hi) << 16);
#endif
}

// d = a b + c for one warp: m16n8k16, A row-major and B column-major BF16, FP32 accumulation. Every lane of the
// warp must call it with its own fragments (see the layouts above).
__device__ __forceinline__ void l4j_mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2],
                                                      const float c[4]) {
#if defined(__CUDA_ARCH__)
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %11, %12, %13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
          "f"(c[3]));
#elif defined(L4J_EMULATION)
    l4j_emu::mma_m16n8k16_bf16(d, a, b, c);
#endif
}

// Fails the launch unless it has at least `bytes` of dynamic shared memory. The host mirrors each kernel's shared size
// (CudaBackend, CudaLora, FlashAttention); a kernel that checks its own size function here ties the two together, so
// that a mirror that drifts fails the first launch (on the GPU with a trap, in the device emulator with a fault named
// so) instead of overrunning shared memory.
__device__ __forceinline__ void l4j_require_dynamic_shared(unsigned bytes) {
#if defined(__CUDA_ARCH__)
    unsigned have;
    asm("mov.u32 %0, %%dynamic_smem_size;\n" : "=r"(have));
    if (have < bytes) __trap();
#elif defined(L4J_EMULATION)
    l4j_emu::require_dynamic_shared(bytes);
#endif
}

// A byte address in shared memory, as the tensor-core operations take it: the 32-bit shared-window address on the GPU
// (offsets added to it fold into the instructions' immediates), the host address in the emulator.
#if defined(__CUDA_ARCH__)
typedef uint32_t l4j_shared_address;
#else
typedef uintptr_t l4j_shared_address;
#endif

__device__ __forceinline__ l4j_shared_address l4j_shared(const void* p) {
#if defined(__CUDA_ARCH__)
    return (uint32_t) __cvta_generic_to_shared(p);
#else
    return (uintptr_t) p;
#endif
}

// ldmatrix.sync.aligned.m8n8.x4(.trans).shared.b16: four 8x8 matrices of 16-bit elements from shared memory.
// Lanes 8i..8i+7 give the addresses of the 8 rows (16 bytes each, 16-byte aligned) of matrix i, which lands in
// r[i]: without trans, lane l gets row l/4, columns 2(l%4) and 2(l%4)+1; with trans, column l/4 of rows 2(l%4)
// and 2(l%4)+1 (the fragment of the transposed matrix). Volatile, so never merged or hoisted, but with no memory
// clobber, so the compiler may schedule other loads around it: what it reads was written before a __syncthreads.
__device__ __forceinline__ void l4j_ldmatrix_x4(uint32_t r[4], l4j_shared_address row) {
#if defined(__CUDA_ARCH__)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(row));
#elif defined(L4J_EMULATION)
    l4j_emu::ldmatrix_x4(r, (const void*) row, false);
#endif
}

__device__ __forceinline__ void l4j_ldmatrix_x4_trans(uint32_t r[4], l4j_shared_address row) {
#if defined(__CUDA_ARCH__)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(row));
#elif defined(L4J_EMULATION)
    l4j_emu::ldmatrix_x4(r, (const void*) row, true);
#endif
}

// Asynchronous 16-byte copy from global to shared memory (cp.async.cg, sm_80+); with valid false the 16 bytes are
// zero-filled and nothing is read. Both addresses 16-byte aligned. Copies become visible after l4j_cp_async_wait
// (and, to other threads, a barrier). The emulator copies at once.
__device__ __forceinline__ void l4j_cp_async_16(void* shared_dst, const void* global_src, bool valid) {
#if defined(__CUDA_ARCH__)
    unsigned address = (unsigned) __cvta_generic_to_shared(shared_dst);
    int bytes = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(address), "l"(global_src), "r"(bytes)
                 : "memory");
#elif defined(L4J_EMULATION)
    l4j_emu::copy_16(shared_dst, global_src, valid);
#endif
}

// Closes the group of copies issued since the last commit.
__device__ __forceinline__ void l4j_cp_async_commit() {
#if defined(__CUDA_ARCH__)
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Waits until at most `pending` of this thread's committed groups are still in flight.
template <int pending>
__device__ __forceinline__ void l4j_cp_async_wait() {
#if defined(__CUDA_ARCH__)
    asm volatile("cp.async.wait_group %0;\n" ::"n"(pending) : "memory");
#endif
}

#endif
