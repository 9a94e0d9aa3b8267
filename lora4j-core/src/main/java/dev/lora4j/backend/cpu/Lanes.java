package dev.lora4j.backend.cpu;

import jdk.incubator.vector.DoubleVector;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorShuffle;
import jdk.incubator.vector.VectorSpecies;

/**
 * Horizontal sums of vectors in one fixed order. {@code reduceLanes(ADD)} leaves its order unspecified, and in
 * practice the interpreter, C1 and C2 add the lanes differently, so the same call could round differently before
 * and after the JIT compiles it: results then change from run to run by an ulp, which breaks bit-for-bit resumed
 * training. Folding halves with lane-wise adds gives one tree of additions whatever executes it.
 */
final class Lanes {
    private Lanes() {}

    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    private static final VectorSpecies<Double> D = DoubleVector.SPECIES_PREFERRED;
    private static final VectorShuffle<Float>[] FLOAT_FOLDS = folds(F);
    private static final VectorShuffle<Double>[] DOUBLE_FOLDS = folds(D);
    // The folds of vectors of up to 16 lanes, one constant each: applied in straight-line code, the JIT compiles
    // each to a permute and an add. (Taken from an array in a loop, the vector is boxed on every iteration, and a
    // matmul tile's sums cost more than its products.)
    private static final int FL = F.length(), DL = D.length();
    private static final VectorShuffle<Float> F8 = VectorShuffle.iota(F, 8, 1, true), F4 = VectorShuffle.iota(F, 4, 1, true);
    private static final VectorShuffle<Float> F2 = VectorShuffle.iota(F, 2, 1, true), F1 = VectorShuffle.iota(F, 1, 1, true);
    private static final VectorShuffle<Double> D4 = VectorShuffle.iota(D, 4, 1, true), D2 = VectorShuffle.iota(D, 2, 1, true);
    private static final VectorShuffle<Double> D1 = VectorShuffle.iota(D, 1, 1, true);

    @SuppressWarnings("unchecked")
    private static <E> VectorShuffle<E>[] folds(VectorSpecies<E> species) {
        int n = Integer.numberOfTrailingZeros(species.length());
        VectorShuffle<E>[] folds = new VectorShuffle[n];
        for (int i = 0, step = species.length() / 2; step >= 1; i++, step /= 2) {
            folds[i] = VectorShuffle.iota(species, step, 1, true); // lane j takes lane (j + step) mod length
        }
        return folds;
    }

    /** The sum of the lanes of a vector of the preferred species, always added in the same tree. */
    static float sum(FloatVector v) {
        if (v.species() != F) return sumSlowly(v);
        if (FL > 16) {
            for (VectorShuffle<Float> fold : FLOAT_FOLDS) v = v.add(v.rearrange(fold));
            return v.lane(0);
        }
        if (FL == 16) v = v.add(v.rearrange(F8));
        if (FL >= 8) v = v.add(v.rearrange(F4));
        if (FL >= 4) v = v.add(v.rearrange(F2));
        if (FL >= 2) v = v.add(v.rearrange(F1));
        return v.lane(0);
    }

    /** The same for doubles. */
    static double sum(DoubleVector v) {
        if (v.species() != D) {
            double s = 0;
            for (double d : v.toArray()) s += d;
            return s;
        }
        if (DL > 8) {
            for (VectorShuffle<Double> fold : DOUBLE_FOLDS) v = v.add(v.rearrange(fold));
            return v.lane(0);
        }
        if (DL == 8) v = v.add(v.rearrange(D4));
        if (DL >= 4) v = v.add(v.rearrange(D2));
        if (DL >= 2) v = v.add(v.rearrange(D1));
        return v.lane(0);
    }

    private static float sumSlowly(FloatVector v) {
        float s = 0;
        for (float f : v.toArray()) s += f;
        return s;
    }
}
