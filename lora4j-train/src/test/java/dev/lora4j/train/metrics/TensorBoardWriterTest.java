package dev.lora4j.train.metrics;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;

class TensorBoardWriterTest {

    @TempDir
    Path dir;

    @Test
    void theMaskedCrcIsTfRecordsOnTheStandardCheckValue() {
        // CRC-32C of "123456789" is 0xE3069283 (RFC 3720); masked: rotate right 15, add 0xa282ead8.
        int crc = 0xE3069283;
        int masked = ((crc >>> 15) | (crc << 17)) + 0xa282ead8;
        byte[] check = "123456789".getBytes(StandardCharsets.US_ASCII);
        assertThat(TfRecordWriter.maskedCrc(check, 0, check.length)).isEqualTo(masked);
    }

    @Test
    void aRecordIsLengthCrcDataCrc() throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        new TfRecordWriter(out).write(new byte[]{1, 2, 3});
        byte[] b = out.toByteArray();
        assertThat(b).hasSize(8 + 4 + 3 + 4);
        assertThat(b[0]).isEqualTo((byte) 3);
        assertThat(b[12]).isEqualTo((byte) 1);
    }

    @Test
    void eventsEncodeAsProtobufDoes() {
        // Event{wall_time: 1.5, step: 300, summary{value{tag: "a", simple_value: 2.0}}}, bytes from protobuf's rules:
        // 09 <1.5 as 8 LE bytes> 10 ac 02 2a 0a 0a 08 0a 01 61 15 <2.0f as 4 LE bytes>
        byte[] e = EventProto.scalars(1.5, 300, new String[]{"a"}, new float[]{2f});
        assertThat(e).containsExactly(0x09, 0, 0, 0, 0, 0, 0, (byte) 0xf8, 0x3f, 0x10, (byte) 0xac, 0x02, 0x2a, 0x0a, 0x0a, 0x08,
                0x0a, 0x01, 0x61, 0x15, 0, 0, 0, 0x40);
    }

    @Test
    void theFileStartsWithTheVersionAndHoldsOneEventPerScalar() throws IOException {
        Path run = dir.resolve("runs/test");
        Path file;
        try (TensorBoardWriter w = TensorBoardWriter.create(run)) {
            file = w.file();
            Map<String, Double> logs = new LinkedHashMap<>();
            logs.put("train/loss", 2.5);
            logs.put("train/learning_rate", 1e-4);
            w.scalars(10, logs);
            w.scalar("eval/loss", 20, 2.25);
        }
        assertThat(file.getFileName().toString()).matches("events\\.out\\.tfevents\\.\\d{10}\\..+\\.\\d+");
        List<EventFileReader.Event> events = EventFileReader.read(file);
        assertThat(events).hasSize(4);
        assertThat(events.getFirst().fileVersion()).isEqualTo("brain.Event:2");
        assertThat(events.getFirst().wallTime()).isGreaterThan(1.6e9);
        assertThat(events.get(1).step()).isEqualTo(10);
        assertThat(events.get(1).scalars()).containsExactly(new EventFileReader.Scalar("train/loss", 2.5f));
        assertThat(events.get(2).scalars()).containsExactly(new EventFileReader.Scalar("train/learning_rate", 1e-4f));
        assertThat(events.get(3).step()).isEqualTo(20);
        assertThat(events.get(3).scalars()).containsExactly(new EventFileReader.Scalar("eval/loss", 2.25f));
        assertThat(Files.list(run)).hasSize(1);
    }

    @Test
    void theMetricsLogKeepsOnlyStepsUpToTheCheckpointWhenResumed() throws IOException {
        Path f = dir.resolve("metrics.jsonl");
        try (MetricsLog log = MetricsLog.create(f)) {
            log.write(record(1, 3.0));
            log.write(record(2, Double.NaN));
            log.write(record(3, 2.0));
        }
        Files.writeString(f, Files.readString(f) + "{\"step\": 4, \"lo", java.nio.file.StandardOpenOption.WRITE);
        try (MetricsLog log = MetricsLog.resume(f, 2)) {
            log.write(record(3, 1.5));
        }
        List<String> lines = Files.readAllLines(f);
        assertThat(lines).containsExactly("{\"step\":1,\"loss\":3.0}", "{\"step\":2,\"loss\":\"NaN\"}", "{\"step\":3,\"loss\":1.5}");
    }

    /** A record whose keys keep their order, as the trainer's records do; Map.of's order changes between runs. */
    private static Map<String, Object> record(long step, double loss) {
        Map<String, Object> r = new java.util.LinkedHashMap<>();
        r.put("step", step);
        r.put("loss", loss);
        return r;
    }
}
