package dev.lora4j.chat;

import java.util.Iterator;
import java.util.Map;

/** How Python's str() and repr() spell values, for output and the string filter. */
final class PythonValues {
    private PythonValues() {}

    static String str(Object v) {
        if (v == null) return "None";
        if (v instanceof Boolean b) return b ? "True" : "False";
        if (v instanceof Double || v instanceof Float) return floatRepr(((Number) v).doubleValue());
        if (v instanceof CharSequence) return v.toString();
        if (v instanceof Map<?, ?> || v instanceof Iterable<?> || v instanceof Map.Entry<?, ?>) return repr(v);
        return v.toString();
    }

    static String repr(Object v) {
        if (v instanceof CharSequence s) return stringRepr(s.toString());
        if (v instanceof Map<?, ?> m) {
            StringBuilder sb = new StringBuilder("{");
            boolean first = true;
            for (Map.Entry<?, ?> e : m.entrySet()) {
                if (!first) sb.append(", ");
                sb.append(repr(e.getKey())).append(": ").append(repr(e.getValue()));
                first = false;
            }
            return sb.append('}').toString();
        }
        if (v instanceof Map.Entry<?, ?> e) return "(" + repr(e.getKey()) + ", " + repr(e.getValue()) + ")";
        if (v instanceof Iterable<?> it) {
            StringBuilder sb = new StringBuilder("[");
            for (Iterator<?> i = it.iterator(); i.hasNext(); ) {
                sb.append(repr(i.next()));
                if (i.hasNext()) sb.append(", ");
            }
            return sb.append(']').toString();
        }
        return str(v);
    }

    /** Python's repr of a str: single quotes unless the text has a single quote and no double quote. */
    static String stringRepr(String s) {
        char q = s.indexOf('\'') >= 0 && s.indexOf('"') < 0 ? '"' : '\'';
        StringBuilder sb = new StringBuilder().append(q);
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == q || c == '\\') sb.append('\\').append(c);
            else if (c == '\n') sb.append("\\n");
            else if (c == '\r') sb.append("\\r");
            else if (c == '\t') sb.append("\\t");
            else if (c < 0x20 || c == 0x7F) sb.append(String.format("\\x%02x", (int) c));
            else sb.append(c);
        }
        return sb.append(q).toString();
    }

    /** Python's repr of a float: shortest round-trip digits, "1.0" for integral values, exponents as 1e+16. */
    static String floatRepr(double d) {
        if (Double.isNaN(d)) return "NaN";
        if (Double.isInfinite(d)) return d > 0 ? "Infinity" : "-Infinity";
        if (d == 0) return (1 / d < 0) ? "-0.0" : "0.0";
        // The shortest decimal that reads back as d, and of those the closest to d: Python's repr.
        java.math.BigDecimal exact = new java.math.BigDecimal(d);
        java.math.BigDecimal shortest = exact;
        for (int digits = 1; digits <= 17; digits++) {
            java.math.BigDecimal candidate = exact.round(new java.math.MathContext(digits, java.math.RoundingMode.HALF_EVEN));
            if (candidate.doubleValue() == d) {
                shortest = candidate;
                break;
            }
        }
        shortest = shortest.stripTrailingZeros();
        int exponent = shortest.precision() - shortest.scale() - 1;
        if (exponent >= -4 && exponent < 16) {
            String plain = shortest.toPlainString();
            return plain.contains(".") ? plain : plain + ".0";
        }
        String digits = shortest.unscaledValue().abs().toString();
        String mantissa = digits.length() == 1 ? digits : digits.charAt(0) + "." + digits.substring(1);
        return (d < 0 ? "-" : "") + mantissa + "e" + (exponent < 0 ? "-" : "+") + (Math.abs(exponent) < 10 ? "0" : "") + Math.abs(exponent);
    }
}
