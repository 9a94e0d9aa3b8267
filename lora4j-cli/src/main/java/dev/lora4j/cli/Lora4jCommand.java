package dev.lora4j.cli;

import picocli.CommandLine;
import picocli.CommandLine.Command;

import java.io.PrintWriter;

/** The top-level {@code lora4j} command: subcommands do the work; errors become one readable line. */
@Command(name = "lora4j",
        mixinStandardHelpOptions = true,
        versionProvider = VersionProvider.class,
        description = "Run and fine-tune Llama-family language models on the JVM, on the CPU or an NVIDIA GPU.",
        subcommands = {
                DemoCommand.class,
                GenerateCommand.class,
                TokenizeCommand.class,
                ChatTemplateCommand.class,
                InspectCommand.class,
                PlanCommand.class,
                InitModelCommand.class,
                DevicesCommand.class,
                TrainCommand.class,
                QuantizeCommand.class,
                BenchCommand.class,
                CommandLine.HelpCommand.class
        })
public final class Lora4jCommand implements Runnable {

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        spec.commandLine().usage(spec.commandLine().getOut());
    }

    public static void main(String[] args) {
        System.exit(newCommandLine().execute(args));
    }

    /** The command line with lora4j's error handling: user errors print one line, not a stack trace. */
    public static CommandLine newCommandLine() {
        CommandLine cl = new CommandLine(new Lora4jCommand());
        cl.setExecutionExceptionHandler((ex, commandLine, parseResult) -> {
            PrintWriter err = commandLine.getErr();
            err.println("lora4j " + commandLine.getCommandName() + ": " + UserErrors.describe(ex));
            if (System.getenv("LORA4J_DEBUG") != null) ex.printStackTrace(err);
            err.flush();
            return 1;
        });
        return cl;
    }
}
