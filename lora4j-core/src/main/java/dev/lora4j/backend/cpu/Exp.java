package dev.lora4j.backend.cpu;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;

import static jdk.incubator.vector.VectorOperators.ASHR;
import static jdk.incubator.vector.VectorOperators.GT;
import static jdk.incubator.vector.VectorOperators.LSHL;
import static jdk.incubator.vector.VectorOperators.LT;

/**
 * e^x for floats, as a vector and as a scalar that give the same bits. {@code lanewise(EXP)} is computed by an
 * intrinsic once C2 compiles the caller but by a per-lane Java fallback before, and scalar tails used
 * {@code Math.exp}: the three differ by an ulp here and there. Which elements fall in a vector or in a tail depends
 * on how the work is split over threads, and when C2 steps in depends on timing, so results changed with the
 * thread count and from run to run, which breaks bit-for-bit resumed training. Here both forms perform the same
 * sequence of IEEE-exact basic operations (add, multiply, fma, compares, integer bit arithmetic), so whoever
 * executes them, interpreter, C1, C2 or a scalar tail, rounds identically.
 *
 * <p>Error: under 0.72 ulp of e^x for normal results, under 0.78 ulp for subnormal ones (measured; Math.exp
 * rounded to float is within 0.5). 0 only where e^x rounds to 0 anyway, +∞ where it overflows, NaN for NaN.
 *
 * <p>Method: k = rint(x·log2 e) and r = x − k·ln 2 = rHigh − c, with ln 2 split into a short high part, so that
 * rHigh = x − k·ln2High is exact, and a small rest c = k·ln2Low. e^r = 1 + r + r²·p(r), p from the Taylor series
 * (degree 7 in all) on |r| ≤ ln 2 / 2 in Horner form. The sum is formed as s + (e − c + r²·p) where s = 1 + rHigh
 * and e is what that addition lost (exact, Fast2Sum), so the leading terms are added with one final rounding:
 * rounding r and then 1 + r separately would cost over an ulp. Finally it is scaled by 2^k in two exact
 * halves, so that k = 128 (just below overflow) and k down to −150 (subnormal results, rounded once in the last
 * multiplication) both work.
 */
final class Exp {
    private Exp() {}

    /** Below this e^x is less than half the smallest subnormal float: it rounds to 0. */
    private static final float LOWEST = -104f;
    /** Above ln(Float.MAX_VALUE) ≈ 88.72; clamping here still overflows to +∞ in the final scaling. */
    private static final float HIGHEST = 89f;
    private static final float LOG2_E = 1.44269504088896341f;
    /** 1.5·2^23: adding it rounds a float of magnitude below 2^22 to an integer held in the low mantissa bits. */
    private static final float ROUNDER = 12582912f;
    /**
     * The bits of ROUNDER + k are those of ROUNDER plus k. Adding this gives k + 2·127: split into two halves, each
     * the biased exponent of a power of two, whose product is 2^k.
     */
    private static final int BIASES_MINUS_ROUNDER_BITS = 2 * 127 - 0x4B40_0000;
    /** ln 2 = LN2_HIGH + LN2_LOW; LN2_HIGH has 16 significant bits, so k·LN2_HIGH is exact for |k| ≤ 2^8. */
    private static final float LN2_HIGH = 0.693145751953125f;
    private static final float LN2_LOW = 1.42860682030941723212e-6f;
    private static final float C2 = 1f / 2, C3 = 1f / 6, C4 = 1f / 24, C5 = 1f / 120, C6 = 1f / 720, C7 = 1f / 5040;

    /** e^x lane by lane; bit for bit what {@link #exp(float)} gives for each lane. */
    static FloatVector exp(FloatVector x) {
        var species = x.species();
        // Compare and blend rather than min and max: Java's NaN and −0 rules make those several instructions each.
        x = x.blend(LOWEST, x.compare(LT, LOWEST)).blend(HIGHEST, x.compare(GT, HIGHEST));
        FloatVector t = x.fma(LOG2_E, ROUNDER); // ROUNDER + k in its low mantissa bits
        FloatVector k = t.sub(ROUNDER);
        FloatVector rHigh = k.fma(FloatVector.broadcast(species, -LN2_HIGH), x);
        FloatVector c = k.mul(LN2_LOW);
        FloatVector r = rHigh.sub(c);
        FloatVector p = r.fma(C7, C6);
        p = p.fma(r, FloatVector.broadcast(species, C5));
        p = p.fma(r, FloatVector.broadcast(species, C4));
        p = p.fma(r, FloatVector.broadcast(species, C3));
        p = p.fma(r, FloatVector.broadcast(species, C2));
        FloatVector s = rHigh.add(1f);
        FloatVector e = FloatVector.broadcast(species, 1f).sub(s).add(rHigh);
        FloatVector y = s.add(p.fma(r.mul(r), e.sub(c)));
        IntVector twice = ((IntVector) t.viewAsIntegralLanes()).add(BIASES_MINUS_ROUNDER_BITS);
        IntVector half = twice.lanewise(ASHR, 1);
        FloatVector scale1 = half.lanewise(LSHL, 23).reinterpretAsFloats();
        FloatVector scale2 = twice.sub(half).lanewise(LSHL, 23).reinterpretAsFloats();
        return y.mul(scale1).mul(scale2);
    }

    /** e^x; bit for bit what {@link #exp(FloatVector)} gives in a lane holding x. */
    static float exp(float x) {
        if (x < LOWEST) x = LOWEST;
        if (x > HIGHEST) x = HIGHEST;
        float t = Math.fma(x, LOG2_E, ROUNDER);
        float k = t - ROUNDER;
        float rHigh = Math.fma(k, -LN2_HIGH, x);
        float c = k * LN2_LOW;
        float r = rHigh - c;
        float p = Math.fma(r, C7, C6);
        p = Math.fma(p, r, C5);
        p = Math.fma(p, r, C4);
        p = Math.fma(p, r, C3);
        p = Math.fma(p, r, C2);
        float s = rHigh + 1f;
        float e = (1f - s) + rHigh;
        float y = s + Math.fma(p, r * r, e - c);
        int twice = Float.floatToRawIntBits(t) + BIASES_MINUS_ROUNDER_BITS;
        int half = twice >> 1;
        float scale1 = Float.intBitsToFloat(half << 23);
        float scale2 = Float.intBitsToFloat((twice - half) << 23);
        return y * scale1 * scale2;
    }
}
