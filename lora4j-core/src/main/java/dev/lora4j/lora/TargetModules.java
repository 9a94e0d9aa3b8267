package dev.lora4j.lora;

import java.util.List;
import java.util.Locale;
import java.util.Objects;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;

/**
 * Which Linear modules get LoRA adapters, in PEFT's three forms: a list of names (a module matches when its path
 * equals a name or ends with "." + name), a regular expression (full match on the module path), or
 * {@code "all-linear"} (every Linear of the decoder, not the output layer lm_head).
 */
public sealed interface TargetModules permits TargetModules.Names, TargetModules.Regex, TargetModules.AllLinear {

    /** PEFT's shorthand for every linear layer but the output layer. */
    String ALL_LINEAR = "all-linear";

    /** Does this module path (e.g. {@code model.layers.0.self_attn.q_proj}) match, before layer filtering? */
    boolean matches(String modulePath);

    /** Names matched as suffixes of the module path, as PEFT matches a list. */
    record Names(List<String> names) implements TargetModules {
        public Names {
            names = List.copyOf(Objects.requireNonNull(names, "names"));
            for (String n : names) {
                if (n == null || n.isEmpty()) throw new IllegalArgumentException("target_modules: names must not be empty");
            }
        }

        @Override
        public boolean matches(String modulePath) {
            return exactly(modulePath) || names.stream().anyMatch(n -> modulePath.endsWith("." + n));
        }

        /** A name that is the whole path: PEFT then takes the module without applying layers_to_transform. */
        public boolean exactly(String modulePath) {
            return names.contains(modulePath);
        }
    }

    /** A regular expression that must match the whole module path (Python's re.fullmatch). */
    record Regex(String pattern) implements TargetModules {
        public Regex {
            Objects.requireNonNull(pattern, "pattern");
            try {
                Pattern.compile(pattern);
            } catch (PatternSyntaxException e) {
                throw new IllegalArgumentException("target_modules: '" + pattern + "' is not a valid regular expression: "
                        + e.getDescription(), e);
            }
        }

        @Override
        public boolean matches(String modulePath) {
            return Pattern.compile(pattern).matcher(modulePath).matches();
        }
    }

    /** Every Linear module except the output layer. */
    record AllLinear() implements TargetModules {
        @Override
        public boolean matches(String modulePath) {
            return true; // resolution keeps only Linear modules and drops lm_head
        }
    }

    static TargetModules names(String... names) {
        return new Names(List.of(names));
    }

    static TargetModules names(List<String> names) {
        return new Names(names);
    }

    static TargetModules regex(String pattern) {
        return new Regex(pattern);
    }

    static TargetModules allLinear() {
        return new AllLinear();
    }

    /** A string as PEFT reads {@code target_modules="..."}: "all-linear" (any case) or a regular expression. */
    static TargetModules fromString(String value) {
        return value.toLowerCase(Locale.ROOT).equals(ALL_LINEAR) ? new AllLinear() : new Regex(value);
    }
}
