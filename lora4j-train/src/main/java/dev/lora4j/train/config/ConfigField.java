package dev.lora4j.train.config;

import java.util.List;

/**
 * One field of a training configuration file: its TRL/PEFT name, other names it is known by (max_seq_length for
 * max_length), the kind of value it takes, and one line of help.
 */
public record ConfigField(String name, Kind kind, String help, List<String> aliases) {

    /** The kinds of values; "nullable" kinds also take null (or "none" on the command line) for "not set". */
    public enum Kind {
        STRING, NULLABLE_STRING, INT, NULLABLE_INT, LONG, NUMBER, NULLABLE_NUMBER, BOOLEAN, NULLABLE_BOOLEAN,
        STRING_LIST, STRING_OR_LIST, INT_LIST, RANK_MAP, ALPHA_MAP, STRING_OR_BOOLEAN;

        /** Whether a bare command-line flag (--packing) means true. */
        public boolean isBoolean() {
            return this == BOOLEAN || this == NULLABLE_BOOLEAN;
        }
    }

    public ConfigField(String name, Kind kind, String help, String... aliases) {
        this(name, kind, help, List.of(aliases));
    }

    /** The command-line option: --learning-rate for learning_rate. */
    public String option() {
        return "--" + name.replace('_', '-');
    }
}
