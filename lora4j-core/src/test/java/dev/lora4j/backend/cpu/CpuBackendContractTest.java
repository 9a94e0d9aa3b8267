package dev.lora4j.backend.cpu;

import dev.lora4j.backend.Backend;
import dev.lora4j.backend.testing.BackendContractTests;

/** The CPU backend, with three threads so that every op really splits its work, meets the Backend contract. */
class CpuBackendContractTest extends BackendContractTests {
    @Override
    protected Backend openBackend() {
        return new CpuBackend(3);
    }
}
