package dev.lora4j.backend.testing;

import dev.lora4j.backend.DropoutHash;

/**
 * The training ops of {@code Backend} written the plainest way, in double precision, on host arrays: the
 * forward functions take doubles (so that {@link GradientCheck} can differentiate them numerically), and each
 * backward function is the analytic gradient of one of them, itself checked against central differences in
 * {@code ReferenceTrainingOpsTest}. A backend's F32 results are then compared with these.
 *
 * <p>Shapes are those of the Backend javadoc, arrays row-major.
 */
public final class ReferenceTrainingOps {
    private ReferenceTrainingOps() {}

    /** Gradients of an op with two inputs. */
    public record Pair(double[] first, double[] second) {}

    /** Gradients of attention with respect to q, k and v. */
    public record Qkv(double[] dq, double[] dk, double[] dv) {}

    // ---- matmul ---------------------------------------------------------------------------------------------

    /** x[n, k] · w[m, k]ᵀ. */
    public static double[] matmul(double[] x, double[] w, int n, int k, int m) {
        double[] out = new double[n * m];
        for (int r = 0; r < n; r++) {
            for (int c = 0; c < m; c++) {
                double s = 0;
                for (int j = 0; j < k; j++) s += x[r * k + j] * w[c * k + j];
                out[r * m + c] = s;
            }
        }
        return out;
    }

    /** dX[n, k] = dY[n, m] · w[m, k]. */
    public static double[] matmulBackwardInput(double[] dY, double[] w, int n, int k, int m) {
        double[] dx = new double[n * k];
        for (int r = 0; r < n; r++) {
            for (int j = 0; j < k; j++) {
                double s = 0;
                for (int c = 0; c < m; c++) s += dY[r * m + c] * w[c * k + j];
                dx[r * k + j] = s;
            }
        }
        return dx;
    }

    /** dW[m, k] = dY[n, m]ᵀ · x[n, k]. */
    public static double[] matmulBackwardWeight(double[] dY, double[] x, int n, int k, int m) {
        double[] dw = new double[m * k];
        for (int c = 0; c < m; c++) {
            for (int j = 0; j < k; j++) {
                double s = 0;
                for (int r = 0; r < n; r++) s += dY[r * m + c] * x[r * k + j];
                dw[c * k + j] = s;
            }
        }
        return dw;
    }

    /**
     * Σ_c |dY[r, c]·w[c, j]| per element of dX (plus |initial|): the scale of its FP32 rounding error.
     * {@code weightGradient} swaps the roles: Σ_r |dY[r, c]·x[r, j]| per element of dW.
     */
    public static double[] backwardMagnitudes(double[] dY, double[] other, int n, int k, int m, boolean weightGradient,
                                              double[] initial) {
        double[] absY = abs(dY), absOther = abs(other);
        double[] mag = weightGradient ? matmulBackwardWeight(absY, absOther, n, k, m) : matmulBackwardInput(absY, absOther, n, k, m);
        if (initial != null) for (int i = 0; i < mag.length; i++) mag[i] += Math.abs(initial[i]);
        return mag;
    }

    /** Σ_rows y[row, :]. */
    public static double[] sumRows(double[] y, int rows, int d) {
        double[] s = new double[d];
        for (int r = 0; r < rows; r++) for (int j = 0; j < d; j++) s[j] += y[r * d + j];
        return s;
    }

    // ---- rmsNorm --------------------------------------------------------------------------------------------

    /** Per row of x ([rows, d]): weight · x / sqrt(mean(x²) + eps). */
    public static double[] rmsNorm(double[] x, int d, double[] weight, double eps) {
        double[] out = new double[x.length];
        for (int r = 0; r < x.length / d; r++) {
            double inv = inverseRms(x, r * d, d, eps);
            for (int j = 0; j < d; j++) out[r * d + j] = weight[j] * x[r * d + j] * inv;
        }
        return out;
    }

    /** Gradients of {@link #rmsNorm}: (dX, dWeight summed over rows). */
    public static Pair rmsNormBackward(double[] x, int d, double[] weight, double eps, double[] dOut) {
        double[] dx = new double[x.length], dw = new double[d];
        for (int r = 0; r < x.length / d; r++) {
            int b = r * d;
            double inv = inverseRms(x, b, d, eps);
            double dot = 0;
            for (int j = 0; j < d; j++) dot += weight[j] * dOut[b + j] * x[b + j];
            for (int j = 0; j < d; j++) {
                dx[b + j] = inv * weight[j] * dOut[b + j] - x[b + j] * inv * inv * inv * dot / d;
                dw[j] += dOut[b + j] * x[b + j] * inv;
            }
        }
        return new Pair(dx, dw);
    }

    private static double inverseRms(double[] x, int b, int d, double eps) {
        double ss = 0;
        for (int j = 0; j < d; j++) ss += x[b + j] * x[b + j];
        return 1.0 / Math.sqrt(ss / d + eps);
    }

    // ---- rope -----------------------------------------------------------------------------------------------

    /** Rotary embedding as {@link ReferenceOps#rope} (angles rounded to FP32), on doubles; {@code inverse} rotates back. */
    public static double[] rope(double[] x, int width, int headDim, int[] positions, float[] invFreq, boolean inverse) {
        double[] out = new double[x.length];
        int half = headDim / 2;
        for (int r = 0; r < positions.length; r++) {
            for (int h = 0; h < width / headDim; h++) {
                int base = r * width + h * headDim;
                for (int j = 0; j < half; j++) {
                    float angle = positions[r] * invFreq[j];
                    double cos = Math.cos(angle), sin = inverse ? -Math.sin(angle) : Math.sin(angle);
                    double a = x[base + j], b = x[base + j + half];
                    out[base + j] = a * cos - b * sin;
                    out[base + j + half] = b * cos + a * sin;
                }
            }
        }
        return out;
    }

    /** The gradient of {@link #rope}: the transpose of a rotation is the rotation back. */
    public static double[] ropeBackward(double[] dy, int width, int headDim, int[] positions, float[] invFreq) {
        return rope(dy, width, headDim, positions, invFreq, true);
    }

    // ---- swiglu ---------------------------------------------------------------------------------------------

    public static double[] swiglu(double[] gate, double[] up) {
        double[] out = new double[gate.length];
        for (int i = 0; i < gate.length; i++) out[i] = gate[i] * sigmoid(gate[i]) * up[i];
        return out;
    }

    /** Gradients of {@link #swiglu}: (dGate, dUp). */
    public static Pair swigluBackward(double[] gate, double[] up, double[] dOut) {
        double[] dg = new double[gate.length], du = new double[gate.length];
        for (int i = 0; i < gate.length; i++) {
            double s = sigmoid(gate[i]);
            du[i] = dOut[i] * gate[i] * s;
            dg[i] = dOut[i] * up[i] * s * (1 + gate[i] * (1 - s));
        }
        return new Pair(dg, du);
    }

    private static double sigmoid(double x) {
        return x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
    }

    // ---- embedding ------------------------------------------------------------------------------------------

    /** dTable[vocab, d] with dOut[i, :] added to row ids[i]. */
    public static double[] embeddingBackward(int[] ids, double[] dOut, int vocab, int d) {
        double[] table = new double[vocab * d];
        for (int i = 0; i < ids.length; i++) for (int j = 0; j < d; j++) table[ids[i] * d + j] += dOut[i * d + j];
        return table;
    }

    // ---- attention ------------------------------------------------------------------------------------------

    /** The probabilities P[i, h, t] of causal, windowed, grouped-query attention of one sequence (zero where masked). */
    public static double[] attentionProbabilities(double[] q, double[] k, int n, int nHeads, int nKvHeads, int headDim,
                                                  int window) {
        double[] p = new double[n * nHeads * n];
        int group = nHeads / nKvHeads;
        double scale = 1.0 / Math.sqrt(headDim);
        for (int i = 0; i < n; i++) {
            int first = window > 0 ? Math.max(0, i - window + 1) : 0;
            for (int h = 0; h < nHeads; h++) {
                int row = (i * nHeads + h) * n;
                double max = Double.NEGATIVE_INFINITY;
                for (int t = first; t <= i; t++) {
                    p[row + t] = scale * dot(q, (i * nHeads + h) * headDim, k, (t * nKvHeads + h / group) * headDim, headDim);
                    max = Math.max(max, p[row + t]);
                }
                double sum = 0;
                for (int t = first; t <= i; t++) sum += p[row + t] = Math.exp(p[row + t] - max);
                for (int t = first; t <= i; t++) p[row + t] /= sum;
            }
        }
        return p;
    }

    /** The output of attention ([n, nHeads·headDim]) of one sequence, keys and values [n, nKvHeads·headDim]. */
    public static double[] attention(double[] q, double[] k, double[] v, int n, int nHeads, int nKvHeads, int headDim,
                                     int window) {
        double[] p = attentionProbabilities(q, k, n, nHeads, nKvHeads, headDim, window);
        double[] out = new double[n * nHeads * headDim];
        int group = nHeads / nKvHeads;
        for (int i = 0; i < n; i++) {
            for (int h = 0; h < nHeads; h++) {
                for (int t = 0; t <= i; t++) {
                    double pt = p[(i * nHeads + h) * n + t];
                    if (pt == 0) continue;
                    for (int j = 0; j < headDim; j++) {
                        out[(i * nHeads + h) * headDim + j] += pt * v[(t * nKvHeads + h / group) * headDim + j];
                    }
                }
            }
        }
        return out;
    }

    /** lse[i, h] = log Σ_t exp(scale·q·k) over the keys row i, head h sees. */
    public static double[] attentionLse(double[] q, double[] k, int n, int nHeads, int nKvHeads, int headDim, int window) {
        double[] lse = new double[n * nHeads];
        int group = nHeads / nKvHeads;
        double scale = 1.0 / Math.sqrt(headDim);
        for (int i = 0; i < n; i++) {
            int first = window > 0 ? Math.max(0, i - window + 1) : 0;
            for (int h = 0; h < nHeads; h++) {
                double max = Double.NEGATIVE_INFINITY;
                double[] s = new double[i - first + 1];
                for (int t = first; t <= i; t++) {
                    s[t - first] = scale * dot(q, (i * nHeads + h) * headDim, k, (t * nKvHeads + h / group) * headDim, headDim);
                    max = Math.max(max, s[t - first]);
                }
                double sum = 0;
                for (double e : s) sum += Math.exp(e - max);
                lse[i * nHeads + h] = max + Math.log(sum);
            }
        }
        return lse;
    }

    /**
     * Gradients of {@link #attention} with respect to q, k and v, from the probabilities: dV = Pᵀ·dO,
     * dS = P ∘ (dO·Vᵀ - rowsum(P ∘ dO·Vᵀ)), dQ = scale·dS·K, dK = scale·dSᵀ·Q; dK and dV summed over each group.
     */
    public static Qkv attentionBackward(double[] q, double[] k, double[] v, double[] dOut, int n, int nHeads,
                                        int nKvHeads, int headDim, int window) {
        double[] p = attentionProbabilities(q, k, n, nHeads, nKvHeads, headDim, window);
        double[] dq = new double[q.length], dk = new double[k.length], dv = new double[v.length];
        int group = nHeads / nKvHeads;
        double scale = 1.0 / Math.sqrt(headDim);
        for (int i = 0; i < n; i++) {
            for (int h = 0; h < nHeads; h++) {
                int qo = (i * nHeads + h) * headDim, row = (i * nHeads + h) * n;
                double[] dp = new double[i + 1];
                double pdp = 0;
                for (int t = 0; t <= i; t++) {
                    dp[t] = dot(dOut, qo, v, (t * nKvHeads + h / group) * headDim, headDim);
                    pdp += p[row + t] * dp[t];
                }
                for (int t = 0; t <= i; t++) {
                    double pt = p[row + t];
                    if (pt == 0) continue;
                    int ko = (t * nKvHeads + h / group) * headDim;
                    double ds = pt * (dp[t] - pdp);
                    for (int j = 0; j < headDim; j++) {
                        dv[ko + j] += pt * dOut[qo + j];
                        dq[qo + j] += scale * ds * k[ko + j];
                        dk[ko + j] += scale * ds * q[qo + j];
                    }
                }
            }
        }
        return new Qkv(dq, dk, dv);
    }

    // ---- cross-entropy --------------------------------------------------------------------------------------

    /** Per row of logits [n, vocab]: logsumexp - logit of the target; 0 for a negative target. */
    public static double[] crossEntropyLosses(double[] logits, int vocab, int[] targets) {
        double[] losses = new double[targets.length];
        for (int i = 0; i < targets.length; i++) {
            if (targets[i] < 0) continue;
            losses[i] = logSumExp(logits, i * vocab, vocab) - logits[i * vocab + targets[i]];
        }
        return losses;
    }

    /** The gradient of Σ_i losses[i]·gradScale: (softmax - onehot)·gradScale, zero rows for negative targets. */
    public static double[] crossEntropyGradient(double[] logits, int vocab, int[] targets, double gradScale) {
        double[] grad = new double[logits.length];
        for (int i = 0; i < targets.length; i++) {
            if (targets[i] < 0) continue;
            double lse = logSumExp(logits, i * vocab, vocab);
            for (int j = 0; j < vocab; j++) grad[i * vocab + j] = Math.exp(logits[i * vocab + j] - lse) * gradScale;
            grad[i * vocab + targets[i]] -= gradScale;
        }
        return grad;
    }

    private static double logSumExp(double[] x, int b, int count) {
        double max = Double.NEGATIVE_INFINITY;
        for (int j = 0; j < count; j++) max = Math.max(max, x[b + j]);
        double sum = 0;
        for (int j = 0; j < count; j++) sum += Math.exp(x[b + j] - max);
        return max + Math.log(sum);
    }

    // ---- optimizer, dropout ---------------------------------------------------------------------------------

    /**
     * The state of torch.optim.AdamW over one parameter tensor, stepped in double with torch's formula:
     * {@code p *= 1 - lr·wd; m = m + (1-b1)(g - m); v = b2·v + (1-b2)·g²;
     * p -= lr/(1-b1^t) · m / (sqrt(v)/sqrt(1-b2^t) + eps)}.
     */
    public static final class AdamW {
        public final double[] param, m, v;
        private long step;

        public AdamW(float[] initial) {
            param = toDoubles(initial);
            m = new double[initial.length];
            v = new double[initial.length];
        }

        public void step(float[] grad, double lr, double beta1, double beta2, double eps, double weightDecay) {
            step++;
            double bc1 = 1 - Math.pow(beta1, step), bc2 = 1 - Math.pow(beta2, step);
            for (int i = 0; i < param.length; i++) {
                double g = grad[i];
                param[i] *= 1 - lr * weightDecay;
                m[i] += (1 - beta1) * (g - m[i]);
                v[i] = beta2 * v[i] + (1 - beta2) * g * g;
                param[i] -= lr / bc1 * m[i] / (Math.sqrt(v[i]) / Math.sqrt(bc2) + eps);
            }
        }
    }

    /** Inverted dropout: element i is 0 when uniform(seed, i) < p, else x[i] / (1 - p). */
    public static double[] dropout(float[] x, double p, long seed) {
        double[] out = new double[x.length];
        for (int i = 0; i < x.length; i++) out[i] = DropoutHash.uniform(seed, i) < p ? 0 : x[i] / (1 - p);
        return out;
    }

    // ---- helpers --------------------------------------------------------------------------------------------

    public static double[] toDoubles(float[] v) {
        double[] d = new double[v.length];
        for (int i = 0; i < v.length; i++) d[i] = v[i];
        return d;
    }

    public static double[] abs(double[] v) {
        double[] a = new double[v.length];
        for (int i = 0; i < v.length; i++) a[i] = Math.abs(v[i]);
        return a;
    }

    /** Σ a[i]·b[i]. */
    public static double dot(double[] a, double[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) s += a[i] * b[i];
        return s;
    }

    private static double dot(double[] a, int ao, double[] b, int bo, int count) {
        double s = 0;
        for (int j = 0; j < count; j++) s += a[ao + j] * b[bo + j];
        return s;
    }
}
