package dev.lora4j.chat;

import java.lang.reflect.Array;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * Python's json.dumps, which transformers installs as the templates' tojson filter: ", " and ": " separators
 * ("," and ": " once indent is set), ensure_ascii false by default, optional indent and sort_keys. Jinjava's own
 * tojson (Jackson's compact output) differs in spacing and escaping.
 */
final class PythonJson {
    private PythonJson() {}

    static String dumps(Object value, Integer indent, String itemSeparator, String keySeparator, boolean ensureAscii, boolean sortKeys) {
        String items = itemSeparator != null ? itemSeparator : indent != null ? "," : ", ";
        String keys = keySeparator != null ? keySeparator : ": ";
        StringBuilder sb = new StringBuilder();
        write(sb, value, indent, items, keys, ensureAscii, sortKeys, 0);
        return sb.toString();
    }

    private static void write(StringBuilder sb, Object v, Integer indent, String items, String keys, boolean ascii, boolean sort, int depth) {
        if (v == null) {
            sb.append("null");
        } else if (v instanceof Boolean b) {
            sb.append(b ? "true" : "false");
        } else if (v instanceof CharSequence || v instanceof Character) {
            string(sb, v.toString(), ascii);
        } else if (v instanceof Double || v instanceof Float || v instanceof BigDecimal) {
            sb.append(PythonValues.floatRepr(((Number) v).doubleValue()));
        } else if (v instanceof Number) {
            sb.append(v instanceof BigInteger ? v.toString() : Long.toString(((Number) v).longValue()));
        } else if (v instanceof Map<?, ?> m) {
            List<Map.Entry<?, ?>> entries = new ArrayList<>(m.entrySet());
            if (sort) entries.sort((x, y) -> String.valueOf(x.getKey()).compareTo(String.valueOf(y.getKey())));
            if (entries.isEmpty()) {
                sb.append("{}");
                return;
            }
            sb.append('{');
            for (int i = 0; i < entries.size(); i++) {
                if (i > 0) sb.append(items);
                newline(sb, indent, depth + 1);
                Object key = entries.get(i).getKey();
                string(sb, key instanceof CharSequence ? key.toString() : PythonValues.str(key), ascii);
                sb.append(keys);
                write(sb, entries.get(i).getValue(), indent, items, keys, ascii, sort, depth + 1);
            }
            newline(sb, indent, depth);
            sb.append('}');
        } else if (v instanceof Map.Entry<?, ?> e) {
            write(sb, List.of(nullSafe(e.getKey()), nullSafe(e.getValue())), indent, items, keys, ascii, sort, depth);
        } else if (v instanceof Iterable<?> || v.getClass().isArray()) {
            List<Object> list = new ArrayList<>();
            if (v instanceof Iterable<?> it) it.forEach(list::add);
            else for (int i = 0; i < Array.getLength(v); i++) list.add(Array.get(v, i));
            if (list.isEmpty()) {
                sb.append("[]");
                return;
            }
            sb.append('[');
            for (int i = 0; i < list.size(); i++) {
                if (i > 0) sb.append(items);
                newline(sb, indent, depth + 1);
                write(sb, list.get(i), indent, items, keys, ascii, sort, depth + 1);
            }
            newline(sb, indent, depth);
            sb.append(']');
        } else {
            string(sb, v.toString(), ascii);
        }
    }

    private static Object nullSafe(Object o) {
        return o == null ? "" : o;
    }

    private static void newline(StringBuilder sb, Integer indent, int depth) {
        if (indent == null) return;
        sb.append('\n');
        sb.append(" ".repeat(Math.max(0, indent) * depth));
    }

    private static void string(StringBuilder sb, String s, boolean ascii) {
        sb.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"' -> sb.append("\\\"");
                case '\\' -> sb.append("\\\\");
                case '\n' -> sb.append("\\n");
                case '\r' -> sb.append("\\r");
                case '\t' -> sb.append("\\t");
                case '\b' -> sb.append("\\b");
                case '\f' -> sb.append("\\f");
                default -> {
                    if (c < 0x20 || (ascii && c > 0x7E)) sb.append(String.format("\\u%04x", (int) c));
                    else sb.append(c);
                }
            }
        }
        sb.append('"');
    }
}
