package dev.lora4j.cuda;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

class LibrarySearchTest {

    @Test
    void cublasLtIsLookedForInCudaHomeThenLdLibraryPathThenTheToolkitsNewestFirst(@TempDir Path usrLocal) throws IOException {
        for (String toolkit : List.of("cuda-12.4", "cuda-13.0", "cuda-13.1", "cuda-12.9", "not-cuda")) {
            Files.createDirectories(usrLocal.resolve(toolkit));
        }
        LibrarySearch search = LibrarySearch.cublasLt(
                Map.of("CUDA_HOME", "/opt/cuda", "LD_LIBRARY_PATH", "/a:/b::"), usrLocal, null);
        String target = search.directories().get(1).getParent().getFileName().toString(); // x86_64-linux or sbsa-linux

        assertThat(search.fileNames()).containsExactly("libcublasLt.so.13", "libcublasLt.so.12");
        assertThat(search.useDynamicLoader()).isTrue();
        assertThat(search.directories()).startsWith(
                Path.of("/opt/cuda/lib64"), Path.of("/opt/cuda/targets", target, "lib"),
                Path.of("/a"), Path.of("/b"),
                usrLocal.resolve("cuda/lib64"), usrLocal.resolve("cuda/targets/" + target + "/lib"),
                usrLocal.resolve("cuda-13.1/targets/" + target + "/lib"), usrLocal.resolve("cuda-13.1/lib64"),
                usrLocal.resolve("cuda-13.0/targets/" + target + "/lib"), usrLocal.resolve("cuda-13.0/lib64"),
                usrLocal.resolve("cuda-12.9/targets/" + target + "/lib"), usrLocal.resolve("cuda-12.9/lib64"),
                usrLocal.resolve("cuda-12.4/targets/" + target + "/lib"), usrLocal.resolve("cuda-12.4/lib64"));
        assertThat(search.directories().getLast().toString()).startsWith("/usr/lib/").endsWith("-linux-gnu");
        assertThat(search.directories()).noneMatch(d -> d.toString().contains("not-cuda"));
    }

    @Test
    void theDriverIsLookedForOnLdLibraryPathFirstAndNeverAsTheToolkitStub() {
        LibrarySearch search = LibrarySearch.driver(Map.of("LD_LIBRARY_PATH", "/compat"), null);

        assertThat(search.fileNames()).containsExactly("libcuda.so.1");
        assertThat(search.directories().getFirst()).isEqualTo(Path.of("/compat"));
        assertThat(search.directories()).contains(Path.of("/usr/lib"), Path.of("/usr/local/nvidia/lib64"));
        assertThat(search.directories()).noneMatch(d -> d.toString().contains("stubs"));
    }

    @Test
    void folderOrderWinsAndWithinAFolderTheNewerLibraryIsPreferred(@TempDir Path root) throws IOException {
        Path first = Files.createDirectories(root.resolve("first"));
        Path second = Files.createDirectories(root.resolve("second"));
        Files.createFile(first.resolve("libcublasLt.so.12"));
        Files.createFile(second.resolve("libcublasLt.so.12"));
        Files.createFile(second.resolve("libcublasLt.so.13"));
        LibrarySearch search = new LibrarySearch(List.of("libcublasLt.so.13", "libcublasLt.so.12"),
                List.of(root.resolve("absent"), first, second), false, null);

        assertThat(search.existingCandidates()).containsExactly(
                first.resolve("libcublasLt.so.12"), second.resolve("libcublasLt.so.13"), second.resolve("libcublasLt.so.12"));
    }

    @Test
    void aMissingLibraryIsReportedInOneLineNamingEveryPlaceSearched(@TempDir Path empty) {
        LibrarySearch search = new LibrarySearch(List.of("libcuda.so.1"), List.of(empty, Path.of("/nonexistent")), false, null);

        LibrarySearch.Result result = search.load(Arena.ofAuto());

        assertThat(result).isInstanceOf(LibrarySearch.Missing.class);
        String reason = ((LibrarySearch.Missing) result).reason();
        assertThat(reason).isEqualTo("libcuda.so.1 not found (searched " + empty + ", /nonexistent)");
    }

    @Test
    void aFileThatIsNotALoadableLibraryIsReportedWithItsPath(@TempDir Path dir) throws IOException {
        Path fake = Files.writeString(dir.resolve("libcuda.so.1"), "not an ELF file");
        LibrarySearch search = new LibrarySearch(List.of("libcuda.so.1"), List.of(dir), false, null);

        LibrarySearch.Result result = search.load(Arena.ofAuto());

        assertThat(result).isInstanceOf(LibrarySearch.Missing.class);
        assertThat(((LibrarySearch.Missing) result).reason())
                .startsWith("found " + fake + " but could not load it: ")
                .doesNotContain("\n");
    }

    @Test
    void anExplicitPathNamedByTheUserIsTheOnlyPlaceTried(@TempDir Path dir) {
        Path chosen = dir.resolve("libcuda.so.1");
        LibrarySearch search = new LibrarySearch(List.of("libcuda.so.1"), List.of(Path.of("/usr/lib")), true, chosen);

        LibrarySearch.Result result = search.load(Arena.ofAuto());

        assertThat(((LibrarySearch.Missing) result).reason())
                .isEqualTo("libcuda.so.1 not found at " + chosen + " (named by a system property)");
    }

    @Test
    void anExistingLibraryIsLoadedAndItsFunctionsFound() {
        Path libc = Path.of("/lib/x86_64-linux-gnu");
        assumeTrue(Files.exists(libc.resolve("libc.so.6")), "no /lib/x86_64-linux-gnu/libc.so.6 on this machine");
        LibrarySearch search = new LibrarySearch(List.of("libc.so.6"), List.of(Path.of("/nonexistent"), libc), false, null);

        LibrarySearch.Result result = search.load(Arena.ofAuto());

        assertThat(result).isInstanceOf(LibrarySearch.Loaded.class);
        LibrarySearch.Loaded loaded = (LibrarySearch.Loaded) result;
        assertThat(loaded.origin()).isEqualTo(libc.resolve("libc.so.6").toString());
        assertThat(loaded.symbols().find("strlen")).isPresent();
    }
}
