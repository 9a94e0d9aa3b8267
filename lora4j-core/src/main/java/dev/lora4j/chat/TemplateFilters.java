package dev.lora4j.chat;

import com.hubspot.jinjava.interpret.InterpretException;
import com.hubspot.jinjava.interpret.JinjavaInterpreter;
import com.hubspot.jinjava.lib.filter.Filter;
import com.hubspot.jinjava.util.ForLoop;
import com.hubspot.jinjava.util.ObjectIterator;

import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;

/** Filters whose Jinjava versions differ from Jinja's (as transformers configures it). */
final class TemplateFilters {
    private TemplateFilters() {}

    /** tojson as transformers defines it: json.dumps(x, ensure_ascii=False, indent, separators, sort_keys). */
    static final class ToJson implements Filter {
        @Override
        public String getName() {
            return "tojson";
        }

        @Override
        public Object filter(Object var, JinjavaInterpreter interpreter, String... args) {
            return filter(var, interpreter, (Object[]) args, Map.of());
        }

        @Override
        public Object filter(Object var, JinjavaInterpreter interpreter, Object[] args, Map<String, Object> kwargs) {
            Object indent = kwargs.containsKey("indent") ? kwargs.get("indent") : args.length > 0 ? args[0] : null;
            Object separators = kwargs.get("separators");
            String items = null, keys = null;
            if (separators instanceof List<?> pair && pair.size() == 2) {
                items = String.valueOf(pair.get(0));
                keys = String.valueOf(pair.get(1));
            }
            boolean ascii = Boolean.TRUE.equals(kwargs.get("ensure_ascii"));
            boolean sort = Boolean.TRUE.equals(kwargs.get("sort_keys"));
            Integer indentWidth = indent instanceof Number n ? n.intValue() : null;
            return PythonJson.dumps(var, indentWidth, items, keys, ascii, sort);
        }
    }

    /** trim as Jinja defines it: Python's str.strip (optionally of given characters). */
    static final class Trim implements Filter {
        @Override
        public String getName() {
            return "trim";
        }

        @Override
        public Object filter(Object var, JinjavaInterpreter interpreter, String... args) {
            String chars = args.length > 0 ? args[0] : null;
            return PythonStrings.strip(var == null ? "None" : PythonValues.str(var), chars, true, true);
        }
    }

    /** string as Jinja defines it: Python's str() of the value. */
    static final class ToStr implements Filter {
        @Override
        public String getName() {
            return "string";
        }

        @Override
        public Object filter(Object var, JinjavaInterpreter interpreter, String... args) {
            return PythonValues.str(var);
        }
    }

    /** Jinja's max and min: the largest or smallest item, optionally by attribute. */
    static final class Extreme implements Filter {
        private final boolean max;

        Extreme(boolean max) {
            this.max = max;
        }

        @Override
        public String getName() {
            return max ? "max" : "min";
        }

        @Override
        public Object filter(Object var, JinjavaInterpreter interpreter, String... args) {
            return filter(var, interpreter, (Object[]) args, Map.of());
        }

        @Override
        @SuppressWarnings({"unchecked", "rawtypes"})
        public Object filter(Object var, JinjavaInterpreter interpreter, Object[] args, Map<String, Object> kwargs) {
            Object attribute = kwargs.get("attribute");
            Object best = null, bestKey = null;
            ForLoop loop = ObjectIterator.getLoop(var);
            while (loop.hasNext()) {
                Object item = loop.next();
                Object key = attribute == null ? item : item instanceof Map<?, ?> m ? m.get(String.valueOf(attribute)) : null;
                if (key instanceof String s) key = s.toLowerCase(java.util.Locale.ROOT);
                if (best == null || compare(key, bestKey) * (max ? 1 : -1) > 0) {
                    best = item;
                    bestKey = key;
                }
            }
            return best;
        }

        @SuppressWarnings({"unchecked", "rawtypes"})
        private static int compare(Object a, Object b) {
            if (a instanceof Number x && b instanceof Number y) return Double.compare(x.doubleValue(), y.doubleValue());
            return ((Comparable) a).compareTo(b);
        }
    }

    /** Jinja's length: characters of a string (code points, as Python counts), items of anything else. */
    static final class Length implements Filter {
        private final String name;
        private final Filter fallback = new com.hubspot.jinjava.lib.filter.LengthFilter();

        Length(String name) {
            this.name = name;
        }

        @Override
        public String getName() {
            return name;
        }

        @Override
        public Object filter(Object var, JinjavaInterpreter interpreter, String... args) {
            if (var instanceof CharSequence s) return s.toString().codePointCount(0, s.length());
            return fallback.filter(var, interpreter, args);
        }
    }

    /** Jinja's items: a mapping's (key, value) pairs. */
    static final class Items implements Filter {
        @Override
        public String getName() {
            return "items";
        }

        @Override
        public Object filter(Object var, JinjavaInterpreter interpreter, String... args) {
            if (var == null) return List.of();
            if (!(var instanceof Map<?, ?> map)) throw new InterpretException("items filter needs a mapping, got " + PythonValues.repr(var));
            return new ArrayList<Object>(map.entrySet());
        }
    }
}
