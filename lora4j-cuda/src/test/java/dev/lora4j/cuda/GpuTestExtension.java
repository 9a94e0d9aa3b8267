package dev.lora4j.cuda;

import dev.lora4j.backend.BackendProvider;
import org.junit.jupiter.api.extension.AfterAllCallback;
import org.junit.jupiter.api.extension.BeforeAllCallback;
import org.junit.jupiter.api.extension.BeforeEachCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * What the GPU test classes' backend extensions share: the CUDA probe before the class, the backends opened only where
 * it passes, every test skipped with the probe's one-line reason where it does not (no GPU, driver or library; no
 * device emulator in CI), and the backends closed after the class.
 */
abstract class GpuTestExtension implements BeforeAllCallback, BeforeEachCallback, AfterAllCallback {
    private String unavailable;
    private boolean opened;

    /** Opens the class's backends and hands them to it; called only where CUDA can run. */
    protected abstract void open();

    /** Closes what {@link #open} opened and takes the backends back from the class. */
    protected abstract void close();

    @Override
    public final void beforeAll(ExtensionContext context) {
        BackendProvider.Availability a = new CudaBackendProvider().probe();
        if (!a.available()) {
            unavailable = "CUDA backend unavailable: " + a.detail();
            return;
        }
        open();
        opened = true;
    }

    @Override
    public final void beforeEach(ExtensionContext context) {
        assumeTrue(opened, unavailable); // each test reports the reason it was skipped
    }

    @Override
    public final void afterAll(ExtensionContext context) {
        if (opened) close();
    }
}
