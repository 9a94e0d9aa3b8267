package dev.lora4j.io;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import java.util.function.Function;
import java.util.function.Predicate;

/**
 * The command line every comparison against a Python reference shares (logits against transformers, adapters and
 * gradients against PEFT): {@code EXPECTED_JSON [DEVICES] [RESULTS_JSON]}, a table on stdout, the rows as JSON, and
 * exit status 0 only when every row passes (1 otherwise, 2 for a usage error).
 */
public final class ComparisonMain {

    /** Runs every comparison that the reference's expected.json lists on each device. */
    @FunctionalInterface
    public interface Comparison<R> {
        List<R> run(Path expectedJson, List<String> devices) throws IOException;
    }

    private ComparisonMain() {}

    /**
     * @param name           the comparison's name, for the usage line
     * @param defaultResults the results file's name beside expected.json when none is given
     */
    public static <R> void main(String[] args, String name, String defaultResults, Comparison<R> comparison,
                                Consumer<List<R>> printTable, Function<R, Map<String, Object>> json,
                                Predicate<R> pass) throws IOException {
        if (args.length < 1 || args[0].equals("-h") || args[0].equals("--help")) {
            System.err.println("usage: " + name + " EXPECTED_JSON [DEVICES, e.g. cpu,cuda] [RESULTS_JSON]");
            System.exit(2);
        }
        Path expectedJson = Path.of(args[0]);
        List<String> devices = args.length > 1 ? Arrays.asList(args[1].split(",")) : List.of("cpu");
        Path resultsJson = args.length > 2 ? Path.of(args[2]) : expectedJson.resolveSibling(defaultResults);
        List<R> rows = comparison.run(expectedJson, devices);
        printTable.accept(rows);
        writeResults(rows.stream().map(json).toList(), resultsJson);
        System.out.println("results written to " + resultsJson);
        System.exit(rows.stream().allMatch(pass) ? 0 : 1);
    }

    /** The rows as an indented JSON array, creating the folder if need be. */
    public static void writeResults(List<Map<String, Object>> rows, Path file) throws IOException {
        if (file.toAbsolutePath().getParent() != null) Files.createDirectories(file.toAbsolutePath().getParent());
        new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT).writeValue(file.toFile(), rows);
    }
}
