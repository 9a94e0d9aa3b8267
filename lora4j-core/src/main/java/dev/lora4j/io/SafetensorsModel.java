package dev.lora4j.io;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * A model's weights as Hugging Face stores them in a folder: {@code model.safetensors}, or the shards named by
 * {@code model.safetensors.index.json}, or failing both every {@code *.safetensors} file in the folder. Tensor
 * names are unique across the files; each is read from the file that holds it.
 */
public final class SafetensorsModel implements AutoCloseable {

    public static final String SINGLE_FILE = "model.safetensors";
    public static final String INDEX_FILE = "model.safetensors.index.json";

    private static final ObjectMapper JSON = new ObjectMapper();

    private final Path folder;
    private final List<SafetensorsFile> files;
    private final Map<String, SafetensorsFile> fileByName;

    private SafetensorsModel(Path folder, List<SafetensorsFile> files, Map<String, SafetensorsFile> fileByName) {
        this.folder = folder;
        this.files = List.copyOf(files);
        this.fileByName = Collections.unmodifiableMap(fileByName);
    }

    public static SafetensorsModel open(Path folder) throws IOException {
        if (!Files.isDirectory(folder)) {
            throw new NoSuchFileException(folder.toString(), null, "not a folder: a model's weights are read from a folder");
        }
        Path single = folder.resolve(SINGLE_FILE);
        Path index = folder.resolve(INDEX_FILE);
        if (Files.isRegularFile(single)) return fromFiles(folder, List.of(single), null);
        if (Files.isRegularFile(index)) {
            Map<String, String> weightMap = readWeightMap(index);
            Set<String> shardNames = new LinkedHashSet<>(weightMap.values());
            List<Path> shards = new ArrayList<>();
            Path base = folder.toAbsolutePath().normalize();
            for (String shard : shardNames) {
                Path p = base.resolve(shard).normalize();
                if (!base.equals(p.getParent())) {
                    throw new SafetensorsFormatException(index + ": weight_map names shard '" + shard
                            + "' outside the model folder; shards must be plain file names in " + folder);
                }
                if (!Files.isRegularFile(p)) {
                    throw new SafetensorsFormatException(index + " lists shard '" + shard + "' but " + p + " does not"
                            + " exist: the download is incomplete. Download the missing shard or the whole model again.");
                }
                shards.add(folder.resolve(shard));
            }
            return fromFiles(folder, shards, Map.entry(index, weightMap));
        }
        List<Path> all = new ArrayList<>();
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(folder, "*.safetensors")) {
            for (Path p : ds) if (Files.isRegularFile(p)) all.add(p);
        }
        if (all.isEmpty()) {
            throw new NoSuchFileException(folder.toString(), null, "no " + SINGLE_FILE + ", no " + INDEX_FILE
                    + " and no *.safetensors file in this folder");
        }
        all.sort(null);
        return fromFiles(folder, all, null);
    }

    private static Map<String, String> readWeightMap(Path index) throws IOException {
        JsonNode root;
        try {
            root = JSON.readTree(index.toFile());
        } catch (JsonProcessingException e) {
            throw new SafetensorsFormatException(index + " is not valid JSON: " + e.getOriginalMessage()
                    + ". Download or export the model again.", e);
        }
        JsonNode weightMap = root == null ? null : root.get("weight_map");
        if (weightMap == null || !weightMap.isObject()) {
            throw new SafetensorsFormatException(index + ": missing object \"weight_map\" {\"tensor name\": \"shard file\"}");
        }
        Map<String, String> map = new LinkedHashMap<>();
        for (Map.Entry<String, JsonNode> e : weightMap.properties()) {
            if (!e.getValue().isTextual()) {
                throw new SafetensorsFormatException(index + ": weight_map entry '" + e.getKey()
                        + "' must name a shard file (a string)");
            }
            map.put(e.getKey(), e.getValue().textValue());
        }
        return map;
    }

    private static SafetensorsModel fromFiles(Path folder, List<Path> paths, Map.Entry<Path, Map<String, String>> index)
            throws IOException {
        List<SafetensorsFile> opened = new ArrayList<>();
        try {
            Map<String, SafetensorsFile> byName = new LinkedHashMap<>();
            for (Path p : paths) {
                SafetensorsFile f = SafetensorsFile.open(p);
                opened.add(f);
                for (String name : f.names()) {
                    SafetensorsFile other = byName.putIfAbsent(name, f);
                    if (other != null) {
                        throw new SafetensorsFormatException("tensor '" + name + "' is in both " + other.path() + " and "
                                + p + "; a model's tensors must be unique across its files. Remove the stray file.");
                    }
                }
            }
            if (index != null) {
                for (Map.Entry<String, String> e : index.getValue().entrySet()) {
                    SafetensorsFile holder = byName.get(e.getKey());
                    if (holder == null || !holder.path().getFileName().toString().equals(e.getValue())) {
                        throw new SafetensorsFormatException(index.getKey() + " places tensor '" + e.getKey() + "' in "
                                + e.getValue() + ", but that file does not contain it"
                                + (holder == null ? "" : " (it is in " + holder.path().getFileName() + ")")
                                + ": the index and the shards do not belong together. Download the model again.");
                    }
                }
            }
            return new SafetensorsModel(folder, opened, byName);
        } catch (Throwable t) {
            for (SafetensorsFile f : opened) f.close();
            throw t;
        }
    }

    public Path folder() {
        return folder;
    }

    /** The files the weights come from, in the order they were opened. */
    public List<Path> files() {
        return files.stream().map(SafetensorsFile::path).toList();
    }

    /** Every file's {@code __metadata__}, merged (first file wins on conflicts). */
    public Map<String, String> metadata() {
        Map<String, String> m = new LinkedHashMap<>();
        for (SafetensorsFile f : files) f.metadata().forEach(m::putIfAbsent);
        return Collections.unmodifiableMap(m);
    }

    /** Tensor names: file by file, each in header order. */
    public List<String> names() {
        return List.copyOf(fileByName.keySet());
    }

    public boolean contains(String name) {
        return fileByName.containsKey(name);
    }

    /** @throws IllegalArgumentException when no file holds a tensor of that name */
    public TensorInfo info(String name) {
        return holder(name).info(name);
    }

    /** A read-only slice of the mapped file; valid until {@link #close()}. */
    public MemorySegment data(String name) {
        return holder(name).data(name);
    }

    /**
     * Gives the mapped pages of a tensor's bytes back to the operating system after they have been copied out
     * ({@link MappedPages}); the data stays readable. Returns the bytes given back.
     */
    public long release(String name) {
        return MappedPages.release(data(name));
    }

    public Path fileOf(String name) {
        return holder(name).path();
    }

    private SafetensorsFile holder(String name) {
        SafetensorsFile f = fileByName.get(name);
        if (f == null) {
            throw new IllegalArgumentException("no tensor '" + name + "' in the weights of " + folder + " ("
                    + fileByName.size() + " tensors in " + files.size() + " file(s))");
        }
        return f;
    }

    @Override
    public void close() {
        for (SafetensorsFile f : files) f.close();
    }

    @Override
    public String toString() {
        return "SafetensorsModel[" + folder + ", " + fileByName.size() + " tensors in " + files.size() + " file(s)]";
    }
}
