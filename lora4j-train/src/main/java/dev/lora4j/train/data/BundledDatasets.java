package dev.lora4j.train.data;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.util.List;

/**
 * Small datasets that ship inside lora4j for demos and tests, named {@code bundled:<name>} wherever a dataset file
 * is expected. They are derived from public-domain texts by tools/make_demo_datasets.py:
 * <ul>
 *   <li>{@code sotu-presidents-train} (180) and {@code sotu-presidents-eval} (21): prompt/completion records,
 *       "Who gave the State of the Union address in 1862?" with the completion " Abraham Lincoln.";</li>
 *   <li>{@code moby-dick-passages} (400): text records, short passages of Moby-Dick.</li>
 * </ul>
 */
public final class BundledDatasets {
    public static final String PREFIX = "bundled:";
    public static final List<String> NAMES = List.of("sotu-presidents-train", "sotu-presidents-eval", "moby-dick-passages");

    private BundledDatasets() {}

    public static boolean isBundled(String location) {
        return location.startsWith(PREFIX);
    }

    /** The records of {@code bundled:<name>}. */
    public static List<DatasetRecord> read(String location) {
        String name = location.substring(PREFIX.length());
        if (!NAMES.contains(name)) {
            throw new DatasetFormatException(location, 0, "no such bundled dataset; the bundled ones are "
                    + String.join(", ", NAMES.stream().map(n -> PREFIX + n).toList()));
        }
        try (InputStream in = BundledDatasets.class.getResourceAsStream("/dev/lora4j/train/datasets/" + name + ".jsonl")) {
            if (in == null) throw new IllegalStateException("the bundled dataset " + name + " is missing from lora4j-train's resources");
            return DatasetReader.parse(location + ".jsonl", in.readAllBytes());
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
