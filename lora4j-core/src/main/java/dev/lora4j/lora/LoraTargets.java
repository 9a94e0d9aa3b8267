package dev.lora4j.lora;

import dev.lora4j.model.LlamaShape;

import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Resolves a {@link LoraConfig} against a model's module tree exactly as PEFT does ({@code check_target_module_exists},
 * {@code _maybe_include_all_linear_layers}, {@code _set_trainable}): which Linear modules get adapters, which modules are
 * trained in full (modules_to_save), and what PEFT records as target_modules in adapter_config.json.
 */
public final class LoraTargets {

    /** PEFT condenses a target list this long or longer to the shortest distinguishing suffixes. */
    static final int MIN_TARGET_MODULES_FOR_OPTIMIZATION = 20;
    /** PEFT's default layer-index pattern: the first numbered path segment. */
    private static final Pattern LAYER_INDEX = Pattern.compile(".*?\\.[^.]*\\.(\\d+)\\.");

    private LoraTargets() {}

    /**
     * The paths of the modules that get LoRA adapters, in module order ("model.layers.0.self_attn.q_proj", ...).
     *
     * @throws IllegalArgumentException when nothing matches, or a match is not a projection lora4j can adapt
     */
    public static List<String> resolve(LoraConfig config, LlamaShape shape) {
        List<String> targets = new ArrayList<>();
        List<String> unsupported = new ArrayList<>();
        boolean anyExcluded = false;
        for (LlamaModules.Module m : LlamaModules.of(shape)) {
            if (excludedAsModuleToSave(config, m.path())) {
                anyExcluded |= matchesTarget(config, m);
                continue;
            }
            if (!matchesTarget(config, m)) continue;
            if (m.kind() == LlamaModules.Kind.LINEAR && !m.isOutputLayer()) {
                targets.add(m.path());
            } else {
                unsupported.add(m.path());
            }
        }
        if (!unsupported.isEmpty()) {
            throw new IllegalArgumentException("target_modules " + describe(config.targetModules()) + " matches "
                    + String.join(", ", unsupported.subList(0, Math.min(4, unsupported.size())))
                    + (unsupported.size() > 4 ? ", ..." : "") + ": lora4j puts LoRA adapters on the seven projections"
                    + " of each decoder layer (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj) only."
                    + " To train embed_tokens, lm_head or norms in full, list them in modules_to_save.");
        }
        if (targets.isEmpty()) {
            String why = anyExcluded ? " (the matching modules are all in modules_to_save)" : "";
            throw new IllegalArgumentException("target_modules " + describe(config.targetModules())
                    + " matches no module of this model" + why + (config.layersToTransform() != null
                    ? " with layers_to_transform " + config.layersToTransform() : "") + ". Module names look like "
                    + "model.layers.0.self_attn.q_proj; usual targets are q_proj, k_proj, v_proj, o_proj, gate_proj,"
                    + " up_proj, down_proj, or \"all-linear\".");
        }
        return targets;
    }

    /** PEFT's check_target_module_exists for one module, after the modules_to_save exclusion. */
    private static boolean matchesTarget(LoraConfig config, LlamaModules.Module m) {
        String path = m.path();
        return switch (config.targetModules()) {
            case TargetModules.AllLinear a -> m.kind() == LlamaModules.Kind.LINEAR && !m.isOutputLayer();
            case TargetModules.Regex re -> re.matches(path);
            case TargetModules.Names names -> {
                if (names.exactly(path)) yield true;
                if (!names.matches(path)) yield false;
                List<Integer> layers = config.layersToTransform();
                if (layers == null) yield true;
                Matcher idx = LAYER_INDEX.matcher(path);
                yield idx.lookingAt() && layers.contains(Integer.parseInt(idx.group(1)));
            }
        };
    }

    /** PEFT never puts an adapter on a module that modules_to_save names, or inside one. */
    private static boolean excludedAsModuleToSave(LoraConfig config, String path) {
        for (String m : config.modulesToSave()) {
            if (Pattern.compile("(^|.*\\.)" + m + "($|\\..*)").matcher(path).lookingAt()) return true;
        }
        return false;
    }

    /**
     * The modules trained in full and saved with the adapter: every module whose path ends with a modules_to_save
     * entry (a plain string suffix, as PEFT's _set_trainable compares), in module order.
     */
    public static List<LlamaModules.Module> modulesToSave(LoraConfig config, LlamaShape shape) {
        List<LlamaModules.Module> found = new ArrayList<>();
        Set<String> used = new LinkedHashSet<>();
        for (LlamaModules.Module m : LlamaModules.of(shape)) {
            for (String name : config.modulesToSave()) {
                if (m.path().endsWith(name)) {
                    found.add(m);
                    used.add(name);
                    break;
                }
            }
        }
        for (String name : config.modulesToSave()) {
            if (!used.contains(name)) {
                throw new IllegalArgumentException("modules_to_save names '" + name + "', which is no module of this"
                        + " model; use names such as lm_head, embed_tokens, norm or input_layernorm");
            }
        }
        for (LlamaModules.Module a : found) {
            for (LlamaModules.Module b : found) {
                if (a != b && b.path().startsWith(a.path() + ".")) {
                    throw new IllegalArgumentException("modules_to_save matches both " + a.path() + " and " + b.path()
                            + ", which lies inside it; name only one of them");
                }
            }
        }
        return found;
    }

    /**
     * What PEFT writes as target_modules in adapter_config.json: the configured names, or for "all-linear" the
     * paths of every Linear but lm_head; a list of 20 or more is condensed to the shortest suffixes that still
     * select exactly those modules ({@code _find_minimal_target_modules}). Null for a regular expression, which is
     * written as it is. Sorted (PEFT writes a Python set, in no particular order).
     */
    public static List<String> savedTargetModules(LoraConfig config, LlamaShape shape) {
        List<LlamaModules.Module> modules = LlamaModules.of(shape);
        List<String> targets = switch (config.targetModules()) {
            case TargetModules.Regex re -> null;
            case TargetModules.Names names -> names.names();
            case TargetModules.AllLinear a -> modules.stream()
                    .filter(m -> m.kind() == LlamaModules.Kind.LINEAR && !m.isOutputLayer())
                    .map(LlamaModules.Module::path).toList();
        };
        if (targets == null) return null;
        if (targets.size() >= MIN_TARGET_MODULES_FOR_OPTIMIZATION) {
            List<String> keys = new ArrayList<>();
            keys.add(""); // named_modules() lists the root as ""
            for (LlamaModules.Module m : modules) keys.add(m.path());
            List<String> others = new ArrayList<>();
            for (String k : keys) {
                if (targets.contains(k)) continue;
                if (targets.stream().anyMatch(t -> k.endsWith("." + t))) continue;
                others.add(k);
            }
            Set<String> minimal = minimalTargetModules(targets, others);
            if (minimal.size() < targets.size()) targets = List.copyOf(minimal);
        }
        return List.copyOf(new TreeSet<>(targets));
    }

    /** PEFT's _find_minimal_target_modules. */
    static Set<String> minimalTargetModules(List<String> targets, List<String> otherModuleNames) {
        Set<String> otherSuffixes = new java.util.HashSet<>();
        for (String o : otherModuleNames) otherSuffixes.addAll(suffixes(o));
        List<List<String>> bySuffixes = new ArrayList<>();
        for (String t : new LinkedHashSet<>(targets)) bySuffixes.add(suffixes(t));
        bySuffixes.sort(LoraTargets::compareLists);
        Set<String> required = new LinkedHashSet<>();
        for (List<String> sfx : bySuffixes) {
            String item = sfx.getLast();
            for (String suffix : sfx) {
                if (required.contains(suffix) || otherSuffixes.contains(suffix)) continue;
                if (required.stream().noneMatch(req -> item.endsWith("." + req))) {
                    required.add(suffix);
                    break;
                }
            }
        }
        return required.isEmpty() ? new LinkedHashSet<>(targets) : required;
    }

    /** "a.b.c" -> ["c", "b.c", "a.b.c"], shortest first. */
    private static List<String> suffixes(String s) {
        String[] parts = s.split("\\.", -1);
        List<String> out = new ArrayList<>();
        for (int i = parts.length - 1; i >= 0; i--) out.add(String.join(".", List.of(parts).subList(i, parts.length)));
        return out;
    }

    private static int compareLists(List<String> a, List<String> b) {
        for (int i = 0; i < Math.min(a.size(), b.size()); i++) {
            int c = a.get(i).compareTo(b.get(i));
            if (c != 0) return c;
        }
        return Integer.compare(a.size(), b.size());
    }

    private static String describe(TargetModules t) {
        return switch (t) {
            case TargetModules.Names n -> n.names().toString();
            case TargetModules.Regex re -> "'" + re.pattern() + "'";
            case TargetModules.AllLinear a -> "\"all-linear\"";
        };
    }
}
