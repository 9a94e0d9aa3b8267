package dev.lora4j.cuda;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/** The kernel image the build makes (scripts/build-kernels.sh) and what the backend says when there is none. */
class KernelImageTest {
    private static final List<String> SASS = List.of("sm_80", "sm_86", "sm_89", "sm_90");

    @Test
    void whenNvccWasPresentTheImageHoldsMachineCodeForAmpereAdaAndHopperAndHopperPtx() {
        assumeTrue("built".equals(KernelImage.buildProperties().getProperty("status")),
                "the kernels were not built: " + KernelImage.missingReason());

        FatbinContents image = FatbinContents.parse(KernelImage.bytes());

        assertThat(image.targets()).containsExactlyInAnyOrder("sm_80", "sm_86", "sm_89", "sm_90", "compute_90");
        assertThat(image.runsOn(80)).isTrue();
        assertThat(image.runsOn(87)).as("sm_86 code runs on sm_87").isTrue();
        assertThat(image.runsOn(90)).isTrue();
        assertThat(image.runsOn(120)).as("compute_90 PTX is compiled by newer GPUs").isTrue();
        assertThat(image.runsOn(75)).isFalse();
        assertThat(KernelImage.missingReason()).isNull();
    }

    @Test
    void everyKernelTheBackendLaunchesIsInTheMachineCodeForEveryArchitecture() {
        assumeTrue(KernelImage.present(), "the kernels were not built: " + KernelImage.missingReason());
        byte[] bytes = KernelImage.bytes();
        FatbinContents image = FatbinContents.parse(bytes);

        for (FatbinContents.Entry e : image.entries()) {
            if (e.kind() != FatbinContents.KIND_ELF) continue;
            assertThat(e.compressed()).as(e.target() + " is stored uncompressed").isFalse();
            String elf = new String(bytes, e.payloadOffset(), (int) e.payloadSize(), StandardCharsets.ISO_8859_1);
            assertThat(elf).startsWith("\u007fELF");
            for (String kernel : CudaKernels.NAMES) {
                assertThat(elf).as(kernel + " in " + e.target()).contains(kernel + "\0");
            }
        }
    }

    @Test
    void cuobjdumpAgreesOnTheArchitecturesWhenItIsInstalled() throws Exception {
        assumeTrue(KernelImage.present(), "the kernels were not built: " + KernelImage.missingReason());
        Path cuobjdump = Path.of("/usr/local/cuda/bin/cuobjdump");
        assumeTrue(Files.isExecutable(cuobjdump), "cuobjdump is not installed at " + cuobjdump);
        Path fatbin = Files.createTempFile("lora4j", ".fatbin");
        try {
            Files.write(fatbin, KernelImage.bytes());
            Process p = new ProcessBuilder(cuobjdump.toString(), "--list-elf", fatbin.toString()).redirectErrorStream(true).start();
            String out = new String(p.getInputStream().readAllBytes());
            assertThat(p.waitFor(60, TimeUnit.SECONDS)).isTrue();
            for (String sm : SASS) assertThat(out).contains(sm);
        } finally {
            Files.deleteIfExists(fatbin);
        }
    }

    @Test
    void withoutNvccTheBuildSucceedsWithOneNoticeAndTheBackendSaysWhy(@TempDir Path out) throws Exception {
        Path script = repositoryRoot().resolve("scripts/build-kernels.sh");
        ProcessBuilder pb = new ProcessBuilder("bash", script.toString(), Path.of("src/main/cuda").toAbsolutePath().toString(),
                out.resolve("classes").toString(), out.resolve("work").toString(), "false");
        Map<String, String> env = pb.environment();
        env.keySet().removeIf(k -> k.startsWith("CUDA") || k.startsWith("LORA4J"));
        env.put("PATH", "/usr/bin:/bin");
        env.put("LORA4J_NVCC_FALLBACKS", "");
        assumeTrue(!Files.exists(Path.of("/usr/bin/nvcc")) && !Files.exists(Path.of("/bin/nvcc")),
                "nvcc is installed in /usr/bin, so it cannot be hidden from the build script");
        Process p = pb.redirectErrorStream(true).start();
        String log = new String(p.getInputStream().readAllBytes()).strip();

        assertThat(p.waitFor(60, TimeUnit.SECONDS)).isTrue();
        assertThat(p.exitValue()).as(log).isZero();
        assertThat(log.lines()).singleElement().asString().startsWith("lora4j: nvcc not found");
        assertThat(out.resolve("classes/lora4j_kernels.fatbin")).doesNotExist();
        Properties props = load(out.resolve("classes/lora4j_kernels.properties"));
        assertThat(KernelImage.missingReason(false, props))
                .isEqualTo("kernel image not built: nvcc was not found when lora4j was built");
    }

    @Test
    void aSkippedKernelBuildIsReportedAsSkipped(@TempDir Path out) throws Exception {
        Path script = repositoryRoot().resolve("scripts/build-kernels.sh");
        Process p = new ProcessBuilder("bash", script.toString(), Path.of("src/main/cuda").toAbsolutePath().toString(),
                out.resolve("classes").toString(), out.resolve("work").toString(), "true").redirectErrorStream(true).start();
        p.getInputStream().readAllBytes();
        assertThat(p.waitFor(60, TimeUnit.SECONDS)).isTrue();
        assertThat(p.exitValue()).isZero();

        Properties props = load(out.resolve("classes/lora4j_kernels.properties"));
        assertThat(KernelImage.missingReason(false, props)).startsWith("kernel image not built: ").contains("lora4j.nvcc.skip");
    }

    @Test
    void anImageAbsentWithoutABuildRecordIsReportedAsMissingFromTheClassPath() {
        assertThat(KernelImage.missingReason(false, new Properties()))
                .isEqualTo("kernel image missing: dev/lora4j/cuda/lora4j_kernels.fatbin is not on the class path"
                        + " (rebuild lora4j-cuda on a machine with nvcc)");
    }

    @Test
    void somethingThatIsNotAFatbinIsRejectedWithTheReason() {
        assertThatThrownBy(() -> FatbinContents.parse("\u007fELF and more bytes".getBytes(StandardCharsets.ISO_8859_1)))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("not a CUDA fatbin");
        byte[] truncated = Arrays.copyOf(new byte[] {0x50, (byte) 0xed, 0x55, (byte) 0xba, 1, 0, 16, 0, 100, 0, 0, 0, 0, 0, 0, 0}, 40);
        assertThatThrownBy(() -> FatbinContents.parse(truncated))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("truncated fatbin");
    }

    private static Properties load(Path file) throws IOException {
        Properties p = new Properties();
        try (InputStream in = Files.newInputStream(file)) {
            p.load(in);
        }
        return p;
    }

    /** The lora4j checkout: the folder above this module that holds scripts/build-kernels.sh. */
    private static Path repositoryRoot() {
        Path dir = Path.of("").toAbsolutePath();
        while (dir != null && !Files.isRegularFile(dir.resolve("scripts/build-kernels.sh"))) dir = dir.getParent();
        assumeTrue(dir != null, "scripts/build-kernels.sh not found above " + Path.of("").toAbsolutePath());
        return dir;
    }
}
