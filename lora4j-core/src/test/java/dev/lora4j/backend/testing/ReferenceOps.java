package dev.lora4j.backend.testing;

/**
 * The {@code Backend} forward ops written the plainest way, in double precision, on host arrays: the yardstick
 * every backend's kernels are measured against. Inputs are floats (what a backend holds, 16-bit weights already
 * widened); results are doubles, so a test sees the backend's rounding error and nothing else.
 *
 * <p>Tensors are row-major arrays with the shapes the Backend javadoc gives; each method says its shapes.
 */
public final class ReferenceOps {
    private ReferenceOps() {}

    /** out[i, :] = table[ids[i], :]; table is [vocab, d]. */
    public static double[] embedding(float[] table, int d, int[] ids) {
        double[] out = new double[ids.length * d];
        for (int i = 0; i < ids.length; i++) {
            for (int j = 0; j < d; j++) out[i * d + j] = table[ids[i] * d + j];
        }
        return out;
    }

    /** Per row of x ([n, d]): weight * x / sqrt(mean(x²) + eps). */
    public static double[] rmsNorm(float[] x, int d, float[] weight, float eps) {
        double[] out = new double[x.length];
        for (int r = 0; r < x.length / d; r++) {
            double ss = 0;
            for (int j = 0; j < d; j++) ss += (double) x[r * d + j] * x[r * d + j];
            double inv = 1.0 / Math.sqrt(ss / d + eps);
            for (int j = 0; j < d; j++) out[r * d + j] = weight[j] * (x[r * d + j] * inv);
        }
        return out;
    }

    /** x ([n, k]) · wᵀ (w is [m, k]), plus {@code initial} ([n, m]) when it is not null (accumulate). */
    public static double[] matmul(float[] x, float[] w, int n, int k, int m, float[] initial) {
        double[] out = new double[n * m];
        for (int r = 0; r < n; r++) {
            for (int c = 0; c < m; c++) {
                double s = initial == null ? 0 : initial[r * m + c];
                for (int j = 0; j < k; j++) s += (double) x[r * k + j] * w[c * k + j];
                out[r * m + c] = s;
            }
        }
        return out;
    }

    /**
     * Σ_j |x[r, j]·w[c, j]| (plus |initial|) for each output: the scale of a dot product's rounding error, which
     * can be much larger than the result itself when its terms cancel.
     */
    public static double[] matmulMagnitudes(float[] x, float[] w, int n, int k, int m, float[] initial) {
        double[] out = new double[n * m];
        for (int r = 0; r < n; r++) {
            for (int c = 0; c < m; c++) {
                double s = initial == null ? 0 : Math.abs(initial[r * m + c]);
                for (int j = 0; j < k; j++) s += Math.abs((double) x[r * k + j] * w[c * k + j]);
                out[r * m + c] = s;
            }
        }
        return out;
    }

    /** x[i, :] + bias[:]. */
    public static double[] addBias(float[] x, float[] bias) {
        double[] out = new double[x.length];
        for (int i = 0; i < x.length; i++) out[i] = (double) x[i] + bias[i % bias.length];
        return out;
    }

    /**
     * Rotary embedding, "rotate_half" layout: in each head, element j pairs with j + headDim/2, rotated by the
     * angle positions[row] * invFreq[j]. The angle is rounded to FP32 as the Backend contract says (it is what
     * torch computes); cosine, sine and rotation are then exact to double precision.
     */
    public static double[] rope(float[] x, int width, int headDim, int[] positions, float[] invFreq) {
        double[] out = new double[x.length];
        int half = headDim / 2;
        for (int r = 0; r < positions.length; r++) {
            for (int h = 0; h < width / headDim; h++) {
                int base = r * width + h * headDim;
                for (int j = 0; j < half; j++) {
                    float angle = positions[r] * invFreq[j];
                    double cos = Math.cos(angle), sin = Math.sin(angle);
                    double a = x[base + j], b = x[base + j + half];
                    out[base + j] = a * cos - b * sin;
                    out[base + j + half] = b * cos + a * sin;
                }
            }
        }
        return out;
    }

    /** The inverse frequencies of plain RoPE: theta^(-2j/headDim), rounded to FP32. */
    public static float[] ropeInverseFrequencies(int headDim, double theta) {
        float[] inv = new float[headDim / 2];
        for (int j = 0; j < inv.length; j++) inv[j] = (float) Math.pow(theta, -2.0 * j / headDim);
        return inv;
    }

    /**
     * Causal grouped-query attention of n queries at positions startPos.. over the keys/values of positions
     * 0..startPos+n-1 (k, v: [>= startPos+n, nKvHeads*headDim]), with an optional sliding window (0 = none).
     */
    public static double[] attention(float[] q, float[] k, float[] v, int n, int startPos, int nHeads, int nKvHeads,
                                     int headDim, int slidingWindow) {
        double[] out = new double[n * nHeads * headDim];
        int group = nHeads / nKvHeads, qWidth = nHeads * headDim, kvWidth = nKvHeads * headDim;
        double scale = 1.0 / Math.sqrt(headDim);
        for (int i = 0; i < n; i++) {
            int pos = startPos + i;
            int first = slidingWindow > 0 ? Math.max(0, pos - slidingWindow + 1) : 0;
            for (int h = 0; h < nHeads; h++) {
                int kvh = h / group;
                double[] scores = new double[pos - first + 1];
                double max = Double.NEGATIVE_INFINITY;
                for (int t = first; t <= pos; t++) {
                    double dot = 0;
                    for (int j = 0; j < headDim; j++) {
                        dot += (double) q[i * qWidth + h * headDim + j] * k[t * kvWidth + kvh * headDim + j];
                    }
                    scores[t - first] = dot * scale;
                    max = Math.max(max, scores[t - first]);
                }
                double sum = 0;
                for (int s = 0; s < scores.length; s++) {
                    scores[s] = Math.exp(scores[s] - max);
                    sum += scores[s];
                }
                for (int t = first; t <= pos; t++) {
                    double p = scores[t - first] / sum;
                    for (int j = 0; j < headDim; j++) {
                        out[i * qWidth + h * headDim + j] += p * v[t * kvWidth + kvh * headDim + j];
                    }
                }
            }
        }
        return out;
    }

    /** silu(gate) * up, silu(x) = x / (1 + e^-x). */
    public static double[] swiglu(float[] gate, float[] up) {
        double[] out = new double[gate.length];
        for (int i = 0; i < gate.length; i++) out[i] = gate[i] / (1 + Math.exp(-(double) gate[i])) * up[i];
        return out;
    }

    /** x + y. */
    public static double[] add(float[] x, float[] y) {
        double[] out = new double[x.length];
        for (int i = 0; i < x.length; i++) out[i] = (double) x[i] + y[i];
        return out;
    }
}
