package dev.lora4j.cuda;

/**
 * The per-step scalars of one AdamW update, computed once on the host: in double from the float hyperparameters,
 * then rounded to float, as torch turns its Python-float hyperparameters into the parameter's type. The kernel
 * (optimizer.cu, exact.cuh) applies them to every element with the CPU backend's sequence of float operations.
 */
record AdamwScalars(float decay, float oneMinusBeta1, float beta2, float oneMinusBeta2, float negStepSize,
                    float bias2Sqrt, float eps) {

    static AdamwScalars of(float lr, float beta1, float beta2, float eps, float weightDecay, long step) {
        double biasCorrection1 = 1.0 - Math.pow(beta1, step);
        double biasCorrection2 = 1.0 - Math.pow(beta2, step);
        return new AdamwScalars(
                (float) (1.0 - (double) lr * weightDecay),
                (float) (1.0 - (double) beta1),
                beta2,
                (float) (1.0 - (double) beta2),
                (float) -(lr / biasCorrection1),
                (float) Math.sqrt(biasCorrection2),
                eps);
    }
}
