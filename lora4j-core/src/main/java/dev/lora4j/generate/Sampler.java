package dev.lora4j.generate;

import java.util.Arrays;
import java.util.SplittableRandom;
import java.util.random.RandomGenerator;
import java.util.random.RandomGeneratorFactory;

/**
 * Picks the next token from a vector of logits, as Hugging Face's {@code generate} does: greedy is the arg max;
 * sampling divides by the temperature, keeps the top-k logits, then the nucleus of top-p probability mass, and
 * draws from the softmax of what is left. The random source is a seeded {@link RandomGenerator}, so a seed
 * reproduces a run exactly (though not torch's draws).
 */
public final class Sampler {
    /** The generator algorithm: fast, statistically strong, and splittable should batches need it. */
    public static final String ALGORITHM = "L64X128MixRandom";

    private final boolean greedy;
    private final float temperature;
    private final int topK;
    private final double topP;
    private final RandomGenerator random;

    private Sampler(boolean greedy, float temperature, int topK, double topP, long seed) {
        if (!greedy) {
            if (!(temperature > 0) || Float.isInfinite(temperature)) {
                throw new IllegalArgumentException("temperature must be a positive number when sampling, got " + temperature);
            }
            if (topK < 0) throw new IllegalArgumentException("top_k must be >= 0 (0: no limit), got " + topK);
            if (!(topP > 0 && topP <= 1)) throw new IllegalArgumentException("top_p must be in (0, 1], got " + topP);
        }
        this.greedy = greedy;
        this.temperature = temperature;
        this.topK = topK;
        this.topP = topP;
        this.random = greedy ? null : RandomGeneratorFactory.of(ALGORITHM).create(seed);
    }

    /** Always the most likely token (the first one on ties, like torch's argmax). */
    public static Sampler greedy() {
        return new Sampler(true, 1, 0, 1, 0);
    }

    /**
     * Sampling with temperature, top-k (0: no limit) and top-p (1: no limit). A temperature of 0 means greedy.
     */
    public static Sampler sampling(double temperature, int topK, double topP, long seed) {
        if (temperature == 0) return greedy();
        return new Sampler(false, (float) temperature, topK, topP, seed);
    }

    /** The sampler these options ask for, seeded with {@code seed}. */
    public static Sampler of(GenerationOptions options, long seed) {
        return options.isGreedy() ? greedy() : sampling(options.temperature(), options.topK(), options.topP(), seed);
    }

    public boolean isGreedy() { return greedy; }

    /** The next token id. {@code logits} is not modified. */
    public int sample(float[] logits) {
        if (logits.length == 0) throw new IllegalArgumentException("no logits to sample from");
        for (float l : logits) {
            if (Float.isNaN(l)) throw new IllegalStateException("the model produced NaN logits: its weights or inputs hold NaN or overflowed");
        }
        if (greedy) return argmax(logits);
        float[] scores = new float[logits.length];
        for (int i = 0; i < scores.length; i++) scores[i] = logits[i] / temperature;
        if (topK > 0 && topK < scores.length) keepTopK(scores, topK);
        if (topP < 1) keepTopP(scores, topP);
        return draw(scores);
    }

    public static int argmax(float[] logits) {
        int best = 0;
        for (int i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
        return best;
    }

    /** Sets every score below the k-th largest to -inf; ties with the k-th largest stay, as in TopKLogitsWarper. */
    static void keepTopK(float[] scores, int k) {
        float[] copy = scores.clone();
        float threshold = kthLargest(copy, k);
        for (int i = 0; i < scores.length; i++) if (scores[i] < threshold) scores[i] = Float.NEGATIVE_INFINITY;
    }

    /**
     * TopPLogitsWarper: sort ascending, and drop the tokens whose cumulative probability (from the least likely
     * up) is at most {@code 1 - topP}; the most likely token always stays. What is kept is the smallest set of
     * most likely tokens whose probability reaches {@code topP}.
     */
    static void keepTopP(float[] scores, double topP) {
        int n = 0;
        for (float s : scores) if (s != Float.NEGATIVE_INFINITY) n++;
        // Sort finite candidates by (score, index) packed into longs: a primitive sort, no boxing.
        long[] order = new long[n];
        int j = 0;
        double max = Double.NEGATIVE_INFINITY;
        for (int i = 0; i < scores.length; i++) {
            if (scores[i] == Float.NEGATIVE_INFINITY) continue;
            order[j++] = ((long) sortableBits(scores[i]) << 32) | (i & 0xffffffffL);
            max = Math.max(max, scores[i]);
        }
        Arrays.sort(order);
        double sum = 0;
        double[] p = new double[n];
        for (int r = 0; r < n; r++) {
            p[r] = Math.exp(scores[(int) order[r]] - max);
            sum += p[r];
        }
        double cumulative = 0;
        float removeUpTo = (float) (1 - topP); // torch compares its float32 cumsum with the float32 of 1 - top_p
        for (int r = 0; r < n - 1; r++) { // r = n - 1 is the most likely token: always kept
            cumulative += p[r] / sum;
            if ((float) cumulative <= removeUpTo) scores[(int) order[r]] = Float.NEGATIVE_INFINITY;
        }
    }

    private int draw(float[] scores) {
        double max = Double.NEGATIVE_INFINITY;
        for (float s : scores) max = Math.max(max, s);
        double sum = 0;
        double[] p = new double[scores.length];
        for (int i = 0; i < scores.length; i++) {
            p[i] = scores[i] == Float.NEGATIVE_INFINITY ? 0 : Math.exp(scores[i] - max);
            sum += p[i];
        }
        double u = random.nextDouble() * sum;
        int last = -1;
        for (int i = 0; i < p.length; i++) {
            if (p[i] == 0) continue;
            last = i;
            u -= p[i];
            if (u < 0) return i;
        }
        return last; // rounding left u a hair above 0: the last candidate
    }

    /** Order-preserving map of float bits to signed ints, so that comparing the ints compares the floats. */
    private static int sortableBits(float f) {
        int bits = Float.floatToIntBits(f);
        return bits >= 0 ? bits : bits ^ 0x7fffffff;
    }

    /** The k-th largest value (k >= 1) by quickselect; reorders {@code a}. */
    private static float kthLargest(float[] a, int k) {
        int lo = 0, hi = a.length - 1, target = a.length - k; // k-th largest = (n-k)-th smallest
        SplittableRandom pivots = new SplittableRandom(a.length);
        while (lo < hi) {
            float pivot = a[lo + pivots.nextInt(hi - lo + 1)];
            int i = lo, j = hi;
            while (i <= j) {
                while (a[i] < pivot) i++;
                while (a[j] > pivot) j--;
                if (i <= j) {
                    float t = a[i]; a[i] = a[j]; a[j] = t;
                    i++; j--;
                }
            }
            if (target <= j) hi = j;
            else if (target >= i) lo = i;
            else return a[target];
        }
        return a[target];
    }
}
