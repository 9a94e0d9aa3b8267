package dev.lora4j.train.optim;

import dev.lora4j.backend.AdamwTensors;
import dev.lora4j.backend.Backend;
import dev.lora4j.backend.MemoryPlacement;
import dev.lora4j.io.SafetensorsFile;
import dev.lora4j.io.SafetensorsWriter;
import dev.lora4j.io.TensorInfo;
import dev.lora4j.model.TrainableParameter;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * torch.optim.AdamW over a model's trainable parameters, with transformers' Trainer defaults (betas 0.9 and 0.999,
 * eps 1e-8) and its parameter groups: weight decay only where {@link TrainableParameter#weightDecay()} says so (not
 * biases and norm weights). The moments are tensors of each parameter's dtype (F32, or BF16 for full fine-tuning in
 * BF16, as torch keeps a bfloat16 parameter's state) on the parameters' backend, zero until the first step;
 * {@link Backend#adamwAll} does the update, counting steps from 1 for the bias corrections.
 */
public final class AdamW implements Optimizer {
    /** The key of the step count in optimizer.safetensors' metadata. */
    static final String STEP_KEY = "step";
    /** The key of the optimizer's name ({@link OptimizerType#configName()}) in optimizer.safetensors' metadata. */
    static final String OPTIM_KEY = "optim";

    public record Hyperparameters(double beta1, double beta2, double eps, double weightDecay) {
        public Hyperparameters {
            if (!(beta1 >= 0 && beta1 < 1)) throw new IllegalArgumentException("adam_beta1 must be in [0, 1), got " + beta1);
            if (!(beta2 >= 0 && beta2 < 1)) throw new IllegalArgumentException("adam_beta2 must be in [0, 1), got " + beta2);
            if (!(eps > 0)) throw new IllegalArgumentException("adam_epsilon must be positive, got " + eps);
            if (!(weightDecay >= 0)) throw new IllegalArgumentException("weight_decay must be >= 0, got " + weightDecay);
        }

        /** TrainingArguments' defaults: betas (0.9, 0.999), eps 1e-8, weight_decay 0. */
        public static Hyperparameters defaults() {
            return new Hyperparameters(0.9, 0.999, 1e-8, 0.0);
        }
    }

    private final Backend backend;
    private final List<TrainableParameter> parameters;
    private final Hyperparameters hp;
    private final Tensor[] m, v;
    private long step;

    public AdamW(Backend backend, List<TrainableParameter> parameters, Hyperparameters hp) {
        this.backend = backend;
        this.parameters = List.copyOf(parameters);
        this.hp = hp;
        this.m = new Tensor[parameters.size()];
        this.v = new Tensor[parameters.size()];
        try {
            for (int i = 0; i < m.length; i++) {
                TrainableParameter p = this.parameters.get(i);
                if (!updatable(p.value().dtype()) || !updatable(p.grad().dtype())) {
                    throw new IllegalArgumentException("parameter " + p.name() + " is " + p.value().dtype() + " with a "
                            + p.grad().dtype() + " gradient; AdamW updates F32 or BF16 parameters");
                }
                m[i] = backend.allocate(p.value().dtype(), p.value().shape());
                v[i] = backend.allocate(p.value().dtype(), p.value().shape());
            }
        } catch (RuntimeException | Error e) {
            close();
            throw e;
        }
    }

    private static boolean updatable(DType t) {
        return t == DType.F32 || t == DType.BF16;
    }

    @Override
    public OptimizerType type() {
        return OptimizerType.ADAMW_TORCH;
    }

    @Override
    public long steps() {
        return step;
    }

    @Override
    public Hyperparameters hyperparameters() {
        return hp;
    }

    @Override
    public void step(double lr) {
        step++;
        // Every parameter in one call: the backend may update them all in one pass (see Backend.adamwAll).
        List<AdamwTensors> all = new ArrayList<>(m.length);
        for (int i = 0; i < m.length; i++) {
            TrainableParameter p = parameters.get(i);
            double decay = p.weightDecay() ? hp.weightDecay() : 0.0;
            all.add(new AdamwTensors(p.value(), p.grad(), m[i], v[i], (float) decay));
        }
        backend.adamwAll(all, (float) lr, (float) hp.beta1(), (float) hp.beta2(), (float) hp.eps(), step);
    }

    /** Bytes the moments take on the backend. */
    @Override
    public long stateBytes() {
        long n = 0;
        for (Tensor t : m) if (t != null) n += 2 * t.byteSize();
        return n;
    }

    @Override
    public Map<MemoryPlacement, Long> stateMemory() {
        Map<MemoryPlacement, Long> bytes = new TreeMap<>();
        for (int i = 0; i < m.length; i++) {
            if (m[i] != null) bytes.merge(backend.placement(m[i]), m[i].byteSize() + v[i].byteSize(), Long::sum);
        }
        return bytes;
    }

    /**
     * Writes the moments as {@code <parameter>.exp_avg} and {@code <parameter>.exp_avg_sq} (torch's state names),
     * in their dtype, and the step count and the optimizer's name in the metadata.
     */
    @Override
    public void save(Path file) throws IOException {
        try (Arena arena = Arena.ofConfined()) {
            SafetensorsWriter w = new SafetensorsWriter().metadata("format", "pt").metadata(STEP_KEY, Long.toString(step))
                    .metadata(OPTIM_KEY, type().configName());
            for (int i = 0; i < m.length; i++) {
                String name = parameters.get(i).name();
                w.add(name + ".exp_avg", m[i].dtype(), m[i].shape(), host(arena, m[i]));
                w.add(name + ".exp_avg_sq", v[i].dtype(), v[i].shape(), host(arena, v[i]));
            }
            w.writeTo(file);
        }
    }

    private MemorySegment host(Arena arena, Tensor t) {
        MemorySegment s = arena.allocate(Math.max(1, t.byteSize()), 64).asSlice(0, t.byteSize());
        backend.copyToHost(t, s);
        return s;
    }

    /** Restores what {@link #save} wrote; the file must hold exactly these parameters' moments, in these shapes. */
    @Override
    public void load(Path file) throws IOException {
        try (SafetensorsFile f = SafetensorsFile.open(file)) {
            requireOptimizer(file, f.metadata().get(OPTIM_KEY), type());
            String stepText = f.metadata().get(STEP_KEY);
            long savedStep;
            try {
                savedStep = Long.parseLong(stepText);
            } catch (NumberFormatException | NullPointerException e) {
                throw new IOException(file + ": no optimizer step count in its metadata (\"step\"); it was not written by lora4j's AdamW");
            }
            int expected = 2 * m.length;
            if (f.names().size() != expected) {
                throw new IOException(file + " holds " + f.names().size() + " tensors, but this model's optimizer has "
                        + expected + " (two per trainable parameter): the checkpoint belongs to a different configuration");
            }
            for (int i = 0; i < m.length; i++) {
                String name = parameters.get(i).name();
                restore(f, file, name + ".exp_avg", m[i]);
                restore(f, file, name + ".exp_avg_sq", v[i]);
            }
            step = savedStep;
        }
    }

    /** A checkpoint's optimizer must be this run's ({@code saved} is null in checkpoints of lora4j before optim existed: adamw_torch). */
    static void requireOptimizer(Path file, String saved, OptimizerType expected) throws IOException {
        String name = saved == null ? OptimizerType.ADAMW_TORCH.configName() : saved;
        if (!name.equals(expected.configName())) {
            throw new IOException(file + " holds the state of optimizer " + name + ", but this run uses " + expected.configName()
                    + ": resume with optim " + name + ", or start a new run in another output_dir");
        }
    }

    private void restore(SafetensorsFile f, Path file, String name, Tensor into) throws IOException {
        if (!f.contains(name)) {
            throw new IOException(file + " has no tensor " + name + ": the checkpoint belongs to a different model or configuration");
        }
        TensorInfo info = f.info(name);
        if (info.dtype() != into.dtype() || !Arrays.equals(info.shape(), into.shape())) {
            throw new IOException(file + ": " + name + " is " + info.dtype() + Arrays.toString(info.shape()) + " but this"
                    + " optimizer needs " + into.dtype() + Arrays.toString(into.shape())
                    + (info.dtype() != into.dtype() ? " (the checkpoint was trained in another precision)" : ""));
        }
        try (Tensor t = backend.upload(f.data(name), into.dtype(), into.dtype(), into.shape())) {
            backend.copy(t, into);
        }
    }

    /** The moments of a parameter on the host, for tests: [exp_avg, exp_avg_sq]. */
    public Map<String, float[]> moments(String parameterName) {
        for (int i = 0; i < m.length; i++) {
            if (parameters.get(i).name().equals(parameterName)) {
                return Map.of("exp_avg", backend.toFloats(m[i]), "exp_avg_sq", backend.toFloats(v[i]));
            }
        }
        throw new IllegalArgumentException("no parameter " + parameterName);
    }

    @Override
    public void close() {
        List<Tensor> all = new ArrayList<>();
        for (Tensor t : m) if (t != null) all.add(t);
        for (Tensor t : v) if (t != null) all.add(t);
        for (Tensor t : all) t.close();
        Arrays.fill(m, null);
        Arrays.fill(v, null);
    }
}
