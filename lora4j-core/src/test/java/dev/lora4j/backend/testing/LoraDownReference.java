package dev.lora4j.backend.testing;

import dev.lora4j.backend.DropoutHash;

/**
 * {@link dev.lora4j.backend.Backend#loraDown} and its gradients in double precision, one scalar loop per output
 * element: the independent reference of the fused implementations. The mask is the contract's definition, element
 * i·k + c of x dropped when {@code DropoutHash.uniform(seed, i·k + c) < p}, kept elements scaled by the exact 1/(1-p).
 * Each result comes with its magnitude, the same sum over the absolute values of its terms, for error bounds.
 */
public final class LoraDownReference {
    private LoraDownReference() {}

    /** Whether each of the first {@code count} elements is dropped. */
    public static boolean[] dropped(long seed, float p, int count) {
        boolean[] d = new boolean[count];
        for (int i = 0; i < count; i++) d[i] = DropoutHash.uniform(seed, i) < p;
        return d;
    }

    /** dropout(x) in double: 0 where dropped, x / (1 - p) elsewhere. */
    public static double[] dropout(float[] x, float p, long seed) {
        boolean[] d = dropped(seed, p, x.length);
        double[] out = new double[x.length];
        for (int i = 0; i < x.length; i++) out[i] = d[i] ? 0 : x[i] / (1.0 - p);
        return out;
    }

    /** hidden[i, j] = scaling · Σ_c dropout(x)[i, c] · a[j, c]; [0] the values, [1] their magnitudes. */
    public static double[][] down(float[] x, float[] a, int n, int k, int r, double scaling, float p, long seed) {
        double[] dx = dropout(x, p, seed);
        double[] out = new double[n * r], mag = new double[n * r];
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < r; j++) {
                double s = 0, m = 0;
                for (int c = 0; c < k; c++) {
                    double t = dx[i * k + c] * a[j * k + c];
                    s += t;
                    m += Math.abs(t);
                }
                out[i * r + j] = scaling * s;
                mag[i * r + j] = Math.abs(scaling) * m;
            }
        }
        return new double[][] {out, mag};
    }

    /** gradA[j, c] = before + scaling · Σ_i dHidden[i, j] · dropout(x)[i, c]; [0] values, [1] magnitudes. */
    public static double[][] gradA(float[] x, float[] dHidden, float[] before, int n, int k, int r, double scaling,
                                   float p, long seed) {
        double[] dx = dropout(x, p, seed);
        double[] out = new double[r * k], mag = new double[r * k];
        for (int j = 0; j < r; j++) {
            for (int c = 0; c < k; c++) {
                double s = 0, m = 0;
                for (int i = 0; i < n; i++) {
                    double t = dHidden[i * r + j] * dx[i * k + c];
                    s += t;
                    m += Math.abs(t);
                }
                out[j * k + c] = before[j * k + c] + scaling * s;
                mag[j * k + c] = Math.abs(before[j * k + c]) + Math.abs(scaling) * m;
            }
        }
        return new double[][] {out, mag};
    }

    /**
     * dX[i, c] = before + (dropped ? 0 : scaling / (1 - p) · Σ_j dHidden[i, j] · a[j, c]) (before null: 0);
     * [0] values, [1] magnitudes.
     */
    public static double[][] dX(float[] dHidden, float[] a, float[] before, int n, int k, int r, double scaling, float p,
                                long seed) {
        boolean[] d = dropped(seed, p, n * k);
        double[] out = new double[n * k], mag = new double[n * k];
        for (int i = 0; i < n; i++) {
            for (int c = 0; c < k; c++) {
                double s = 0, m = 0;
                for (int j = 0; j < r; j++) {
                    double t = dHidden[i * r + j] * (double) a[j * k + c];
                    s += t;
                    m += Math.abs(t);
                }
                double f = d[i * k + c] ? 0 : scaling / (1.0 - p);
                double b = before == null ? 0 : before[i * k + c];
                out[i * k + c] = b + f * s;
                mag[i * k + c] = Math.abs(b) + Math.abs(f) * m;
            }
        }
        return new double[][] {out, mag};
    }
}
