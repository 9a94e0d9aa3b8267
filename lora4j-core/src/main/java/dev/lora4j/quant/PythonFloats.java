package dev.lora4j.quant;

import java.math.BigDecimal;

/**
 * Formats doubles as Python's {@code repr} (and so {@code json.dumps}) does, so that JSON lora4j writes for the Python
 * stack is byte for byte what Python would write. Both languages print the shortest digit string that reads back as
 * the same double (Java since JDK 19); only the layout differs: Python switches to exponent notation below 1e-4 and
 * from 1e16 on, writes {@code 1e-05} rather than {@code 1.0E-5}, and spells the non-finite values as JSON extensions.
 */
final class PythonFloats {
    private PythonFloats() {}

    static String repr(double d) {
        if (Double.isNaN(d)) return "NaN";
        if (Double.isInfinite(d)) return d > 0 ? "Infinity" : "-Infinity";
        if (d == 0) return (Double.doubleToRawLongBits(d) < 0 ? "-" : "") + "0.0";
        BigDecimal shortest = new BigDecimal(Double.toString(Math.abs(d))).stripTrailingZeros();
        String digits = shortest.unscaledValue().toString();
        int exponent = digits.length() - 1 - shortest.scale();
        String sign = d < 0 ? "-" : "";
        if (exponent < -4 || exponent >= 16) {
            String mantissa = digits.length() == 1 ? digits : digits.charAt(0) + "." + digits.substring(1);
            int e = Math.abs(exponent);
            return sign + mantissa + "e" + (exponent < 0 ? "-" : "+") + (e < 10 ? "0" : "") + e;
        }
        if (exponent >= digits.length() - 1) {
            return sign + digits + "0".repeat(exponent - (digits.length() - 1)) + ".0";
        }
        if (exponent >= 0) {
            return sign + digits.substring(0, exponent + 1) + "." + digits.substring(exponent + 1);
        }
        return sign + "0." + "0".repeat(-exponent - 1) + digits;
    }
}
