package dev.lora4j.train.schedule;

import java.util.Arrays;
import java.util.Locale;
import java.util.stream.Collectors;

/** The learning-rate schedules, named as transformers' {@code lr_scheduler_type} names them. */
public enum SchedulerType {
    CONSTANT("constant"),
    CONSTANT_WITH_WARMUP("constant_with_warmup"),
    LINEAR("linear"),
    COSINE("cosine");

    private final String configName;

    SchedulerType(String configName) {
        this.configName = configName;
    }

    public String configName() {
        return configName;
    }

    public static SchedulerType parse(String name) {
        String n = name.trim().toLowerCase(Locale.ROOT);
        for (SchedulerType t : values()) if (t.configName.equals(n)) return t;
        throw new IllegalArgumentException("unknown lr_scheduler_type '" + name + "': use one of "
                + Arrays.stream(values()).map(SchedulerType::configName).collect(Collectors.joining(", ")));
    }

    @Override
    public String toString() {
        return configName;
    }
}
