package dev.lora4j.tokenizer;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

/** Finds the shared assets folder that lies beside the repository ({@code ../shared} from its root). */
public final class SharedAssets {
    private SharedAssets() {}

    /** The path under shared/assets, or a skipped test when the shared folder is not on this machine. */
    public static Path require(String relative) {
        Path dir = Path.of(System.getProperty("user.dir")).toAbsolutePath();
        for (Path d = dir; d != null; d = d.getParent()) {
            Path candidate = d.resolve("shared").resolve("assets").resolve(relative);
            if (Files.exists(candidate)) return candidate;
            Path sibling = d.resolveSibling("shared").resolve("assets").resolve(relative);
            if (d.getParent() != null && Files.exists(sibling)) return sibling;
        }
        assumeTrue(false, "skipped: shared/assets/" + relative + " is not beside the repository (../shared); these tests need the shared assets");
        return null;
    }
}
