package dev.lora4j.train.bench;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonLocation;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.JsonToken;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;

/**
 * Token ids for {@code lora4j bench --tokens FILE}, so that lora4j and another implementation can train on the same
 * batches and their losses be compared one by one. The file is JSON, either
 * <ul>
 *   <li>an array of micro-batches, each an array of sequences, each an array of token ids:
 *       {@code [[[1, 2, 3], [4, 5, 6]], [[7, 8, 9], [1, 2, 3]]]} (two micro-batches of two sequences of three tokens), or</li>
 *   <li>an object whose {@code "micro_batches"} field is that array; its other fields (how the ids were made) are
 *       ignored.</li>
 * </ul>
 * Labels are the inputs, as in the synthetic batches. Optimizer step {@code k} (from 0, warm-up steps included) uses
 * micro-batches {@code k·accum} to {@code k·accum + accum - 1}, counted modulo the number in the file: a file with
 * fewer micro-batches than the run needs is used again from its start, and a file of one micro-batch reproduces the
 * reference benchmark's reuse of one batch for everything.
 */
public final class TokenBatches {

    private static final JsonFactory JSON = new JsonFactory();

    private final Path file;
    private final int[][][] microBatches;

    private TokenBatches(Path file, int[][][] microBatches) {
        this.file = file;
        this.microBatches = microBatches;
    }

    /** For tests and callers that hold the ids already; {@code source} names them in errors. */
    public static TokenBatches of(Path source, int[][][] microBatches) {
        if (microBatches.length == 0) throw new IllegalArgumentException(source + " holds no micro-batch");
        int[][][] copy = new int[microBatches.length][][];
        for (int b = 0; b < copy.length; b++) {
            copy[b] = new int[microBatches[b].length][];
            for (int r = 0; r < copy[b].length; r++) copy[b][r] = microBatches[b][r].clone();
        }
        return new TokenBatches(source, copy);
    }

    /**
     * Reads a token file. Its structure is checked here (errors name the file, the position as a JSON path such as
     * {@code [3][1][17]}, and the line and column); whether it fits a configuration is {@link #checkFits}'s job.
     */
    public static TokenBatches read(Path file) throws IOException {
        if (!Files.isRegularFile(file)) {
            throw new NoSuchFileException(file.toString(), null, "--tokens takes a JSON file of token ids");
        }
        try (JsonParser p = JSON.createParser(file.toFile())) {
            JsonToken first = p.nextToken();
            if (first == JsonToken.START_OBJECT) {
                boolean found = false;
                int[][][] batches = null;
                while (p.nextToken() == JsonToken.FIELD_NAME) {
                    String name = p.currentName();
                    p.nextToken();
                    if (name.equals("micro_batches")) {
                        batches = microBatches(p, file);
                        found = true;
                    } else {
                        p.skipChildren();
                    }
                }
                if (!found) {
                    throw new IOException(file + ": an object of token batches needs a \"micro_batches\" field (an array of"
                            + " micro-batches, each an array of sequences of token ids)");
                }
                return new TokenBatches(file, batches);
            }
            if (first != JsonToken.START_ARRAY) {
                throw new IOException(file + ": expected a JSON array of micro-batches (or an object with \"micro_batches\")"
                        + at(p.currentTokenLocation()) + ", found " + describe(first));
            }
            return new TokenBatches(file, microBatches(p, file));
        } catch (JsonProcessingException e) {
            throw new IOException(file + ": not valid JSON" + at(e.getLocation()) + ": " + e.getOriginalMessage(), e);
        }
    }

    /** Reads the array of micro-batches whose START_ARRAY is the current token. */
    private static int[][][] microBatches(JsonParser p, Path file) throws IOException {
        expectArray(p, file, "", "the micro-batches");
        List<int[][]> batches = new ArrayList<>();
        while (p.nextToken() != JsonToken.END_ARRAY) {
            String batchPath = "[" + batches.size() + "]";
            expectArray(p, file, batchPath, "a micro-batch (an array of sequences)");
            List<int[]> rows = new ArrayList<>();
            while (p.nextToken() != JsonToken.END_ARRAY) {
                String rowPath = batchPath + "[" + rows.size() + "]";
                expectArray(p, file, rowPath, "a sequence (an array of token ids)");
                rows.add(sequence(p, file, rowPath));
            }
            if (rows.isEmpty()) throw new IOException(file + ": micro-batch " + batchPath + " holds no sequence");
            batches.add(rows.toArray(int[][]::new));
        }
        if (batches.isEmpty()) throw new IOException(file + " holds no micro-batch");
        return batches.toArray(int[][][]::new);
    }

    private static int[] sequence(JsonParser p, Path file, String rowPath) throws IOException {
        int[] ids = new int[1024];
        int n = 0;
        JsonToken t;
        while ((t = p.nextToken()) != JsonToken.END_ARRAY) {
            String where = rowPath + "[" + n + "]";
            if (t != JsonToken.VALUE_NUMBER_INT) {
                throw new IOException(file + ": " + where + at(p.currentTokenLocation()) + " is " + describe(t)
                        + ", not a token id (a whole number)");
            }
            if (p.getNumberType() != JsonParser.NumberType.INT || p.getIntValue() < 0) {
                throw new IOException(file + ": " + where + at(p.currentTokenLocation()) + " = " + p.getText()
                        + " is not a token id (0 to 2^31 - 1)");
            }
            if (n == ids.length) ids = Arrays.copyOf(ids, 2 * n);
            ids[n++] = p.getIntValue();
        }
        return Arrays.copyOf(ids, n);
    }

    private static void expectArray(JsonParser p, Path file, String where, String what) throws IOException {
        if (p.currentToken() != JsonToken.START_ARRAY) {
            throw new IOException(file + ": " + (where.isEmpty() ? "" : where + " ") + "should be " + what
                    + at(p.currentTokenLocation()) + ", found " + describe(p.currentToken()));
        }
    }

    private static String at(JsonLocation l) {
        return l == null || l.getLineNr() < 1 ? "" : String.format(Locale.ROOT, " (line %d, column %d)", l.getLineNr(), l.getColumnNr());
    }

    private static String describe(JsonToken t) {
        if (t == null) return "the end of the file";
        return switch (t) {
            case START_ARRAY -> "an array";
            case START_OBJECT -> "an object";
            case VALUE_STRING -> "a string";
            case VALUE_NUMBER_INT -> "a whole number";
            case VALUE_NUMBER_FLOAT -> "a fractional number";
            case VALUE_TRUE, VALUE_FALSE -> "a boolean";
            case VALUE_NULL -> "null";
            default -> t.toString();
        };
    }

    /**
     * Checks that every micro-batch has {@code microBatch} sequences of {@code seq} ids below {@code vocab}; the first
     * that does not is named by its position.
     */
    public void checkFits(int seq, int microBatch, int vocab) {
        for (int b = 0; b < microBatches.length; b++) {
            int[][] batch = microBatches[b];
            if (batch.length != microBatch) {
                throw new IllegalArgumentException(String.format(Locale.ROOT, "%s: micro-batch [%d] holds %d sequence%s but"
                        + " --micro-batch is %d; every micro-batch must hold --micro-batch sequences", file, b, batch.length,
                        batch.length == 1 ? "" : "s", microBatch));
            }
            for (int r = 0; r < batch.length; r++) {
                if (batch[r].length != seq) {
                    throw new IllegalArgumentException(String.format(Locale.ROOT, "%s: sequence [%d][%d] has %d token ids"
                            + " but --seq is %d; every sequence must be --seq tokens long", file, b, r, batch[r].length, seq));
                }
                for (int t = 0; t < seq; t++) {
                    if (batch[r][t] >= vocab) {
                        throw new IllegalArgumentException(String.format(Locale.ROOT, "%s: [%d][%d][%d] = %d is not a token"
                                + " id of this model, whose vocabulary has %d (ids 0 to %d)", file, b, r, t, batch[r][t],
                                vocab, vocab - 1));
                    }
                }
            }
        }
    }

    /** The micro-batches of optimizer step {@code step} (from 0, warm-up steps included), {@code accum} of them. */
    public int[][][] forStep(int step, int accum) {
        int[][][] out = new int[accum][][];
        for (int i = 0; i < accum; i++) out[i] = microBatches[(int) (((long) step * accum + i) % microBatches.length)];
        return out;
    }

    /** How many micro-batches the file holds. */
    public int size() {
        return microBatches.length;
    }

    public Path file() {
        return file;
    }

    @Override
    public String toString() {
        return file + " (" + microBatches.length + " micro-batch" + (microBatches.length == 1 ? "" : "es") + ")";
    }
}
