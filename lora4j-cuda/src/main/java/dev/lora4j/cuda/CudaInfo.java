package dev.lora4j.cuda;

import dev.lora4j.backend.BackendProvider.Availability;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.util.Arrays;

/**
 * Prints whether the CUDA backend can run here and why not, what the kernel image holds, and, on a usable GPU,
 * the result of a round trip through device memory and one matmul. For checking a machine by hand:
 * {@code java --enable-native-access=ALL-UNNAMED -cp ... dev.lora4j.cuda.CudaInfo}. Exits with 1 when CUDA is
 * unavailable or the check fails.
 */
public final class CudaInfo {
    private CudaInfo() {}

    public static void main(String[] args) {
        Availability a = new CudaBackendProvider().probe();
        System.out.println("CUDA backend: " + (a.available() ? "available: " : "unavailable: ") + a.detail());
        System.out.println("kernel image: " + KernelImage.buildProperties().getProperty("detail", "no build record")
                + (KernelImage.present() ? "; targets " + FatbinContents.parse(KernelImage.bytes()).targets() : ""));
        if (!a.available()) System.exit(1);
        try (CudaBackend gpu = CudaBackend.open()) {
            System.out.println("opened: " + gpu.description());
            float[] xs = {1, 2, 3, 4, 5, 6};
            float[] ws = {1, 0, -1, 0.5f, 0.25f, 0.125f};
            try (Tensor x = gpu.fromFloats(xs, DType.F32, 2, 3);
                 Tensor w = gpu.fromFloats(ws, DType.BF16, 2, 3);
                 Tensor out = gpu.allocate(DType.F32, 2, 2)) {
                gpu.matmul(x, w, out);
                float[] got = gpu.toFloats(out);
                float[] want = {-2f, 1.375f, -2f, 4f};
                System.out.println("matmul [2,3]x[2,3]^T (BF16 weights): " + Arrays.toString(got)
                        + (Arrays.equals(got, want) ? " (correct)" : " (expected " + Arrays.toString(want) + ")"));
                if (!Arrays.equals(got, want)) System.exit(1);
            }
        }
    }
}
