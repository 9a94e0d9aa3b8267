package dev.lora4j.train.metrics;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;

/**
 * The protobuf encoding of TensorBoard's {@code Event} message, the parts a scalar log needs:
 * <pre>
 * message Event   { double wall_time = 1; int64 step = 2; oneof what { string file_version = 3; Summary summary = 5; } }
 * message Summary { repeated Value value = 1; }
 * message Value   { string tag = 1; float simple_value = 2; }
 * </pre>
 * Encoded by hand: fields in number order, as protobuf serializers write them.
 */
final class EventProto {
    static final int WIRE_VARINT = 0, WIRE_FIXED64 = 1, WIRE_LENGTH = 2, WIRE_FIXED32 = 5;

    private EventProto() {}

    /** The first record of every event file. */
    static byte[] fileVersion(double wallTime, String version) {
        Encoder e = new Encoder();
        e.fixed64(1, Double.doubleToRawLongBits(wallTime));
        e.bytes(3, version.getBytes(StandardCharsets.UTF_8));
        return e.toByteArray();
    }

    /** An event holding one summary with one scalar value per tag, in the order given. */
    static byte[] scalars(double wallTime, long step, String[] tags, float[] values) {
        Encoder summary = new Encoder();
        for (int i = 0; i < tags.length; i++) {
            Encoder value = new Encoder();
            value.bytes(1, tags[i].getBytes(StandardCharsets.UTF_8));
            value.fixed32(2, Float.floatToRawIntBits(values[i]));
            summary.bytes(1, value.toByteArray());
        }
        Encoder event = new Encoder();
        event.fixed64(1, Double.doubleToRawLongBits(wallTime));
        event.varint(2, step);
        event.bytes(5, summary.toByteArray());
        return event.toByteArray();
    }

    /** Protobuf's wire format: a key (field number and wire type) as a varint, then the value. */
    static final class Encoder {
        private final ByteArrayOutputStream out = new ByteArrayOutputStream();

        void varint(int field, long value) {
            key(field, WIRE_VARINT);
            rawVarint(value);
        }

        void fixed64(int field, long bits) {
            key(field, WIRE_FIXED64);
            for (int i = 0; i < 8; i++) out.write((int) (bits >>> (8 * i)));
        }

        void fixed32(int field, int bits) {
            key(field, WIRE_FIXED32);
            for (int i = 0; i < 4; i++) out.write(bits >>> (8 * i));
        }

        void bytes(int field, byte[] value) {
            key(field, WIRE_LENGTH);
            rawVarint(value.length);
            out.writeBytes(value);
        }

        private void key(int field, int wireType) {
            rawVarint(((long) field << 3) | wireType);
        }

        /** Base-128, least significant group first; negative int64 values take ten bytes, as in protobuf. */
        private void rawVarint(long v) {
            while ((v & ~0x7FL) != 0) {
                out.write((int) ((v & 0x7F) | 0x80));
                v >>>= 7;
            }
            out.write((int) v);
        }

        byte[] toByteArray() {
            return out.toByteArray();
        }
    }
}
