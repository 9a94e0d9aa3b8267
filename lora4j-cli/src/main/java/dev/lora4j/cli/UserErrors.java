package dev.lora4j.cli;

import java.io.FileNotFoundException;
import java.io.UncheckedIOException;
import java.nio.file.AccessDeniedException;
import java.nio.file.NoSuchFileException;

/** Turns the exceptions a user can cause into one line that says what went wrong and where. */
final class UserErrors {
    private UserErrors() {}

    static String describe(Throwable ex) {
        Throwable t = ex;
        if (t instanceof UncheckedIOException u && u.getCause() != null) t = u.getCause();
        if (t instanceof NoSuchFileException n) return "no such file or folder: " + n.getFile();
        if (t instanceof AccessDeniedException a) return "permission denied: " + a.getFile();
        if (t instanceof FileNotFoundException f) return f.getMessage();
        String message = t.getMessage();
        if (message == null || message.isBlank()) {
            return t.getClass().getSimpleName() + " (run with LORA4J_DEBUG=1 for the stack trace)";
        }
        return message;
    }
}
