package dev.lora4j.backend.cpu;

import dev.lora4j.backend.Backend;
import dev.lora4j.backend.testing.LoraOpsContract;

/** The CPU backend's fused LoRA down projection and its gradients against the double-precision reference. */
class CpuLoraOpsTest extends LoraOpsContract {
    @Override
    protected Backend openBackend() { return new CpuBackend(2); }
}
