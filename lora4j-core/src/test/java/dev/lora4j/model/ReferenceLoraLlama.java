package dev.lora4j.model;

import dev.lora4j.backend.DropoutHash;

import java.util.Map;

/**
 * The training loss of a Llama-family decoder with LoRA adapters, written as plain loops in double precision and
 * independent of the backends: adapters unmerged, {@code y = W·x + b + scaling · B·A·dropout(x)}, dropout masks drawn
 * from {@link DropoutHash} exactly as the backends draw them (element index within the batch's [tokens, in] input).
 * The rows of a batch are concatenated as {@link TrainableLlama} concatenates them. Weights may be mutated between
 * calls, which is how the finite-difference checks perturb them.
 */
final class ReferenceLoraLlama {

    /** One adapter: a is [r][in], b is [out][r]. */
    record Adapter(double[][] a, double[][] b, double scaling, double dropout) {}

    private ReferenceLoraLlama() {}

    /** Summed next-token cross-entropy of the batch (labels -100 ignored). */
    static double loss(LlamaShape s, ReferenceLlama.Weights w, Map<String, Adapter> adapters, TrainingBatch batch) {
        int rows = batch.rows();
        int[] starts = new int[rows];
        int total = 0;
        for (int b = 0; b < rows; b++) {
            starts[b] = total;
            total += batch.inputIds()[b].length;
        }
        int hd = s.headDim();
        double[][] x = new double[total][];
        for (int b = 0; b < rows; b++) {
            for (int t = 0; t < batch.inputIds()[b].length; t++) x[starts[b] + t] = w.embed()[batch.inputIds()[b][t]].clone();
        }
        for (int l = 0; l < s.numLayers(); l++) {
            ReferenceLlama.Layer L = w.layers()[l];
            double[][] h = new double[total][];
            for (int i = 0; i < total; i++) h[i] = rmsNorm(x[i], L.inputNorm(), s.rmsNormEps());
            double[][] q = project(s, adapters, l, Projection.Q, L.q(), L.qBias(), h, batch.dropoutSeed());
            double[][] k = project(s, adapters, l, Projection.K, L.k(), L.kBias(), h, batch.dropoutSeed());
            double[][] v = project(s, adapters, l, Projection.V, L.v(), L.vBias(), h, batch.dropoutSeed());
            double[][] att = new double[total][];
            for (int b = 0; b < rows; b++) {
                int n = batch.inputIds()[b].length, o = starts[b];
                for (int i = 0; i < n; i++) {
                    q[o + i] = rope(q[o + i], i, hd, s.invFreq());
                    k[o + i] = rope(k[o + i], i, hd, s.invFreq());
                }
                for (int i = 0; i < n; i++) att[o + i] = attend(s, l, q, k, v, o, i);
            }
            double[][] attOut = project(s, adapters, l, Projection.O, L.o(), L.oBias(), att, batch.dropoutSeed());
            for (int i = 0; i < total; i++) add(x[i], attOut[i]);
            for (int i = 0; i < total; i++) h[i] = rmsNorm(x[i], L.postNorm(), s.rmsNormEps());
            double[][] g = project(s, adapters, l, Projection.GATE, L.gate(), L.gateBias(), h, batch.dropoutSeed());
            double[][] u = project(s, adapters, l, Projection.UP, L.up(), L.upBias(), h, batch.dropoutSeed());
            double[][] act = new double[total][];
            for (int i = 0; i < total; i++) {
                act[i] = new double[g[i].length];
                for (int j = 0; j < g[i].length; j++) act[i][j] = g[i][j] / (1 + Math.exp(-g[i][j])) * u[i][j];
            }
            double[][] down = project(s, adapters, l, Projection.DOWN, L.down(), L.downBias(), act, batch.dropoutSeed());
            for (int i = 0; i < total; i++) add(x[i], down[i]);
        }
        double[][] head = s.tiedEmbeddings() ? w.embed() : w.lmHead();
        double loss = 0;
        for (int b = 0; b < rows; b++) {
            int[] labels = batch.labels()[b];
            for (int t = 0; t + 1 < labels.length; t++) {
                int target = labels[t + 1];
                if (target == TrainingBatch.IGNORE) continue;
                double[] logits = linear(head, null, rmsNorm(x[starts[b] + t], w.finalNorm(), s.rmsNormEps()));
                double max = Double.NEGATIVE_INFINITY;
                for (double z : logits) max = Math.max(max, z);
                double sum = 0;
                for (double z : logits) sum += Math.exp(z - max);
                loss += max + Math.log(sum) - logits[target];
            }
        }
        return loss;
    }

    private static double[] attend(LlamaShape s, int layer, double[][] q, double[][] k, double[][] v, int offset, int i) {
        int hd = s.headDim(), group = s.numHeads() / s.numKvHeads(), window = s.slidingWindow(layer);
        double[] out = new double[s.numHeads() * hd];
        for (int head = 0; head < s.numHeads(); head++) {
            int kvHead = head / group;
            double[] scores = new double[i + 1];
            double max = Double.NEGATIVE_INFINITY;
            for (int t = 0; t <= i; t++) {
                if (window != 0 && i - t >= window) { scores[t] = Double.NEGATIVE_INFINITY; continue; }
                double dot = 0;
                for (int j = 0; j < hd; j++) dot += q[offset + i][head * hd + j] * k[offset + t][kvHead * hd + j];
                scores[t] = dot / Math.sqrt(hd);
                max = Math.max(max, scores[t]);
            }
            double sum = 0;
            for (int t = 0; t <= i; t++) { scores[t] = Math.exp(scores[t] - max); sum += scores[t]; }
            for (int t = 0; t <= i; t++) {
                for (int j = 0; j < hd; j++) out[head * hd + j] += scores[t] / sum * v[offset + t][kvHead * hd + j];
            }
        }
        return out;
    }

    /** {@code y = W·x + b + scaling·B·A·dropout(x)} for every token. */
    private static double[][] project(LlamaShape s, Map<String, Adapter> adapters, int layer, Projection p,
                                      double[][] w, double[] bias, double[][] x, long batchSeed) {
        double[][] y = new double[x.length][];
        for (int i = 0; i < x.length; i++) y[i] = linear(w, bias, x[i]);
        Adapter ad = adapters.get(p.path(layer));
        if (ad == null) return y;
        long seed = DropoutHash.mix(batchSeed, (long) layer * Projection.values().length + p.ordinal());
        float pDrop = (float) ad.dropout();
        double keep = pDrop == 0 ? 1 : (float) (1.0 / (1.0 - pDrop));
        int in = x[0].length;
        for (int i = 0; i < x.length; i++) {
            double[] dropped = new double[in];
            for (int j = 0; j < in; j++) {
                boolean drop = pDrop > 0 && DropoutHash.uniform(seed, (long) i * in + j) < pDrop;
                dropped[j] = drop ? 0 : x[i][j] * keep;
            }
            double[] hidden = linear(ad.a(), null, dropped);
            double[] delta = linear(ad.b(), null, hidden);
            for (int o = 0; o < delta.length; o++) y[i][o] += ad.scaling() * delta[o];
        }
        return y;
    }

    static double[] rmsNorm(double[] x, double[] w, double eps) {
        double ss = 0;
        for (double e : x) ss += e * e;
        double inv = 1 / Math.sqrt(ss / x.length + eps);
        double[] out = new double[x.length];
        for (int j = 0; j < x.length; j++) out[j] = w[j] * x[j] * inv;
        return out;
    }

    static double[] linear(double[][] w, double[] bias, double[] x) {
        double[] out = new double[w.length];
        for (int r = 0; r < w.length; r++) {
            double acc = bias == null ? 0 : bias[r];
            for (int j = 0; j < x.length; j++) acc += w[r][j] * x[j];
            out[r] = acc;
        }
        return out;
    }

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
