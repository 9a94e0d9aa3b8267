package dev.lora4j.backend.cpu;

import dev.lora4j.backend.Backend;
import dev.lora4j.backend.testing.TrainingOpsContract;

/** The CPU backend, with three threads so that every op really splits its work, computes the training ops right. */
class CpuTrainingOpsContractTest extends TrainingOpsContract {
    @Override
    protected Backend openBackend() {
        return new CpuBackend(3);
    }
}
