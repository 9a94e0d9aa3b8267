package dev.lora4j.cuda;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.SymbolLookup;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * Finds and opens one native library by looking, in order, in a list of folders for a list of file names, then
 * asking the dynamic loader for those names. A failed search says in one line what was looked for and where.
 *
 * @param fileNames        the names to try in each folder, preferred first ("libcublasLt.so.13", "libcublasLt.so.12")
 * @param directories      the folders to look in, in order
 * @param useDynamicLoader whether to finish by handing the bare names to the dynamic loader (ld.so.cache, rpath)
 * @param override         an exact file chosen by the user (a system property), tried alone when present
 */
record LibrarySearch(List<String> fileNames, List<Path> directories, boolean useDynamicLoader, Path override) {

    /** System property naming the exact libcuda.so.1 to load. */
    static final String DRIVER_PROPERTY = "lora4j.cuda.libcuda";
    /** System property naming the exact libcublasLt.so to load. */
    static final String CUBLASLT_PROPERTY = "lora4j.cuda.libcublaslt";

    LibrarySearch {
        fileNames = List.copyOf(fileNames);
        directories = List.copyOf(directories);
    }

    /** The outcome: a loaded library and where it came from, or the one-line reason nothing was loaded. */
    sealed interface Result permits Loaded, Missing {}

    record Loaded(SymbolLookup symbols, String origin) implements Result {}

    record Missing(String reason) implements Result {}

    /** The CUDA driver library, as this process's environment and system properties say to look for it. */
    static LibrarySearch driver() {
        return driver(System.getenv(), overrideFrom(DRIVER_PROPERTY));
    }

    /** The cuBLASLt library, as this process's environment and system properties say to look for it. */
    static LibrarySearch cublasLt() {
        return cublasLt(System.getenv(), Path.of("/usr/local"), overrideFrom(CUBLASLT_PROPERTY));
    }

    /**
     * libcuda.so.1 belongs to the installed driver, never to a toolkit: {@code LD_LIBRARY_PATH} first (that is how
     * containers and compat packages point at it), then the folders distributions and container runtimes use.
     */
    static LibrarySearch driver(Map<String, String> env, Path override) {
        List<Path> dirs = new ArrayList<>(pathList(env.get("LD_LIBRARY_PATH")));
        String triple = multiarchTriple();
        dirs.add(Path.of("/usr/lib/" + triple));
        dirs.add(Path.of("/usr/lib64"));
        dirs.add(Path.of("/usr/lib"));
        dirs.add(Path.of("/usr/local/nvidia/lib64"));
        dirs.add(Path.of("/usr/local/nvidia/lib"));
        dirs.add(Path.of("/usr/lib/wsl/lib"));
        return new LibrarySearch(List.of("libcuda.so.1"), distinct(dirs), true, override);
    }

    /**
     * cuBLASLt ships with the toolkit: {@code $CUDA_HOME} (and {@code $CUDA_PATH}) first, then {@code LD_LIBRARY_PATH},
     * /usr/local/cuda, the versioned toolkits under {@code usrLocal} (CUDA 13 before 12, newest first), and the
     * distribution's library folder. CUDA 13's library is preferred to 12's within each folder.
     */
    static LibrarySearch cublasLt(Map<String, String> env, Path usrLocal, Path override) {
        String target = targetFolder();
        List<Path> dirs = new ArrayList<>();
        for (String var : List.of("CUDA_HOME", "CUDA_PATH")) {
            String home = env.get(var);
            if (home != null && !home.isBlank()) {
                dirs.add(Path.of(home, "lib64"));
                dirs.add(Path.of(home, "targets", target, "lib"));
            }
        }
        dirs.addAll(pathList(env.get("LD_LIBRARY_PATH")));
        dirs.add(usrLocal.resolve("cuda/lib64"));
        dirs.add(usrLocal.resolve("cuda/targets/" + target + "/lib"));
        for (int major : new int[] {13, 12}) {
            for (Path toolkit : versionedToolkits(usrLocal, major)) {
                dirs.add(toolkit.resolve("targets/" + target + "/lib"));
                dirs.add(toolkit.resolve("lib64"));
            }
        }
        dirs.add(Path.of("/usr/lib/" + multiarchTriple()));
        return new LibrarySearch(List.of("libcublasLt.so.13", "libcublasLt.so.12"), distinct(dirs), true, override);
    }

    /** Opens the first candidate that exists and loads; the arena decides how long the library stays loaded. */
    Result load(Arena arena) {
        if (override != null) {
            if (!Files.isRegularFile(override)) {
                return new Missing(fileNames.getFirst() + " not found at " + override + " (named by a system property)");
            }
            try {
                return new Loaded(SymbolLookup.libraryLookup(override, arena), override.toString());
            } catch (RuntimeException e) {
                return new Missing("could not load " + override + ": " + oneLine(e));
            }
        }
        String firstFailure = null;
        for (Path candidate : existingCandidates()) {
            try {
                return new Loaded(SymbolLookup.libraryLookup(candidate, arena), candidate.toString());
            } catch (RuntimeException e) {
                if (firstFailure == null) firstFailure = "found " + candidate + " but could not load it: " + oneLine(e);
            }
        }
        if (useDynamicLoader) {
            for (String name : fileNames) {
                try {
                    return new Loaded(SymbolLookup.libraryLookup(name, arena), name + " (from the dynamic loader's path)");
                } catch (RuntimeException e) {
                    // Not on the loader's path either: fall through to the report below.
                }
            }
        }
        if (firstFailure != null) return new Missing(firstFailure);
        return new Missing(String.join(" or ", fileNames) + " not found (searched " + describeSearch() + ")");
    }

    /** The files this search would try to load, in order: folder by folder, preferred names first. */
    List<Path> existingCandidates() {
        List<Path> found = new ArrayList<>();
        for (Path dir : directories) {
            for (String name : fileNames) {
                Path candidate = dir.resolve(name);
                if (Files.exists(candidate)) found.add(candidate);
            }
        }
        return found;
    }

    /** Where this search looks, for messages: the folders, then the dynamic loader. */
    String describeSearch() {
        List<String> parts = new ArrayList<>();
        for (Path d : directories) parts.add(d.toString());
        if (useDynamicLoader) parts.add("the dynamic loader's path");
        return parts.isEmpty() ? "nowhere" : String.join(", ", parts);
    }

    private static Path overrideFrom(String property) {
        String value = System.getProperty(property);
        return value == null || value.isBlank() ? null : Path.of(value.trim());
    }

    private static List<Path> pathList(String value) {
        List<Path> out = new ArrayList<>();
        if (value == null) return out;
        for (String part : value.split(":")) {
            if (!part.isBlank()) out.add(Path.of(part.trim()));
        }
        return out;
    }

    private static List<Path> distinct(List<Path> dirs) {
        return List.copyOf(new LinkedHashSet<>(dirs));
    }

    private static final Pattern CUDA_VERSION = Pattern.compile("cuda-(\\d+)(?:\\.(\\d+))?");

    /** /usr/local/cuda-13.1, /usr/local/cuda-13.0, ... for one major version, newest first. */
    private static List<Path> versionedToolkits(Path usrLocal, int major) {
        if (!Files.isDirectory(usrLocal)) return List.of();
        try (Stream<Path> children = Files.list(usrLocal)) {
            return children
                    .filter(p -> {
                        Matcher m = CUDA_VERSION.matcher(p.getFileName().toString());
                        return m.matches() && Integer.parseInt(m.group(1)) == major;
                    })
                    .sorted(Comparator.comparingInt(LibrarySearch::minorVersion).reversed())
                    .toList();
        } catch (IOException | RuntimeException e) {
            return List.of();
        }
    }

    private static int minorVersion(Path toolkit) {
        Matcher m = CUDA_VERSION.matcher(toolkit.getFileName().toString());
        return m.matches() && m.group(2) != null ? Integer.parseInt(m.group(2)) : -1;
    }

    private static boolean isArm() {
        String arch = System.getProperty("os.arch", "").toLowerCase(Locale.ROOT);
        return arch.equals("aarch64") || arch.equals("arm64");
    }

    private static String multiarchTriple() {
        return isArm() ? "aarch64-linux-gnu" : "x86_64-linux-gnu";
    }

    private static String targetFolder() {
        return isArm() ? "sbsa-linux" : "x86_64-linux";
    }

    static String oneLine(Throwable t) {
        String m = t.getMessage() == null ? t.getClass().getSimpleName() : t.getMessage();
        return m.replaceAll("\\s+", " ").trim();
    }
}
