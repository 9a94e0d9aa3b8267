package dev.lora4j.train.metrics;

import java.io.BufferedOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Map;

/**
 * Writes scalars to a TensorBoard event file, as torch's SummaryWriter does: one file
 * {@code events.out.tfevents.<seconds>.<host>.<pid>} per run folder, starting with the {@code brain.Event:2}
 * version record, then one event per scalar. Each record is flushed, so a running TensorBoard sees it at once.
 * Not thread-safe.
 */
public final class TensorBoardWriter implements AutoCloseable {
    static final String FILE_VERSION = "brain.Event:2";

    private final Path file;
    private final OutputStream stream;
    private final TfRecordWriter records;

    private TensorBoardWriter(Path file, OutputStream stream) {
        this.file = file;
        this.stream = stream;
        this.records = new TfRecordWriter(stream);
    }

    /** Creates the folder when needed and a new event file in it. */
    public static TensorBoardWriter create(Path runFolder) throws IOException {
        Files.createDirectories(runFolder);
        long now = System.currentTimeMillis();
        String name = String.format("events.out.tfevents.%010d.%s.%d", now / 1000, hostName(), ProcessHandle.current().pid());
        Path file = runFolder.resolve(name);
        OutputStream out = new BufferedOutputStream(Files.newOutputStream(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE));
        TensorBoardWriter writer = new TensorBoardWriter(file, out);
        try {
            writer.records.write(EventProto.fileVersion(now / 1000.0, FILE_VERSION));
            out.flush();
        } catch (IOException e) {
            writer.close();
            throw e;
        }
        return writer;
    }

    public Path file() {
        return file;
    }

    public void scalar(String tag, long step, double value) throws IOException {
        records.write(EventProto.scalars(System.currentTimeMillis() / 1000.0, step, new String[]{tag}, new float[]{(float) value}));
        stream.flush();
    }

    /** One event per entry, in the map's order. */
    public void scalars(long step, Map<String, ? extends Number> values) throws IOException {
        double wallTime = System.currentTimeMillis() / 1000.0;
        for (Map.Entry<String, ? extends Number> e : values.entrySet()) {
            records.write(EventProto.scalars(wallTime, step, new String[]{e.getKey()}, new float[]{e.getValue().floatValue()}));
        }
        stream.flush();
    }

    @Override
    public void close() throws IOException {
        stream.close();
    }

    private static String hostName() {
        try {
            String h = InetAddress.getLocalHost().getHostName();
            return h == null || h.isBlank() ? "localhost" : h.replace('/', '_');
        } catch (IOException | SecurityException e) {
            return "localhost";
        }
    }
}
