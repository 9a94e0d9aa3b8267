package dev.lora4j.train.bench;

import java.util.Locale;

/** What a benchmark configuration trains: every weight, LoRA adapters over a 16-bit base, or over a 4-bit base. */
public enum BenchMethod {
    FULL("full"),
    LORA("lora"),
    QLORA("qlora");

    private final String label;

    BenchMethod(String label) {
        this.label = label;
    }

    /** The name on the command line and in the JSON: full, lora or qlora. */
    public String label() {
        return label;
    }

    public static BenchMethod parse(String name) {
        for (BenchMethod m : values()) if (m.label.equals(name.strip().toLowerCase(Locale.ROOT))) return m;
        throw new IllegalArgumentException("unknown method '" + name + "': use full, lora or qlora");
    }
}
