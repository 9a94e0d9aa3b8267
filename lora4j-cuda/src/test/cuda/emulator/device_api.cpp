// The part of the CUDA driver API and of cuBLASLt that lora4j's CUDA backend calls, implemented on the host so that
// the backend runs unchanged, kernels included, on a machine without a GPU: point -Dlora4j.cuda.libcuda and
// -Dlora4j.cuda.libcublaslt at this library. One emulated device: "lora4j device emulator", sm_90.
//
// "Device memory" is host memory with guard bytes on both sides of every allocation; the guards are checked when
// memory is freed, copied or synchronised, and a kernel that wrote outside its tensors turns into
// CUDA_ERROR_ILLEGAL_ADDRESS, as on a GPU (sticky: every later call fails too). Copies and memsets are checked to lie
// inside one allocation. Kernel launches check the dynamic shared memory against what the kernel was allowed.
// cublasLtMatmul checks its layouts against the product it is asked for and multiplies in FP32 (the operands
// widened, the result rounded once per element, to BF16 where D is BF16), C not read when beta is 0. Everything runs
// synchronously.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <map>
#include <mutex>
#include <string>

#include "common.cuh"
#include "runtime.h"

namespace {

// CUresult values (cuda.h).
constexpr int SUCCESS = 0;
constexpr int INVALID_VALUE = 1;
constexpr int OUT_OF_MEMORY = 2;
constexpr int INVALID_DEVICE = 101;
constexpr int NOT_FOUND = 500;
constexpr int ILLEGAL_ADDRESS = 700;
constexpr int LAUNCH_FAILED = 719;

constexpr size_t GUARD = 1024;
constexpr unsigned char GUARD_BYTE = 0xA5;
constexpr uint64_t TOTAL_MEMORY = 16ull << 30;

// How an allocation was made: cuMemAlloc, cuMemAllocManaged, or cuMemHostAlloc (pinned host memory; its device
// pointer is its host pointer, as with unified addressing). Each kind must be freed by its own call.
enum Kind { DEVICE_MEMORY, MANAGED_MEMORY, HOST_MEMORY };

struct Allocation {
    unsigned char* raw;
    size_t bytes;
    Kind kind = DEVICE_MEMORY;
    unsigned flags = 0;  // cuMemHostAlloc's
};

std::recursive_mutex lock;
std::map<uint64_t, Allocation> allocations;  // by device address
size_t allocated;  // device and managed memory
// The device memory allocations may take, TOTAL_MEMORY unless a test lowers it (lora4j_emulator_limit_memory) to
// see what the backend does on a fuller device; cuMemGetInfo reports it less what is allocated.
size_t memory_limit = TOTAL_MEMORY;
int sticky;  // an error that, as on a GPU, every later call reports

struct Function {
    const l4j_emu::Kernel* kernel;
    int max_dynamic_shared = 48 * 1024;
};
std::map<std::string, Function> functions;

int fail(int code, const char* what) {
    fprintf(stderr, "lora4j device emulator: %s\n", what);
    return code;
}

// Checks every allocation's guard bytes; a kernel that wrote outside its tensors leaves a mark there.
int check_guards(const char* when) {
    if (sticky) return sticky;
    for (auto& [address, a] : allocations) {
        for (size_t i = 0; i < GUARD; i++) {
            bool before = a.raw[i] != GUARD_BYTE, after = a.raw[GUARD + a.bytes + i] != GUARD_BYTE;
            if (before || after) {
                char m[256];
                snprintf(m, sizeof m, "%s: memory %zu bytes %s the allocation of %zu bytes at 0x%llx was written",
                         when, before ? GUARD - i : i + 1, before ? "before" : "after", a.bytes,
                         (unsigned long long) address);
                sticky = ILLEGAL_ADDRESS;
                return fail(ILLEGAL_ADDRESS, m);
            }
        }
    }
    return SUCCESS;
}

// The allocation holding [address, address + bytes), or null.
Allocation* holding(uint64_t address, size_t bytes) {
    auto it = allocations.upper_bound(address);
    if (it == allocations.begin()) return nullptr;
    --it;
    return address >= it->first && address + bytes <= it->first + it->second.bytes ? &it->second : nullptr;
}

// Whether [address, address + bytes) lies inside one allocation.
bool inside(uint64_t address, size_t bytes) { return holding(address, bytes) != nullptr; }

// Host memory with guard bytes on both sides, its contents 0xff (undefined, NaNs if read as floats); registered
// as an allocation of the given kind at the address it returns.
uint64_t guarded(size_t bytes, Kind kind, unsigned flags) {
    unsigned char* raw = (unsigned char*) aligned_alloc(256, (bytes + 2 * GUARD + 255) / 256 * 256);
    if (raw == nullptr) return 0;
    memset(raw, GUARD_BYTE, GUARD);
    memset(raw + GUARD, 0xff, bytes);
    memset(raw + GUARD + bytes, GUARD_BYTE, GUARD);
    uint64_t address = (uint64_t) (raw + GUARD);
    Allocation a{raw, bytes};
    a.kind = kind;
    a.flags = flags;
    allocations[address] = a;
    if (kind != HOST_MEMORY) allocated += bytes;
    return address;
}

// Frees an allocation of the given kind (the call that frees it is named for messages).
int release(uint64_t address, Kind kind, const char* call) {
    int r = check_guards(call);
    if (r) return r;
    auto it = allocations.find(address);
    if (it == allocations.end() || it->second.kind != kind) {
        char m[200];
        snprintf(m, sizeof m, "%s of an address that is not an allocation it frees", call);
        return fail(INVALID_VALUE, m);
    }
    if (kind != HOST_MEMORY) allocated -= it->second.bytes;
    free(it->second.raw);
    allocations.erase(it);
    return SUCCESS;
}

struct MemLocation {
    int type;
    int id;
};

// cuMemAdvise and cuMemPrefetchAsync apply to managed memory only, on device 0.
int check_managed(uint64_t address, size_t bytes, MemLocation location, const char* call) {
    if (sticky) return sticky;
    Allocation* a = holding(address, bytes);
    char m[200];
    if (a == nullptr || a->kind != MANAGED_MEMORY) {
        snprintf(m, sizeof m, "%s: %zu bytes at 0x%llx are not inside one managed allocation", call, bytes,
                 (unsigned long long) address);
        return fail(INVALID_VALUE, m);
    }
    if (location.type != 1 || location.id != 0) {
        snprintf(m, sizeof m, "%s: location type %d id %d is not device 0", call, location.type, location.id);
        return fail(INVALID_VALUE, m);
    }
    return SUCCESS;
}

int check_range(uint64_t address, size_t bytes, const char* call) {
    if (sticky) return sticky;
    if (bytes == 0 || inside(address, bytes)) return SUCCESS;
    char m[200];
    snprintf(m, sizeof m, "%s: %zu bytes at 0x%llx are not inside one allocation", call, bytes, (unsigned long long) address);
    return fail(INVALID_VALUE, m);
}

const char* error_name(int code) {
    switch (code) {
        case SUCCESS: return "CUDA_SUCCESS";
        case INVALID_VALUE: return "CUDA_ERROR_INVALID_VALUE";
        case OUT_OF_MEMORY: return "CUDA_ERROR_OUT_OF_MEMORY";
        case INVALID_DEVICE: return "CUDA_ERROR_INVALID_DEVICE";
        case NOT_FOUND: return "CUDA_ERROR_NOT_FOUND";
        case ILLEGAL_ADDRESS: return "CUDA_ERROR_ILLEGAL_ADDRESS";
        case LAUNCH_FAILED: return "CUDA_ERROR_LAUNCH_FAILED";
        default: return nullptr;
    }
}

}  // namespace

extern "C" {

// ---- driver API ---------------------------------------------------------------------------------------------

int cuInit(unsigned) { return SUCCESS; }

int cuDriverGetVersion(int* version) {
    *version = 13000;
    return SUCCESS;
}

int cuGetErrorName(int code, const char** name) {
    *name = error_name(code);
    return *name ? SUCCESS : INVALID_VALUE;
}

int cuGetErrorString(int code, const char** text) {
    *text = error_name(code);
    return *text ? SUCCESS : INVALID_VALUE;
}

int cuDeviceGetCount(int* count) {
    *count = 1;
    return SUCCESS;
}

int cuDeviceGet(int* device, int ordinal) {
    if (ordinal != 0) return INVALID_DEVICE;
    *device = 0;
    return SUCCESS;
}

int cuDeviceGetName(char* name, int length, int) {
    snprintf(name, length, "%s", "lora4j device emulator");
    return SUCCESS;
}

int cuDeviceGetAttribute(int* value, int attribute, int) {
    switch (attribute) {
        case 16: *value = 4; break;          // multiprocessors
        case 75: *value = 9; break;          // compute capability 9.0
        case 76: *value = 0; break;
        case 97: *value = 232448; break;     // opt-in shared memory per block, as on an H100/H200
        case 19: *value = 1; break;          // can map host memory
        case 83: *value = 1; break;          // managed memory
        case 89: *value = 1; break;          // concurrent managed access (Linux)
        default: *value = 0;
    }
    return SUCCESS;
}

int cuDeviceTotalMem_v2(size_t* bytes, int) {
    *bytes = TOTAL_MEMORY;
    return SUCCESS;
}

int cuDevicePrimaryCtxRetain(void** context, int) {
    *context = (void*) 0x10;
    return SUCCESS;
}

int cuDevicePrimaryCtxRelease_v2(int) { return SUCCESS; }

int cuCtxSetCurrent(void*) { return SUCCESS; }

int cuStreamCreate(void** stream, unsigned) {
    *stream = (void*) 0x20;
    return SUCCESS;
}

int cuStreamDestroy_v2(void*) { return SUCCESS; }

int cuStreamSynchronize(void*) {
    std::lock_guard<std::recursive_mutex> g(lock);
    return check_guards("cuStreamSynchronize");
}

int cuMemAlloc_v2(uint64_t* address, size_t bytes) {
    std::lock_guard<std::recursive_mutex> g(lock);
    if (sticky) return sticky;
    if (bytes == 0) return INVALID_VALUE;
    if (allocated + bytes > memory_limit) return OUT_OF_MEMORY;
    *address = guarded(bytes, DEVICE_MEMORY, 0);  // undefined contents, as cuMemAlloc's
    return *address ? SUCCESS : OUT_OF_MEMORY;
}

int cuMemFree_v2(uint64_t address) {
    std::lock_guard<std::recursive_mutex> g(lock);
    // Managed memory is freed by cuMemFree too.
    auto it = allocations.find(address);
    bool managed = it != allocations.end() && it->second.kind == MANAGED_MEMORY;
    return release(address, managed ? MANAGED_MEMORY : DEVICE_MEMORY, "cuMemFree");
}

int cuMemGetInfo_v2(size_t* free_bytes, size_t* total) {
    std::lock_guard<std::recursive_mutex> g(lock);
    *free_bytes = allocated < memory_limit ? memory_limit - allocated : 0;
    *total = TOTAL_MEMORY;
    return SUCCESS;
}

// Managed memory counts as device memory while it exists (it prefers the device); like the driver's, it may be
// asked for beyond the free memory.
int cuMemAllocManaged(uint64_t* address, size_t bytes, unsigned flags) {
    std::lock_guard<std::recursive_mutex> g(lock);
    if (sticky) return sticky;
    if (bytes == 0 || (flags != 1 && flags != 2)) return INVALID_VALUE;  // CU_MEM_ATTACH_GLOBAL or _HOST
    *address = guarded(bytes, MANAGED_MEMORY, flags);
    return *address ? SUCCESS : OUT_OF_MEMORY;
}

int cuMemAdvise_v2(uint64_t address, size_t bytes, int advice, MemLocation location) {
    std::lock_guard<std::recursive_mutex> g(lock);
    if (advice < 1 || advice > 6) return fail(INVALID_VALUE, "cuMemAdvise: unknown advice");
    return check_managed(address, bytes, location, "cuMemAdvise");
}

int cuMemPrefetchAsync_v2(uint64_t address, size_t bytes, MemLocation location, unsigned flags, void*) {
    std::lock_guard<std::recursive_mutex> g(lock);
    if (flags != 0) return fail(INVALID_VALUE, "cuMemPrefetchAsync: flags must be 0");
    return check_managed(address, bytes, location, "cuMemPrefetchAsync");
}

int cuMemHostAlloc(void** host, size_t bytes, unsigned flags) {
    std::lock_guard<std::recursive_mutex> g(lock);
    if (sticky) return sticky;
    if (bytes == 0 || (flags & ~7u) != 0) return INVALID_VALUE;
    uint64_t address = guarded(bytes, HOST_MEMORY, flags);
    *host = (void*) address;
    return address ? SUCCESS : OUT_OF_MEMORY;
}

int cuMemHostGetDevicePointer_v2(uint64_t* device, void* host, unsigned flags) {
    std::lock_guard<std::recursive_mutex> g(lock);
    if (sticky) return sticky;
    Allocation* a = holding((uint64_t) host, 1);
    if (flags != 0 || a == nullptr || a->kind != HOST_MEMORY || !(a->flags & 2u)) {
        return fail(INVALID_VALUE, "cuMemHostGetDevicePointer: not pinned host memory allocated with DEVICEMAP");
    }
    *device = (uint64_t) host;
    return SUCCESS;
}

int cuMemFreeHost(void* host) {
    std::lock_guard<std::recursive_mutex> g(lock);
    return release((uint64_t) host, HOST_MEMORY, "cuMemFreeHost");
}

// For tests: lowers the device memory allocations may take to `bytes` (0 restores the 16 GiB).
void lora4j_emulator_limit_memory(size_t bytes) {
    std::lock_guard<std::recursive_mutex> g(lock);
    memory_limit = bytes == 0 ? TOTAL_MEMORY : bytes;
}

int cuMemcpyHtoDAsync_v2(uint64_t dst, const void* src, size_t bytes, void*) {
    std::lock_guard<std::recursive_mutex> g(lock);
    int r = check_range(dst, bytes, "cuMemcpyHtoDAsync");
    if (r) return r;
    memcpy((void*) dst, src, bytes);
    return SUCCESS;
}

int cuMemcpyDtoHAsync_v2(void* dst, uint64_t src, size_t bytes, void*) {
    std::lock_guard<std::recursive_mutex> g(lock);
    int r = check_guards("cuMemcpyDtoHAsync");
    if (!r) r = check_range(src, bytes, "cuMemcpyDtoHAsync");
    if (r) return r;
    memcpy(dst, (const void*) src, bytes);
    return SUCCESS;
}

int cuMemcpyDtoDAsync_v2(uint64_t dst, uint64_t src, size_t bytes, void*) {
    std::lock_guard<std::recursive_mutex> g(lock);
    int r = check_range(src, bytes, "cuMemcpyDtoDAsync source");
    if (!r) r = check_range(dst, bytes, "cuMemcpyDtoDAsync destination");
    if (r) return r;
    memmove((void*) dst, (const void*) src, bytes);
    return SUCCESS;
}

int cuMemsetD8Async(uint64_t dst, unsigned char value, size_t count, void*) {
    std::lock_guard<std::recursive_mutex> g(lock);
    int r = check_range(dst, count, "cuMemsetD8Async");
    if (r) return r;
    memset((void*) dst, value, count);
    return SUCCESS;
}

int cuModuleLoadData(void** module, const void*) {
    *module = (void*) 0x30;
    return SUCCESS;
}

int cuModuleUnload(void*) { return SUCCESS; }

int cuModuleGetFunction(void** function, void*, const char* name) {
    std::lock_guard<std::recursive_mutex> g(lock);
    const l4j_emu::Kernel* k = l4j_emu::find_kernel(name);
    if (k == nullptr) return NOT_FOUND;
    Function& f = functions[name];
    f.kernel = k;
    *function = &f;
    return SUCCESS;
}

int cuFuncSetAttribute(void* function, int attribute, int value) {
    std::lock_guard<std::recursive_mutex> g(lock);
    Function* f = (Function*) function;
    if (attribute != 8) return SUCCESS;  // only the dynamic shared memory limit matters here
    if (value < 0 || value > 232448) return INVALID_VALUE;
    f->max_dynamic_shared = value;
    return SUCCESS;
}

int cuFuncGetParamInfo(void* function, size_t index, size_t* offset, size_t* size) {
    const l4j_emu::Kernel* k = ((Function*) function)->kernel;
    if (index >= (size_t) k->param_count) return INVALID_VALUE;
    size_t o = 0;
    for (size_t i = 0; i <= index; i++) {
        size_t s = k->param_sizes[i];
        o = (o + s - 1) / s * s;  // each parameter aligned to its size, as the device layout does
        if (i < index) o += s;
    }
    if (offset) *offset = o;
    if (size) *size = k->param_sizes[index];
    return SUCCESS;
}

int cuLaunchKernel(void* function, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                   unsigned shared, void*, void** params, void** extra) {
    std::lock_guard<std::recursive_mutex> g(lock);
    if (sticky) return sticky;
    Function* f = (Function*) function;
    char m[256];
    if (gy != 1 || gz != 1 || by != 1 || bz != 1 || extra != nullptr || params == nullptr) {
        return fail(INVALID_VALUE, "cuLaunchKernel: the emulator runs 1-D grids of 1-D blocks with kernelParams");
    }
    if (gx == 0 || bx == 0 || bx > 1024) return INVALID_VALUE;
    if ((int) shared > f->max_dynamic_shared) {
        snprintf(m, sizeof m, "cuLaunchKernel(%s): %u bytes of dynamic shared memory, the kernel is allowed %d",
                 f->kernel->name, shared, f->max_dynamic_shared);
        return fail(INVALID_VALUE, m);
    }
    const char* failure = l4j_emu::launch(*f->kernel, gx, bx, shared, params);
    if (failure != nullptr) {
        sticky = LAUNCH_FAILED;
        return fail(LAUNCH_FAILED, failure);
    }
    return check_guards(f->kernel->name);
}

// ---- cuBLASLt -----------------------------------------------------------------------------------------------

namespace {

constexpr int CUBLAS_SUCCESS = 0;
constexpr int CUBLAS_INVALID_VALUE = 7;
constexpr int CUBLAS_NOT_SUPPORTED = 15;
constexpr int R_32F = 0, R_16F = 2, R_16BF = 14;
constexpr int COMPUTE_32F = 68;

struct MatmulDesc {
    int compute, scale;
    int trans_a = 0, trans_b = 0;
};

struct Layout {
    int type;
    uint64_t rows, cols;
    int64_t ld;
};

size_t element_bytes(int type) { return type == R_32F ? 4 : 2; }

float element(const Layout& l, uint64_t base, uint64_t row, uint64_t col) {
    uint64_t i = row + col * (uint64_t) l.ld;
    switch (l.type) {
        case R_32F: return ((const float*) base)[i];
        case R_16BF: return l4j_bf16_to_float(((const uint16_t*) base)[i]);
        default: return l4j_f16_to_float(((const uint16_t*) base)[i]);
    }
}

// The product's shape from the layouts, or why they do not fit together.
const char* shape(const MatmulDesc& d, const Layout& a, const Layout& b, const Layout& c, const Layout& out,
                  uint64_t* m, uint64_t* n, uint64_t* k) {
    for (const Layout* l : {&a, &b, &c, &out}) {
        if (l->ld < (int64_t) l->rows || l->rows == 0 || l->cols == 0) return "a layout's ld is below its rows, or it is empty";
    }
    if (d.compute != COMPUTE_32F || d.scale != R_32F) return "only CUBLAS_COMPUTE_32F with FP32 scales is emulated";
    if (a.type != b.type || (a.type != R_32F && a.type != R_16F && a.type != R_16BF)) return "A and B differ in type";
    // cuBLASLt's table of type combinations for CUBLAS_COMPUTE_32F: C and D of one type, FP32, or BF16 when A and B are.
    if (c.type != out.type) return "C and D differ in type";
    if (out.type != R_32F && !(out.type == R_16BF && a.type == R_16BF)) return "D must be FP32, or BF16 with BF16 A and B";
    *m = out.rows;
    *n = out.cols;
    *k = d.trans_a ? a.rows : a.cols;
    uint64_t a_m = d.trans_a ? a.cols : a.rows;
    uint64_t b_k = d.trans_b ? b.cols : b.rows, b_n = d.trans_b ? b.rows : b.cols;
    if (a_m != *m || b_k != *k || b_n != *n || c.rows != *m || c.cols != *n) return "op(A) op(B) does not have D's shape";
    return nullptr;
}

uint64_t span_bytes(const Layout& l) { return ((l.cols - 1) * (uint64_t) l.ld + l.rows) * element_bytes(l.type); }

}  // namespace

int cublasLtCreate(void** handle) {
    *handle = (void*) 0x40;
    return CUBLAS_SUCCESS;
}

int cublasLtDestroy(void*) { return CUBLAS_SUCCESS; }

size_t cublasLtGetVersion() { return 130000; }

const char* cublasLtGetStatusName(int status) {
    switch (status) {
        case CUBLAS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
        case CUBLAS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
        case CUBLAS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
        default: return "CUBLAS_STATUS_UNKNOWN";
    }
}

const char* cublasLtGetStatusString(int status) { return cublasLtGetStatusName(status); }

int cublasLtMatmulDescCreate(void** desc, int compute, int scale) {
    *desc = new MatmulDesc{compute, scale};
    return CUBLAS_SUCCESS;
}

int cublasLtMatmulDescSetAttribute(void* desc, int attribute, const void* value, size_t bytes) {
    MatmulDesc* d = (MatmulDesc*) desc;
    if ((attribute == 3 || attribute == 4) && bytes == 4) {
        int op;
        memcpy(&op, value, 4);
        if (op != 0 && op != 1) return CUBLAS_INVALID_VALUE;
        (attribute == 3 ? d->trans_a : d->trans_b) = op;
        return CUBLAS_SUCCESS;
    }
    return CUBLAS_NOT_SUPPORTED;
}

int cublasLtMatmulDescDestroy(void* desc) {
    delete (MatmulDesc*) desc;
    return CUBLAS_SUCCESS;
}

int cublasLtMatrixLayoutCreate(void** layout, int type, uint64_t rows, uint64_t cols, int64_t ld) {
    *layout = new Layout{type, rows, cols, ld};
    return CUBLAS_SUCCESS;
}

int cublasLtMatrixLayoutDestroy(void* layout) {
    delete (Layout*) layout;
    return CUBLAS_SUCCESS;
}

int cublasLtMatmulPreferenceCreate(void** pref) {
    *pref = (void*) 0x50;
    return CUBLAS_SUCCESS;
}

int cublasLtMatmulPreferenceSetAttribute(void*, int, const void*, size_t) { return CUBLAS_SUCCESS; }

int cublasLtMatmulPreferenceDestroy(void*) { return CUBLAS_SUCCESS; }

int cublasLtMatmulAlgoGetHeuristic(void*, void* desc, void* a, void* b, void* c, void* d, void*, int requested,
                                   void* results, int* returned) {
    uint64_t m, n, k;
    const char* problem = shape(*(MatmulDesc*) desc, *(Layout*) a, *(Layout*) b, *(Layout*) c, *(Layout*) d, &m, &n, &k);
    if (problem != nullptr) {
        fprintf(stderr, "lora4j device emulator: cublasLtMatmulAlgoGetHeuristic: %s\n", problem);
        return CUBLAS_INVALID_VALUE;
    }
    if (requested < 1) return CUBLAS_INVALID_VALUE;
    // The emulator has one way to multiply, answered up to three times as a GPU answers several algorithms, so that
    // callers which time the candidates (GemmAlgorithmChoice.TIMED) run their trials here too.
    int count = requested < 3 ? requested : 3;
    float waves = 1.0f;
    for (int i = 0; i < count; i++) {
        unsigned char* r = (unsigned char*) results + 96 * i;
        memset(r, 0, 96);  // algo, workspaceSize 0, state SUCCESS
        memcpy(r + 76, &waves, 4);
    }
    *returned = count;
    return CUBLAS_SUCCESS;
}

int cublasLtMatmul(void*, void* desc, const void* alpha, uint64_t a, void* a_desc, uint64_t b, void* b_desc,
                   const void* beta, uint64_t c, void* c_desc, uint64_t d, void* d_desc, const void*, uint64_t,
                   size_t, void*) {
    std::lock_guard<std::recursive_mutex> g(lock);
    const MatmulDesc& md = *(MatmulDesc*) desc;
    const Layout &la = *(Layout*) a_desc, &lb = *(Layout*) b_desc, &lc = *(Layout*) c_desc, &ld = *(Layout*) d_desc;
    uint64_t m, n, k;
    const char* problem = shape(md, la, lb, lc, ld, &m, &n, &k);
    if (problem != nullptr) {
        fprintf(stderr, "lora4j device emulator: cublasLtMatmul: %s\n", problem);
        return CUBLAS_INVALID_VALUE;
    }
    float al, be;
    memcpy(&al, alpha, 4);
    memcpy(&be, beta, 4);
    if (check_range(a, span_bytes(la), "cublasLtMatmul A") || check_range(b, span_bytes(lb), "cublasLtMatmul B")
        || (be != 0.0f && check_range(c, span_bytes(lc), "cublasLtMatmul C"))
        || check_range(d, span_bytes(ld), "cublasLtMatmul D")) {
        return CUBLAS_INVALID_VALUE;
    }
    for (uint64_t j = 0; j < n; j++) {
        for (uint64_t i = 0; i < m; i++) {
            float s = 0.0f;
            for (uint64_t p = 0; p < k; p++) {
                float x = md.trans_a ? element(la, a, p, i) : element(la, a, i, p);
                float y = md.trans_b ? element(lb, b, j, p) : element(lb, b, p, j);
                s += x * y;
            }
            float out = al * s;
            if (be != 0.0f) out += be * element(lc, c, i, j);
            if (ld.type == R_16BF) {
                ((uint16_t*) d)[i + j * (uint64_t) ld.ld] = l4j_float_to_bf16(out);
            } else {
                ((float*) d)[i + j * (uint64_t) ld.ld] = out;
            }
        }
    }
    return CUBLAS_SUCCESS;
}

}  // extern "C"
