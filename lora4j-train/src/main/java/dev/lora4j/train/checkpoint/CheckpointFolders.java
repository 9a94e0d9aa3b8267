package dev.lora4j.train.checkpoint;

import dev.lora4j.io.AtomicFiles;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.DirectoryStream;
import java.nio.file.FileVisitResult;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.SimpleFileVisitor;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.ThreadLocalRandom;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The {@code checkpoint-<step>} folders of an output folder, as transformers' Trainer names them. A checkpoint is
 * written into a hidden temporary folder beside its final place, every file forced to disk, and then renamed into
 * place: a crash leaves either no checkpoint or a complete one, never a half-written one that resuming would trust.
 */
public final class CheckpointFolders {
    public static final String PREFIX = "checkpoint-";
    /** Written last inside a checkpoint: its presence marks the checkpoint complete. */
    public static final String STATE_FILE = "trainer_state.json";
    private static final Pattern NAME = Pattern.compile(Pattern.quote(PREFIX) + "(\\d+)");
    private static final String TEMP_PREFIX = ".tmp-" + PREFIX;

    /** Writes the files of a checkpoint into the folder it is given. */
    @FunctionalInterface
    public interface Contents {
        void writeInto(Path folder) throws IOException;
    }

    private CheckpointFolders() {}

    public static Path folderOf(Path outputDir, long step) {
        return outputDir.resolve(PREFIX + step);
    }

    /** Writes checkpoint {@code step} atomically, replacing one of the same step; returns its folder. */
    public static Path write(Path outputDir, long step, Contents contents) throws IOException {
        Files.createDirectories(outputDir);
        Path target = folderOf(outputDir, step);
        Path temp = outputDir.resolve(TEMP_PREFIX + step + "-" + Long.toHexString(ThreadLocalRandom.current().nextLong()));
        Files.createDirectory(temp);
        try {
            contents.writeInto(temp);
            if (!Files.isRegularFile(temp.resolve(STATE_FILE))) {
                throw new IllegalStateException("a checkpoint must contain " + STATE_FILE);
            }
            forceTree(temp);
            if (Files.exists(target)) deleteTree(target);
            try {
                Files.move(temp, target, StandardCopyOption.ATOMIC_MOVE);
            } catch (AtomicMoveNotSupportedException e) {
                Files.move(temp, target);
            }
            AtomicFiles.forceFolder(outputDir);
            return target;
        } catch (IOException | RuntimeException | Error e) {
            try {
                deleteTree(temp);
            } catch (IOException suppressed) {
                e.addSuppressed(suppressed);
            }
            throw e;
        }
    }

    /** Complete checkpoints, oldest (lowest step) first. */
    public static List<Path> list(Path outputDir) throws IOException {
        List<Path> found = new ArrayList<>();
        if (!Files.isDirectory(outputDir)) return found;
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(outputDir)) {
            for (Path p : ds) {
                if (stepOf(p).isPresent() && Files.isDirectory(p) && Files.isRegularFile(p.resolve(STATE_FILE))) found.add(p);
            }
        }
        found.sort(Comparator.comparingLong(p -> stepOf(p).orElseThrow()));
        return found;
    }

    public static Optional<Path> latest(Path outputDir) throws IOException {
        List<Path> all = list(outputDir);
        return all.isEmpty() ? Optional.empty() : Optional.of(all.getLast());
    }

    /** The step in a folder name {@code checkpoint-<step>}. */
    public static Optional<Long> stepOf(Path folder) {
        Path name = folder.getFileName();
        if (name == null) return Optional.empty();
        Matcher m = NAME.matcher(name.toString());
        return m.matches() ? Optional.of(Long.parseLong(m.group(1))) : Optional.empty();
    }

    /**
     * save_total_limit: deletes the oldest checkpoints until at most {@code limit} remain, never {@code keep} (the
     * best one, when tracked). Returns the folders deleted.
     */
    public static List<Path> rotate(Path outputDir, int limit, Path keep) throws IOException {
        List<Path> all = list(outputDir);
        List<Path> deleted = new ArrayList<>();
        int excess = all.size() - limit;
        for (Path p : all) {
            if (excess <= 0) break;
            if (keep != null && p.toAbsolutePath().normalize().equals(keep.toAbsolutePath().normalize())) continue;
            deleteTree(p);
            deleted.add(p);
            excess--;
        }
        return deleted;
    }

    /** Removes temporary folders that a killed run left behind. */
    public static void removeLeftovers(Path outputDir) throws IOException {
        if (!Files.isDirectory(outputDir)) return;
        List<Path> leftovers = new ArrayList<>();
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(outputDir, TEMP_PREFIX + "*")) {
            for (Path p : ds) leftovers.add(p);
        }
        for (Path p : leftovers) deleteTree(p);
    }

    private static void forceTree(Path root) throws IOException {
        Files.walkFileTree(root, new SimpleFileVisitor<>() {
            @Override
            public FileVisitResult visitFile(Path file, BasicFileAttributes attrs) throws IOException {
                try (FileChannel ch = FileChannel.open(file, StandardOpenOption.WRITE)) {
                    ch.force(true);
                }
                return FileVisitResult.CONTINUE;
            }

            @Override
            public FileVisitResult postVisitDirectory(Path dir, IOException e) throws IOException {
                if (e != null) throw e;
                AtomicFiles.forceFolder(dir);
                return FileVisitResult.CONTINUE;
            }
        });
    }

    static void deleteTree(Path root) throws IOException {
        if (!Files.exists(root)) return;
        Files.walkFileTree(root, new SimpleFileVisitor<>() {
            @Override
            public FileVisitResult visitFile(Path file, BasicFileAttributes attrs) throws IOException {
                Files.deleteIfExists(file);
                return FileVisitResult.CONTINUE;
            }

            @Override
            public FileVisitResult visitFileFailed(Path file, IOException e) throws IOException {
                if (e instanceof NoSuchFileException) return FileVisitResult.CONTINUE;
                throw e;
            }

            @Override
            public FileVisitResult postVisitDirectory(Path dir, IOException e) throws IOException {
                if (e != null && !(e instanceof NoSuchFileException)) throw e;
                Files.deleteIfExists(dir);
                return FileVisitResult.CONTINUE;
            }
        });
    }
}
