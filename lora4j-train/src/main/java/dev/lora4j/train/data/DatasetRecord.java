package dev.lora4j.train.data;

import com.fasterxml.jackson.databind.JsonNode;

/**
 * One record of a dataset file: a JSON object and where it starts (file and 1-based line), so that every later
 * complaint about it can point at it.
 */
public record DatasetRecord(String file, int line, JsonNode fields) {

    /** "file:line", for messages. */
    public String where() {
        return file + ":" + line;
    }

    /** An error about this record. */
    public DatasetFormatException error(String problem) {
        return new DatasetFormatException(file, line, problem);
    }
}
