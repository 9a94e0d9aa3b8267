package dev.lora4j.train.data;

import java.nio.file.Path;

/**
 * A dataset file that cannot be used as it is: the message names the file, the line (1-based) when one is to
 * blame, and what is wrong, e.g. {@code train.jsonl:12: field "completion" must be a string, found a number}.
 */
public final class DatasetFormatException extends RuntimeException {
    private final String file;
    private final int line;

    public DatasetFormatException(String file, int line, String problem) {
        this(file, line, problem, null);
    }

    public DatasetFormatException(String file, int line, String problem, Throwable cause) {
        super(file + (line > 0 ? ":" + line : "") + ": " + problem, cause);
        this.file = file;
        this.line = line;
    }

    public DatasetFormatException(Path file, int line, String problem) {
        this(file.toString(), line, problem, null);
    }

    /** The file, as the user named it. */
    public String file() {
        return file;
    }

    /** The 1-based line, or 0 when the problem is not on one line. */
    public int line() {
        return line;
    }
}
