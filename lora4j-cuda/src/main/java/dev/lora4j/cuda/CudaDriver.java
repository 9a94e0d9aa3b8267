package dev.lora4j.cuda;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * The CUDA driver API functions lora4j calls, bound through the Foreign Function & Memory API. Signatures follow
 * cuda.h of CUDA 13 (the same since CUDA 11 for these functions): {@code CUresult} and enums are {@code int},
 * {@code size_t} and {@code CUdeviceptr} ({@code unsigned long long}) are {@code long}, handles ({@code CUcontext},
 * {@code CUstream}, {@code CUmodule}, {@code CUfunction}) and host pointers are addresses. cuda.h maps the plain
 * names to versioned symbols ({@code cuMemAlloc} is {@code cuMemAlloc_v2}); the symbols bound here are those.
 *
 * <p>Every wrapper returns the raw {@code CUresult}; {@link #check} turns a failure into a {@link CudaException}
 * that names the call and the error.
 */
final class CudaDriver {
    static final int SUCCESS = 0;
    static final int CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16;
    static final int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
    static final int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
    static final int CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97;
    // CUfunction_attribute
    static final int CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;
    static final int CU_STREAM_DEFAULT = 0;
    // Paged memory (PagedMemory): device attributes, allocation flags, memory advice, location types.
    static final int CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY = 19;
    static final int CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY = 83;
    static final int CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS = 89;
    static final int CU_MEM_ATTACH_GLOBAL = 0x1;
    static final int CU_MEMHOSTALLOC_PORTABLE = 0x01;
    static final int CU_MEMHOSTALLOC_DEVICEMAP = 0x02;
    static final int CU_MEM_ADVISE_SET_PREFERRED_LOCATION = 3;
    static final int CU_MEM_ADVISE_SET_ACCESSED_BY = 5;
    static final int CU_MEM_LOCATION_TYPE_DEVICE = 1;
    /** CUmemLocation, passed by value: {type, id}. */
    private static final MemoryLayout MEM_LOCATION = MemoryLayout.structLayout(JAVA_INT.withName("type"), JAVA_INT.withName("id"));

    private static final Linker LINKER = Linker.nativeLinker();

    private final String origin;
    private final MethodHandle cuInit, cuDriverGetVersion, cuGetErrorName, cuGetErrorString, cuDeviceGetCount,
            cuDeviceGet, cuDeviceGetName, cuDeviceGetAttribute, cuDeviceTotalMem, cuDevicePrimaryCtxRetain,
            cuDevicePrimaryCtxRelease, cuCtxSetCurrent, cuStreamCreate, cuStreamDestroy, cuStreamSynchronize,
            cuMemAlloc, cuMemFree, cuMemGetInfo, cuMemcpyHtoDAsync, cuMemcpyDtoHAsync, cuMemcpyDtoDAsync,
            cuMemsetD8Async, cuModuleLoadData, cuModuleUnload, cuModuleGetFunction, cuFuncSetAttribute, cuLaunchKernel;
    /** Null with a driver older than CUDA 12.4, which lacks it. */
    private final MethodHandle cuFuncGetParamInfo;
    private final MethodHandle cuMemAllocManaged, cuMemHostAlloc, cuMemHostGetDevicePointer, cuMemFreeHost;
    /**
     * cuMemAdvise and cuMemPrefetchAsync: the _v2 forms (CUDA 12.2 and newer, a CUmemLocation by value) where the
     * driver has them, else the first forms (a device ordinal); null where it has neither.
     */
    private final MethodHandle cuMemAdvise, cuMemPrefetchAsync;
    private final boolean memLocationByValue;
    /** Events, for the device-side op profile only: null where the library lacks them (the device emulator). */
    private final MethodHandle cuEventCreate, cuEventRecord, cuEventSynchronize, cuEventElapsedTime, cuEventDestroy;

    /** Binds every function; a symbol missing from the library (a driver older than CUDA 11.2) is an error. */
    CudaDriver(SymbolLookup lib, String origin) {
        this.origin = origin;
        cuInit = bind(lib, "cuInit", JAVA_INT);
        cuDriverGetVersion = bind(lib, "cuDriverGetVersion", ADDRESS);
        cuGetErrorName = bind(lib, "cuGetErrorName", JAVA_INT, ADDRESS);
        cuGetErrorString = bind(lib, "cuGetErrorString", JAVA_INT, ADDRESS);
        cuDeviceGetCount = bind(lib, "cuDeviceGetCount", ADDRESS);
        cuDeviceGet = bind(lib, "cuDeviceGet", ADDRESS, JAVA_INT);
        cuDeviceGetName = bind(lib, "cuDeviceGetName", ADDRESS, JAVA_INT, JAVA_INT);
        cuDeviceGetAttribute = bind(lib, "cuDeviceGetAttribute", ADDRESS, JAVA_INT, JAVA_INT);
        cuDeviceTotalMem = bind(lib, "cuDeviceTotalMem_v2", ADDRESS, JAVA_INT);
        cuDevicePrimaryCtxRetain = bind(lib, "cuDevicePrimaryCtxRetain", ADDRESS, JAVA_INT);
        cuDevicePrimaryCtxRelease = bind(lib, "cuDevicePrimaryCtxRelease_v2", JAVA_INT);
        cuCtxSetCurrent = bind(lib, "cuCtxSetCurrent", ADDRESS);
        cuStreamCreate = bind(lib, "cuStreamCreate", ADDRESS, JAVA_INT);
        cuStreamDestroy = bind(lib, "cuStreamDestroy_v2", ADDRESS);
        cuStreamSynchronize = bind(lib, "cuStreamSynchronize", ADDRESS);
        cuMemAlloc = bind(lib, "cuMemAlloc_v2", ADDRESS, JAVA_LONG);
        cuMemFree = bind(lib, "cuMemFree_v2", JAVA_LONG);
        cuMemGetInfo = bind(lib, "cuMemGetInfo_v2", ADDRESS, ADDRESS);
        cuMemcpyHtoDAsync = bind(lib, "cuMemcpyHtoDAsync_v2", JAVA_LONG, ADDRESS, JAVA_LONG, ADDRESS);
        cuMemcpyDtoHAsync = bind(lib, "cuMemcpyDtoHAsync_v2", ADDRESS, JAVA_LONG, JAVA_LONG, ADDRESS);
        cuMemcpyDtoDAsync = bind(lib, "cuMemcpyDtoDAsync_v2", JAVA_LONG, JAVA_LONG, JAVA_LONG, ADDRESS);
        cuMemsetD8Async = bind(lib, "cuMemsetD8Async", JAVA_LONG, JAVA_BYTE, JAVA_LONG, ADDRESS);
        cuModuleLoadData = bind(lib, "cuModuleLoadData", ADDRESS, ADDRESS);
        cuModuleUnload = bind(lib, "cuModuleUnload", ADDRESS);
        cuModuleGetFunction = bind(lib, "cuModuleGetFunction", ADDRESS, ADDRESS, ADDRESS);
        cuFuncSetAttribute = bind(lib, "cuFuncSetAttribute", ADDRESS, JAVA_INT, JAVA_INT);
        cuFuncGetParamInfo = lib.find("cuFuncGetParamInfo").map(symbol -> LINKER.downcallHandle(symbol,
                FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG, ADDRESS, ADDRESS))).orElse(null);
        cuLaunchKernel = bind(lib, "cuLaunchKernel", ADDRESS, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT,
                JAVA_INT, JAVA_INT, ADDRESS, ADDRESS, ADDRESS);
        cuMemAllocManaged = bind(lib, "cuMemAllocManaged", ADDRESS, JAVA_LONG, JAVA_INT);
        cuMemHostAlloc = bind(lib, "cuMemHostAlloc", ADDRESS, JAVA_LONG, JAVA_INT);
        cuMemHostGetDevicePointer = bind(lib, "cuMemHostGetDevicePointer_v2", ADDRESS, ADDRESS, JAVA_INT);
        cuMemFreeHost = bind(lib, "cuMemFreeHost", ADDRESS);
        MethodHandle advise = optional(lib, "cuMemAdvise_v2", JAVA_LONG, JAVA_LONG, JAVA_INT, MEM_LOCATION);
        MethodHandle prefetch = optional(lib, "cuMemPrefetchAsync_v2", JAVA_LONG, JAVA_LONG, MEM_LOCATION, JAVA_INT, ADDRESS);
        memLocationByValue = advise != null && prefetch != null;
        if (!memLocationByValue) {
            advise = optional(lib, "cuMemAdvise", JAVA_LONG, JAVA_LONG, JAVA_INT, JAVA_INT);
            prefetch = optional(lib, "cuMemPrefetchAsync", JAVA_LONG, JAVA_LONG, JAVA_INT, ADDRESS);
        }
        cuMemAdvise = advise;
        cuMemPrefetchAsync = prefetch;
        cuEventCreate = optional(lib, "cuEventCreate", ADDRESS, JAVA_INT);
        cuEventRecord = optional(lib, "cuEventRecord", ADDRESS, ADDRESS);
        cuEventSynchronize = optional(lib, "cuEventSynchronize", ADDRESS);
        cuEventElapsedTime = optional(lib, "cuEventElapsedTime", ADDRESS, ADDRESS, ADDRESS);
        cuEventDestroy = optional(lib, "cuEventDestroy_v2", ADDRESS);
    }

    /** Whether the library has the event calls below. */
    boolean hasEvents() {
        return cuEventCreate != null && cuEventRecord != null && cuEventSynchronize != null && cuEventElapsedTime != null
                && cuEventDestroy != null;
    }

    int eventCreate(MemorySegment event, int flags) {
        try { return (int) cuEventCreate.invokeExact(event, flags); } catch (Throwable t) { throw rethrow(t); }
    }

    int eventRecord(MemorySegment event, MemorySegment stream) {
        try { return (int) cuEventRecord.invokeExact(event, stream); } catch (Throwable t) { throw rethrow(t); }
    }

    int eventSynchronize(MemorySegment event) {
        try { return (int) cuEventSynchronize.invokeExact(event); } catch (Throwable t) { throw rethrow(t); }
    }

    int eventElapsedTime(MemorySegment milliseconds, MemorySegment start, MemorySegment end) {
        try { return (int) cuEventElapsedTime.invokeExact(milliseconds, start, end); } catch (Throwable t) { throw rethrow(t); }
    }

    int eventDestroy(MemorySegment event) {
        try { return (int) cuEventDestroy.invokeExact(event); } catch (Throwable t) { throw rethrow(t); }
    }

    /** Where the library was loaded from, for messages. */
    String origin() { return origin; }

    // ---- the calls ----------------------------------------------------------------------------------------

    int init(int flags) {
        try { return (int) cuInit.invokeExact(flags); } catch (Throwable t) { throw rethrow(t); }
    }

    int driverGetVersion(MemorySegment version) {
        try { return (int) cuDriverGetVersion.invokeExact(version); } catch (Throwable t) { throw rethrow(t); }
    }

    int deviceGetCount(MemorySegment count) {
        try { return (int) cuDeviceGetCount.invokeExact(count); } catch (Throwable t) { throw rethrow(t); }
    }

    int deviceGet(MemorySegment device, int ordinal) {
        try { return (int) cuDeviceGet.invokeExact(device, ordinal); } catch (Throwable t) { throw rethrow(t); }
    }

    int deviceGetName(MemorySegment name, int length, int device) {
        try { return (int) cuDeviceGetName.invokeExact(name, length, device); } catch (Throwable t) { throw rethrow(t); }
    }

    int deviceGetAttribute(MemorySegment value, int attribute, int device) {
        try { return (int) cuDeviceGetAttribute.invokeExact(value, attribute, device); } catch (Throwable t) { throw rethrow(t); }
    }

    int deviceTotalMem(MemorySegment bytes, int device) {
        try { return (int) cuDeviceTotalMem.invokeExact(bytes, device); } catch (Throwable t) { throw rethrow(t); }
    }

    int devicePrimaryCtxRetain(MemorySegment context, int device) {
        try { return (int) cuDevicePrimaryCtxRetain.invokeExact(context, device); } catch (Throwable t) { throw rethrow(t); }
    }

    int devicePrimaryCtxRelease(int device) {
        try { return (int) cuDevicePrimaryCtxRelease.invokeExact(device); } catch (Throwable t) { throw rethrow(t); }
    }

    int ctxSetCurrent(MemorySegment context) {
        try { return (int) cuCtxSetCurrent.invokeExact(context); } catch (Throwable t) { throw rethrow(t); }
    }

    int streamCreate(MemorySegment stream, int flags) {
        try { return (int) cuStreamCreate.invokeExact(stream, flags); } catch (Throwable t) { throw rethrow(t); }
    }

    int streamDestroy(MemorySegment stream) {
        try { return (int) cuStreamDestroy.invokeExact(stream); } catch (Throwable t) { throw rethrow(t); }
    }

    int streamSynchronize(MemorySegment stream) {
        try { return (int) cuStreamSynchronize.invokeExact(stream); } catch (Throwable t) { throw rethrow(t); }
    }

    int memAlloc(MemorySegment devicePtr, long bytes) {
        try { return (int) cuMemAlloc.invokeExact(devicePtr, bytes); } catch (Throwable t) { throw rethrow(t); }
    }

    int memFree(long devicePtr) {
        try { return (int) cuMemFree.invokeExact(devicePtr); } catch (Throwable t) { throw rethrow(t); }
    }

    int memGetInfo(MemorySegment free, MemorySegment total) {
        try { return (int) cuMemGetInfo.invokeExact(free, total); } catch (Throwable t) { throw rethrow(t); }
    }

    int memcpyHtoDAsync(long dst, MemorySegment src, long bytes, MemorySegment stream) {
        try { return (int) cuMemcpyHtoDAsync.invokeExact(dst, src, bytes, stream); } catch (Throwable t) { throw rethrow(t); }
    }

    int memcpyDtoHAsync(MemorySegment dst, long src, long bytes, MemorySegment stream) {
        try { return (int) cuMemcpyDtoHAsync.invokeExact(dst, src, bytes, stream); } catch (Throwable t) { throw rethrow(t); }
    }

    int memcpyDtoDAsync(long dst, long src, long bytes, MemorySegment stream) {
        try { return (int) cuMemcpyDtoDAsync.invokeExact(dst, src, bytes, stream); } catch (Throwable t) { throw rethrow(t); }
    }

    int memsetD8Async(long dst, byte value, long count, MemorySegment stream) {
        try { return (int) cuMemsetD8Async.invokeExact(dst, value, count, stream); } catch (Throwable t) { throw rethrow(t); }
    }

    int moduleLoadData(MemorySegment module, MemorySegment image) {
        try { return (int) cuModuleLoadData.invokeExact(module, image); } catch (Throwable t) { throw rethrow(t); }
    }

    int moduleUnload(MemorySegment module) {
        try { return (int) cuModuleUnload.invokeExact(module); } catch (Throwable t) { throw rethrow(t); }
    }

    int moduleGetFunction(MemorySegment function, MemorySegment module, MemorySegment name) {
        try { return (int) cuModuleGetFunction.invokeExact(function, module, name); } catch (Throwable t) { throw rethrow(t); }
    }

    int funcSetAttribute(MemorySegment function, int attribute, int value) {
        try { return (int) cuFuncSetAttribute.invokeExact(function, attribute, value); } catch (Throwable t) { throw rethrow(t); }
    }

    /** Whether {@link #funcGetParamInfo} is available (drivers for CUDA 12.4 and newer). */
    boolean hasFuncGetParamInfo() { return cuFuncGetParamInfo != null; }

    int funcGetParamInfo(MemorySegment function, long index, MemorySegment offset, MemorySegment size) {
        try { return (int) cuFuncGetParamInfo.invokeExact(function, index, offset, size); } catch (Throwable t) { throw rethrow(t); }
    }

    int launchKernel(MemorySegment function, int gridX, int gridY, int gridZ, int blockX, int blockY, int blockZ,
                     int sharedMemBytes, MemorySegment stream, MemorySegment params, MemorySegment extra) {
        try {
            return (int) cuLaunchKernel.invokeExact(function, gridX, gridY, gridZ, blockX, blockY, blockZ,
                    sharedMemBytes, stream, params, extra);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    int memAllocManaged(MemorySegment devicePtr, long bytes, int flags) {
        try { return (int) cuMemAllocManaged.invokeExact(devicePtr, bytes, flags); } catch (Throwable t) { throw rethrow(t); }
    }

    int memHostAlloc(MemorySegment hostPtr, long bytes, int flags) {
        try { return (int) cuMemHostAlloc.invokeExact(hostPtr, bytes, flags); } catch (Throwable t) { throw rethrow(t); }
    }

    int memHostGetDevicePointer(MemorySegment devicePtr, MemorySegment host, int flags) {
        try { return (int) cuMemHostGetDevicePointer.invokeExact(devicePtr, host, flags); } catch (Throwable t) { throw rethrow(t); }
    }

    int memFreeHost(MemorySegment host) {
        try { return (int) cuMemFreeHost.invokeExact(host); } catch (Throwable t) { throw rethrow(t); }
    }

    /** Whether {@link #memAdviseDevice} and {@link #memPrefetchToDevice} can be called. */
    boolean hasManagedMemoryHints() { return cuMemAdvise != null && cuMemPrefetchAsync != null; }

    /** cuMemAdvise for managed memory with device {@code device} as the location the advice names. */
    int memAdviseDevice(long devicePtr, long bytes, int advice, int device) {
        try {
            if (!memLocationByValue) return (int) cuMemAdvise.invokeExact(devicePtr, bytes, advice, device);
            try (Arena arena = Arena.ofConfined()) {
                return (int) cuMemAdvise.invokeExact(devicePtr, bytes, advice, deviceLocation(arena, device));
            }
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** cuMemPrefetchAsync of managed memory to device {@code device}, queued on {@code stream}. */
    int memPrefetchToDevice(long devicePtr, long bytes, int device, MemorySegment stream) {
        try {
            if (!memLocationByValue) return (int) cuMemPrefetchAsync.invokeExact(devicePtr, bytes, device, stream);
            try (Arena arena = Arena.ofConfined()) {
                return (int) cuMemPrefetchAsync.invokeExact(devicePtr, bytes, deviceLocation(arena, device), 0, stream);
            }
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static MemorySegment deviceLocation(Arena arena, int device) {
        MemorySegment location = arena.allocate(MEM_LOCATION);
        location.set(JAVA_INT, 0, CU_MEM_LOCATION_TYPE_DEVICE);
        location.set(JAVA_INT, 4, device);
        return location;
    }

    // ---- errors -------------------------------------------------------------------------------------------

    /** Throws a {@link CudaException} naming {@code call} unless {@code result} is CUDA_SUCCESS. */
    void check(int result, String call) {
        if (result != SUCCESS) throw error(result, call);
    }

    CudaException error(int result, String call) {
        String name = errorName(result);
        String text = errorString(result);
        StringBuilder m = new StringBuilder(call).append(" failed: ").append(name);
        if (!text.isEmpty() && !text.equals(name)) m.append(" (").append(text).append(')');
        if (isStickyKernelError(result)) {
            m.append("; the error may come from an earlier kernel on this device (ops are asynchronous): run with"
                    + " -Dlora4j.cuda.syncEachOp=true or under compute-sanitizer to find it");
        }
        return new CudaException(m.toString(), result, name);
    }

    /** The error's symbolic name, e.g. CUDA_ERROR_NO_DEVICE; "CUresult N" when the driver does not know it. */
    String errorName(int result) {
        return describe(cuGetErrorName, result);
    }

    String errorString(int result) {
        return describe(cuGetErrorString, result);
    }

    private String describe(MethodHandle fn, int result) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment p = arena.allocate(ADDRESS);
            int r = (int) fn.invokeExact(result, p);
            MemorySegment str = p.get(ADDRESS, 0);
            if (r != SUCCESS || str.equals(MemorySegment.NULL)) return "CUresult " + result;
            return str.reinterpret(4096).getString(0);
        } catch (Throwable t) {
            return "CUresult " + result;
        }
    }

    /** Errors after which the context is unusable: an illegal access or other fault in a kernel. */
    private static boolean isStickyKernelError(int result) {
        return result == 700 || (result >= 714 && result <= 719);
    }

    // ---- binding ------------------------------------------------------------------------------------------

    private static MethodHandle bind(SymbolLookup lib, String name, MemoryLayout... args) {
        MemorySegment symbol = lib.find(name).orElseThrow(() -> new CudaException(
                "the CUDA driver library has no function " + name + ": the NVIDIA driver is too old for lora4j"
                        + " (it needs a driver for CUDA 12 or newer)"));
        return LINKER.downcallHandle(symbol, FunctionDescriptor.of(JAVA_INT, args));
    }

    private static MethodHandle optional(SymbolLookup lib, String name, MemoryLayout... args) {
        return lib.find(name).map(symbol -> LINKER.downcallHandle(symbol, FunctionDescriptor.of(JAVA_INT, args))).orElse(null);
    }

    static RuntimeException rethrow(Throwable t) {
        if (t instanceof RuntimeException r) return r;
        if (t instanceof Error e) throw e;
        return new IllegalStateException(t);
    }
}
