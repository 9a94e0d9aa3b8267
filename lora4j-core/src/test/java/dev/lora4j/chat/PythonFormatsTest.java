package dev.lora4j.chat;

import org.junit.jupiter.api.Test;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;

/** Python's spellings of values, with the expected strings taken from CPython 3. */
class PythonFormatsTest {
    @Test
    void floatsPrintAsPythonReprDoes() {
        double[] values = {1e16, 1e-5, 0.0001, 123456789.123, 0.1 + 0.2, -0.0, 1e22, 5e-324, 1.5e300, 2.5, 100.0, 1e15, 12345678901234567.0, -1.25e-7, 0.001};
        String[] python = {"1e+16", "1e-05", "0.0001", "123456789.123", "0.30000000000000004", "-0.0", "1e+22", "5e-324", "1.5e+300", "2.5",
                "100.0", "1000000000000000.0", "1.2345678901234568e+16", "-1.25e-07", "0.001"};
        for (int i = 0; i < values.length; i++) assertThat(PythonValues.floatRepr(values[i])).as("repr(%s)", values[i]).isEqualTo(python[i]);
    }

    @Test
    void jsonDumpsMatchesPython() {
        Map<String, Object> value = new LinkedHashMap<>();
        value.put("a", java.util.Arrays.asList(1, 2.0, null, true, "é\u2028\u0001\"\\"));
        value.put("b", Map.of());
        assertThat(PythonJson.dumps(value, null, null, null, false, false)).isEqualTo("{\"a\": [1, 2.0, null, true, \"é\u2028\\u0001\\\"\\\\\"], \"b\": {}}");
        Map<String, Object> nested = new LinkedHashMap<>();
        nested.put("a", List.of(1, Map.of("x", List.of())));
        assertThat(PythonJson.dumps(nested, 2, null, null, false, false)).isEqualTo("{\n  \"a\": [\n    1,\n    {\n      \"x\": []\n    }\n  ]\n}");
        assertThat(PythonJson.dumps("🚀é", null, null, null, true, false)).isEqualTo("\"\\ud83d\\ude80\\u00e9\"");
    }

    @Test
    void stringsReprAsPythonDoes() {
        assertThat(PythonValues.repr("it's")).isEqualTo("\"it's\"");
        assertThat(PythonValues.repr("say \"hi\"")).isEqualTo("'say \"hi\"'");
        assertThat(PythonValues.repr("both ' and \"")).isEqualTo("'both \\' and \"'");
        assertThat(PythonValues.repr("tab\there\u007f")).isEqualTo("'tab\\there\\x7f'");
    }

    @Test
    void strMethodsFollowPython() {
        assertThat(PythonStrings.split("  a  b ", null, -1)).containsExactly("a", "b");
        assertThat(PythonStrings.split("a,b,,c", ",", 2)).containsExactly("a", "b", ",c");
        assertThat(PythonStrings.rsplit("a b c", " ", 1)).containsExactly("a b", "c");
        assertThat(PythonStrings.strip("\u00a0 x \u3000", null, true, true)).isEqualTo("x");
        assertThat(PythonStrings.strip("xxhixx", "x", true, false)).isEqualTo("hixx");
        assertThat(PythonStrings.call("a🚀b", "find", new Object[] {"b"})).isEqualTo(2);
        assertThat(PythonStrings.call("abc", "nosuchmethod", new Object[0])).isSameAs(PythonStrings.NOT_A_METHOD);
    }
}
