package dev.lora4j.train.metrics;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * An independent reader of TensorBoard event files for tests: checks both CRCs of every record and decodes the
 * Event protobuf field by field, skipping fields it does not know as any protobuf parser would.
 */
final class EventFileReader {

    record Scalar(String tag, float value) {}

    record Event(double wallTime, long step, String fileVersion, List<Scalar> scalars) {}

    static List<Event> read(Path file) throws IOException {
        ByteBuffer b = ByteBuffer.wrap(Files.readAllBytes(file)).order(ByteOrder.LITTLE_ENDIAN);
        List<Event> events = new ArrayList<>();
        while (b.hasRemaining()) {
            byte[] lengthBytes = new byte[8];
            b.get(lengthBytes);
            long length = ByteBuffer.wrap(lengthBytes).order(ByteOrder.LITTLE_ENDIAN).getLong();
            int lengthCrc = b.getInt();
            if (lengthCrc != TfRecordWriter.maskedCrc(lengthBytes, 0, 8)) throw new IOException("bad length CRC at record " + events.size());
            byte[] data = new byte[Math.toIntExact(length)];
            b.get(data);
            if (b.getInt() != TfRecordWriter.maskedCrc(data, 0, data.length)) throw new IOException("bad data CRC at record " + events.size());
            events.add(event(ByteBuffer.wrap(data).order(ByteOrder.LITTLE_ENDIAN)));
        }
        return events;
    }

    private static Event event(ByteBuffer b) throws IOException {
        double wallTime = 0;
        long step = 0;
        String version = null;
        List<Scalar> scalars = new ArrayList<>();
        while (b.hasRemaining()) {
            long key = varint(b);
            int field = (int) (key >>> 3), wire = (int) (key & 7);
            switch (field) {
                case 1 -> wallTime = b.getDouble();
                case 2 -> step = varint(b);
                case 3 -> version = new String(bytes(b), StandardCharsets.UTF_8);
                case 5 -> summary(ByteBuffer.wrap(bytes(b)).order(ByteOrder.LITTLE_ENDIAN), scalars);
                default -> skip(b, wire);
            }
        }
        return new Event(wallTime, step, version, scalars);
    }

    private static void summary(ByteBuffer b, List<Scalar> out) throws IOException {
        while (b.hasRemaining()) {
            long key = varint(b);
            if ((key >>> 3) != 1) {
                skip(b, (int) (key & 7));
                continue;
            }
            ByteBuffer v = ByteBuffer.wrap(bytes(b)).order(ByteOrder.LITTLE_ENDIAN);
            String tag = null;
            float value = Float.NaN;
            while (v.hasRemaining()) {
                long k = varint(v);
                if ((k >>> 3) == 1) tag = new String(bytes(v), StandardCharsets.UTF_8);
                else if ((k >>> 3) == 2) value = v.getFloat();
                else skip(v, (int) (k & 7));
            }
            out.add(new Scalar(tag, value));
        }
    }

    private static long varint(ByteBuffer b) {
        long result = 0;
        for (int shift = 0; ; shift += 7) {
            byte x = b.get();
            result |= (long) (x & 0x7F) << shift;
            if ((x & 0x80) == 0) return result;
        }
    }

    private static byte[] bytes(ByteBuffer b) {
        byte[] out = new byte[(int) varint(b)];
        b.get(out);
        return out;
    }

    private static void skip(ByteBuffer b, int wire) throws IOException {
        switch (wire) {
            case 0 -> varint(b);
            case 1 -> b.position(b.position() + 8);
            case 2 -> bytes(b);
            case 5 -> b.position(b.position() + 4);
            default -> throw new IOException("unknown wire type " + wire);
        }
    }
}
