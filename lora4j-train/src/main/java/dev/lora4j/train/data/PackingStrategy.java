package dev.lora4j.train.data;

import java.util.Locale;

/** TRL's packing_strategy values. */
public enum PackingStrategy {
    /** Best-fit decreasing: whole sequences into bins of max_length tokens; longer sequences are truncated. */
    BFD("bfd"),
    /** Best-fit decreasing, with longer sequences split into max_length pieces instead of truncated. */
    BFD_SPLIT("bfd_split"),
    /** All tokens concatenated and cut every max_length tokens, across sequence boundaries. */
    WRAPPED("wrapped");

    private final String configName;

    PackingStrategy(String configName) {
        this.configName = configName;
    }

    public String configName() {
        return configName;
    }

    public static PackingStrategy parse(String name) {
        String n = name.trim().toLowerCase(Locale.ROOT);
        if (n.equals("bfd-requeue")) return BFD_SPLIT; // TRL's former name, still accepted there
        for (PackingStrategy s : values()) if (s.configName.equals(n)) return s;
        throw new IllegalArgumentException("unknown packing_strategy '" + name + "': use bfd, bfd_split or wrapped");
    }

    @Override
    public String toString() {
        return configName;
    }
}
