package dev.lora4j.cuda;

import dev.lora4j.backend.BitsandbytesAdam;
import dev.lora4j.backend.BitsandbytesAdam.Scalars;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

/**
 * The CUDA backend's bitsandbytes AdamW updates (optimizer8bit.cu): argument checks, the per-step scalars from the
 * host, a prefetch of paged (managed) states to the device, and the launches.
 */
final class CudaBitsandbytesAdam {
    /** optimizer8bit.cu: L4J_BNB_BLOCK, one thread per element of a block of 256. */
    static final int THREADS = BitsandbytesAdam.BLOCK_SIZE;
    /** Grid blocks of the 8-bit kernel at most; each loops over its share of the element blocks. */
    private static final long MAX_GRID = 1L << 20;

    private final CudaBackend backend;

    CudaBitsandbytesAdam(CudaBackend backend) {
        this.backend = backend;
    }

    void adamw8bit(Tensor param, Tensor grad, Tensor m8, Tensor v8, Tensor absmaxM, Tensor absmaxV, Tensor codeSigned,
                   Tensor codeUnsigned, float lr, float beta1, float beta2, float eps, float weightDecay, long step) {
        String op = "adamw8bit";
        CudaTensor p = f32(param, op + " param"), g = f32(grad, op + " grad"), am = f32(absmaxM, op + " absmaxM"),
                av = f32(absmaxV, op + " absmaxV"), qs = f32(codeSigned, op + " codeSigned"),
                qu = f32(codeUnsigned, op + " codeUnsigned");
        CudaTensor m = u8(m8, op + " m8"), v = u8(v8, op + " v8");
        long n = p.numel();
        for (CudaTensor t : new CudaTensor[] {g, m, v}) count(t, n, op + ": grad, m8 and v8 must have as many elements as param " + param);
        long blocks = BitsandbytesAdam.blocks(n);
        count(am, blocks, op + ": absmaxM must have one value per block of 256 elements (" + blocks + ")");
        count(av, blocks, op + ": absmaxV must have one value per block of 256 elements (" + blocks + ")");
        count(qs, BitsandbytesAdam.CODES, op + ": codeSigned must hold the 256 values of a dynamic map");
        count(qu, BitsandbytesAdam.CODES, op + ": codeUnsigned must hold the 256 values of a dynamic map");
        Scalars s = Scalars.of(lr, beta1, beta2, eps, weightDecay, step);
        if (n == 0) return;
        prefetch(p, g, m, v, am, av);
        backend.kernels().launch(CudaKernels.ADAMW_8BIT, Math.min(blocks, MAX_GRID), THREADS, 0, backend.stream(),
                KernelArgs.start().ptr(p.address()).ptr(g.address()).ptr(m.address()).ptr(v.address())
                        .ptr(am.address()).ptr(av.address()).ptr(qs.address()).ptr(qu.address()).f32(s.beta1())
                        .f32(s.beta2()).f32(s.stepSize()).f32(s.epsCorrection2()).f32(s.decay())
                        .i32(s.decays() ? 1 : 0).i64(n));
    }

    void adamw32bit(Tensor param, Tensor grad, Tensor m, Tensor v, float lr, float beta1, float beta2, float eps,
                    float weightDecay, long step) {
        String op = "adamw32bit";
        String what = op + " param, grad, m and v";
        CudaTensor p = f32(param, what), g = f32(grad, what), ms = f32(m, what), vs = f32(v, what);
        long n = p.numel();
        for (CudaTensor t : new CudaTensor[] {g, ms, vs}) count(t, n, op + ": grad, m and v must have as many elements as param " + param);
        Scalars s = Scalars.of(lr, beta1, beta2, eps, weightDecay, step);
        if (n == 0) return;
        prefetch(p, g, ms, vs);
        backend.kernels().launch(CudaKernels.ADAMW_32BIT, CudaKernels.gridFor(n), CudaKernels.ELEMENTWISE_THREADS, 0,
                backend.stream(), KernelArgs.start().ptr(p.address()).ptr(g.address()).ptr(ms.address())
                        .ptr(vs.address()).f32(s.beta1()).f32(s.beta2()).f32(s.stepSize())
                        .f32(s.epsCorrection2()).f32(s.decay()).i32(s.decays() ? 1 : 0).i64(n));
    }

    /** Managed states that the driver moved to the host come back in one transfer rather than page fault by page fault. */
    private void prefetch(CudaTensor... tensors) {
        for (CudaTensor t : tensors) backend.prefetchPaged(t);
    }

    private CudaTensor f32(Tensor t, String what) {
        if (t.dtype() != DType.F32) throw new IllegalArgumentException(what + " must be F32, got " + t);
        return backend.device(t);
    }

    private CudaTensor u8(Tensor t, String what) {
        if (t.dtype() != DType.U8) throw new IllegalArgumentException(what + " must be U8, got " + t);
        return backend.device(t);
    }

    private static void count(Tensor t, long expected, String what) {
        if (t.numel() != expected) throw new IllegalArgumentException(what + ", got " + t);
    }
}
