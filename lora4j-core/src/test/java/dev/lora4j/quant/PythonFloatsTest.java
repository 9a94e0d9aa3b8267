package dev.lora4j.quant;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import static org.assertj.core.api.Assertions.assertThat;

class PythonFloatsTest {

    /** Expected strings printed by CPython 3's repr() of the same doubles (many are float32 values widened). */
    @ParameterizedTest
    @CsvSource({
            "0.03377532586455345, 0.03377532586455345",
            "1e-5, 1e-05",
            "1.5e-7, 1.5e-07",
            "123456789.0, 123456789.0",
            "1e16, 1e+16",
            "1e22, 1e+22",
            "0.0001, 0.0001",
            "0.00012345, 0.00012345",
            "-2.5, -2.5",
            "3.0, 3.0",
            "9.999e-5, 9.999e-05",
            "0.1, 0.1",
            "100.0, 100.0",
            "1234567890123456.0, 1234567890123456.0",
            "12345678901234567.0, 1.2345678901234568e+16",
            "-0.0, -0.0",
            "0.0, 0.0",
            "24.580339431762695, 24.580339431762695",
            "5903871.5, 5903871.5",
            "-94198.953125, -94198.953125",
            "0.005519171245396137, 0.005519171245396137",
            "2.9794910005875863e-05, 2.9794910005875863e-05",
            "87521720.0, 87521720.0",
            "-0.0005013385671190917, -0.0005013385671190917",
            "-6.80791600871089e-08, -6.80791600871089e-08",
            "-7.466015583545982e-10, -7.466015583545982e-10",
            "9.202541696140543e-05, 9.202541696140543e-05",
            "0.7448155283927917, 0.7448155283927917",
    })
    void printsDoublesAsPythonsReprDoes(double value, String python) {
        assertThat(PythonFloats.repr(value)).isEqualTo(python);
    }

    @ParameterizedTest
    @CsvSource({"NaN, NaN", "Infinity, Infinity", "-Infinity, -Infinity"})
    void spellsNonFiniteValuesAsJsonDumpsDoes(double value, String python) {
        assertThat(PythonFloats.repr(value)).isEqualTo(python);
    }
}
