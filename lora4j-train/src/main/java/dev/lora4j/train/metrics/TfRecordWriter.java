package dev.lora4j.train.metrics;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.zip.CRC32C;

/**
 * Writes TFRecord framing, the container of TensorBoard event files: for each record, its length as a
 * little-endian u64, the masked CRC-32C of those 8 bytes, the data, and the masked CRC-32C of the data.
 */
final class TfRecordWriter {
    private final OutputStream out;

    TfRecordWriter(OutputStream out) {
        this.out = out;
    }

    void write(byte[] data) throws IOException {
        ByteBuffer header = ByteBuffer.allocate(12).order(ByteOrder.LITTLE_ENDIAN);
        header.putLong(data.length);
        header.putInt(maskedCrc(header.array(), 0, 8));
        ByteBuffer footer = ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN);
        footer.putInt(maskedCrc(data, 0, data.length));
        out.write(header.array());
        out.write(data);
        out.write(footer.array());
    }

    /**
     * TFRecord's CRC masking (from LevelDB): rotate right by 15 bits and add a constant, so that a CRC stored
     * inside CRC-checked data does not look like a valid CRC of it.
     */
    static int maskedCrc(byte[] bytes, int offset, int length) {
        CRC32C crc = new CRC32C();
        crc.update(bytes, offset, length);
        int c = (int) crc.getValue();
        return ((c >>> 15) | (c << 17)) + 0xa282ead8;
    }
}
