package dev.lora4j.model;

/**
 * A Llama-family decoder written as plain loops in double precision, independent of the backends: the reference
 * the model's forward pass is checked against. Weights are row-major {@code [out][in]} like torch Linear.
 */
public final class ReferenceLlama {

    /** Host copies of every weight; biases are null where absent. */
    public record Weights(double[][] embed, Layer[] layers, double[] finalNorm, double[][] lmHead) {}

    public record Layer(double[] inputNorm, double[][] q, double[][] k, double[][] v, double[][] o,
                 double[] qBias, double[] kBias, double[] vBias, double[] oBias,
                 double[] postNorm, double[][] gate, double[][] up, double[][] down,
                 double[] gateBias, double[] upBias, double[] downBias) {}

    private ReferenceLlama() {}

    /** Logits of every position of {@code tokens} (positions 0..n-1), [n][vocab]. */
    static double[][] logits(LlamaShape s, Weights w, int[] tokens) {
        int n = tokens.length, d = s.hiddenSize(), hd = s.headDim();
        double[][] x = new double[n][];
        for (int i = 0; i < n; i++) x[i] = w.embed()[tokens[i]].clone();
        for (int l = 0; l < s.numLayers(); l++) {
            Layer L = w.layers()[l];
            double[][] q = new double[n][], k = new double[n][], v = new double[n][];
            for (int i = 0; i < n; i++) {
                double[] h = rmsNorm(x[i], L.inputNorm(), s.rmsNormEps());
                q[i] = rope(linear(L.q(), L.qBias(), h), i, hd, s.invFreq());
                k[i] = rope(linear(L.k(), L.kBias(), h), i, hd, s.invFreq());
                v[i] = linear(L.v(), L.vBias(), h);
            }
            int group = s.numHeads() / s.numKvHeads();
            int window = s.slidingWindow(l);
            for (int i = 0; i < n; i++) {
                double[] att = new double[s.numHeads() * hd];
                for (int head = 0; head < s.numHeads(); head++) {
                    int kvHead = head / group;
                    double[] scores = new double[i + 1];
                    double max = Double.NEGATIVE_INFINITY;
                    for (int t = 0; t <= i; t++) {
                        boolean visible = window == 0 || i - t < window;
                        if (!visible) { scores[t] = Double.NEGATIVE_INFINITY; continue; }
                        double dot = 0;
                        for (int j = 0; j < hd; j++) dot += q[i][head * hd + j] * k[t][kvHead * hd + j];
                        scores[t] = dot / Math.sqrt(hd);
                        max = Math.max(max, scores[t]);
                    }
                    double sum = 0;
                    for (int t = 0; t <= i; t++) { scores[t] = Math.exp(scores[t] - max); sum += scores[t]; }
                    for (int t = 0; t <= i; t++) {
                        for (int j = 0; j < hd; j++) att[head * hd + j] += scores[t] / sum * v[t][kvHead * hd + j];
                    }
                }
                add(x[i], linear(L.o(), L.oBias(), att));
            }
            for (int i = 0; i < n; i++) {
                double[] h = rmsNorm(x[i], L.postNorm(), s.rmsNormEps());
                double[] g = linear(L.gate(), L.gateBias(), h), u = linear(L.up(), L.upBias(), h);
                double[] a = new double[g.length];
                for (int j = 0; j < g.length; j++) a[j] = g[j] / (1 + Math.exp(-g[j])) * u[j];
                add(x[i], linear(L.down(), L.downBias(), a));
            }
        }
        double[][] out = new double[n][];
        double[][] head = s.tiedEmbeddings() ? w.embed() : w.lmHead();
        for (int i = 0; i < n; i++) out[i] = linear(head, null, rmsNorm(x[i], w.finalNorm(), s.rmsNormEps()));
        return out;
    }

    private static double[] rmsNorm(double[] x, double[] w, double eps) {
        double ss = 0;
        for (double e : x) ss += e * e;
        double inv = 1 / Math.sqrt(ss / x.length + eps);
        double[] out = new double[x.length];
        for (int j = 0; j < x.length; j++) out[j] = w[j] * x[j] * inv;
        return out;
    }

    private static double[] linear(double[][] w, double[] bias, double[] x) {
        double[] out = new double[w.length];
        for (int r = 0; r < w.length; r++) {
            double acc = bias == null ? 0 : bias[r];
            for (int j = 0; j < x.length; j++) acc += w[r][j] * x[j];
            out[r] = acc;
        }
        return out;
    }

    /** rotate_half layout: element j of a head pairs with element j + headDim/2. */
    private static double[] rope(double[] x, int pos, int hd, float[] invFreq) {
        double[] out = x.clone();
        int half = hd / 2;
        for (int h = 0; h < x.length / hd; h++) {
            for (int j = 0; j < half; j++) {
                double angle = pos * (double) invFreq[j];
                double a = x[h * hd + j], b = x[h * hd + j + half];
                out[h * hd + j] = a * Math.cos(angle) - b * Math.sin(angle);
                out[h * hd + j + half] = b * Math.cos(angle) + a * Math.sin(angle);
            }
        }
        return out;
    }

    private static void add(double[] x, double[] y) {
        for (int j = 0; j < x.length; j++) x[j] += y[j];
    }
}
