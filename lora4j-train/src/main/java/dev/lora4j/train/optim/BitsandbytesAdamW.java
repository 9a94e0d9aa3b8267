package dev.lora4j.train.optim;

import dev.lora4j.backend.Backend;
import dev.lora4j.backend.BitsandbytesAdam;
import dev.lora4j.backend.MemoryPlacement;
import dev.lora4j.io.SafetensorsFile;
import dev.lora4j.io.SafetensorsWriter;
import dev.lora4j.io.TensorInfo;
import dev.lora4j.model.TrainableParameter;
import dev.lora4j.quant.DynamicMap;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * bitsandbytes' AdamW ({@code bitsandbytes.optim.AdamW} as transformers builds it for paged_adamw_32bit, adamw_8bit
 * and paged_adamw_8bit; docs/optimizers.md): per parameter, either blockwise 8-bit moments updated by
 * {@link Backend#adamw8bit} or F32 moments updated by {@link Backend#adamw32bit}. With 8-bit states, parameters of
 * fewer than {@link #MIN_8BIT_SIZE} elements keep 32-bit ones, as bitsandbytes' {@code min_8bit_size} decides.
 * Paged: the moments of parameters of at least {@link #PAGED_MIN_ELEMENTS} elements come from
 * {@link Backend#allocatePaged}; smaller ones, and the absmax values, from ordinary memory, as in bitsandbytes.
 * Weight decay applies where {@link TrainableParameter#weightDecay()} says so.
 */
public final class BitsandbytesAdamW implements Optimizer {
    /** bitsandbytes' default min_8bit_size: smaller parameters keep 32-bit states. */
    public static final int MIN_8BIT_SIZE = 4096;
    /** bitsandbytes' get_state_buffer pages the state of parameters of at least 1e5 elements only. */
    public static final long PAGED_MIN_ELEMENTS = 100_000;
    private static final String MIN_8BIT_KEY = "min_8bit_size";

    /** The state of one parameter. */
    private sealed interface State permits EightBit, ThirtyTwoBit {
        List<Tensor> tensors();
    }

    /** Codes of m and v (U8, the parameter's shape) and their per-block absmax (F32). */
    private record EightBit(Tensor m8, Tensor v8, Tensor absmaxM, Tensor absmaxV) implements State {
        public List<Tensor> tensors() { return List.of(m8, v8, absmaxM, absmaxV); }
    }

    private record ThirtyTwoBit(Tensor m, Tensor v) implements State {
        public List<Tensor> tensors() { return List.of(m, v); }
    }

    private final Backend backend;
    private final List<TrainableParameter> parameters;
    private final AdamW.Hyperparameters hp;
    private final OptimizerType type;
    private final int min8bitSize;
    private final State[] states;
    private Tensor codeSigned, codeUnsigned; // the dynamic maps, when some parameter has 8-bit states
    private long step;

    /**
     * The optimizer {@code type} (a bitsandbytes one) over F32 parameters with F32 gradients; {@code min8bitSize} is
     * bitsandbytes' min_8bit_size ({@link #MIN_8BIT_SIZE} unless a test wants small tensors in 8 bits).
     */
    public BitsandbytesAdamW(Backend backend, List<TrainableParameter> parameters, AdamW.Hyperparameters hp,
                             OptimizerType type, int min8bitSize) {
        if (!type.bitsandbytes()) throw new IllegalArgumentException(type + " is not a bitsandbytes optimizer");
        if (min8bitSize < 0) throw new IllegalArgumentException("min_8bit_size must be >= 0, got " + min8bitSize);
        this.backend = backend;
        this.parameters = List.copyOf(parameters);
        this.hp = hp;
        this.type = type;
        this.min8bitSize = min8bitSize;
        this.states = new State[this.parameters.size()];
        try {
            for (int i = 0; i < states.length; i++) {
                TrainableParameter p = this.parameters.get(i);
                if (p.value().dtype() != DType.F32 || p.grad().dtype() != DType.F32) {
                    throw new IllegalArgumentException("parameter " + p.name() + " is " + p.value().dtype() + " with a "
                            + p.grad().dtype() + " gradient; " + type + " updates F32 parameters");
                }
                states[i] = newState(p);
            }
        } catch (RuntimeException | Error e) {
            close();
            throw e;
        }
    }

    private State newState(TrainableParameter p) {
        long n = p.numel();
        boolean paged = type.paged() && n >= PAGED_MIN_ELEMENTS;
        List<Tensor> made = new ArrayList<>();
        try {
            if (!eightBit(n)) {
                made.add(moment(DType.F32, paged, p));
                made.add(moment(DType.F32, paged, p));
                return new ThirtyTwoBit(made.get(0), made.get(1));
            }
            if (codeSigned == null) {
                codeSigned = backend.fromFloats(DynamicMap.signed(), DType.F32, BitsandbytesAdam.CODES);
                codeUnsigned = backend.fromFloats(DynamicMap.unsigned(), DType.F32, BitsandbytesAdam.CODES);
            }
            made.add(moment(DType.U8, paged, p));
            made.add(moment(DType.U8, paged, p));
            made.add(backend.allocate(DType.F32, BitsandbytesAdam.blocks(n)));
            made.add(backend.allocate(DType.F32, BitsandbytesAdam.blocks(n)));
            return new EightBit(made.get(0), made.get(1), made.get(2), made.get(3));
        } catch (RuntimeException | Error e) {
            for (Tensor t : made) t.close();
            throw e;
        }
    }

    private Tensor moment(DType dtype, boolean paged, TrainableParameter p) {
        return paged ? backend.allocatePaged(dtype, p.value().shape()) : backend.allocate(dtype, p.value().shape());
    }

    private boolean eightBit(long elements) {
        return type.eightBit() && elements >= min8bitSize;
    }

    @Override
    public OptimizerType type() {
        return type;
    }

    @Override
    public AdamW.Hyperparameters hyperparameters() {
        return hp;
    }

    @Override
    public long steps() {
        return step;
    }

    /** How many parameters have 8-bit states. */
    public int eightBitParameters() {
        int n = 0;
        for (State s : states) if (s instanceof EightBit) n++;
        return n;
    }

    @Override
    public void step(double lr) {
        step++;
        float beta1 = (float) hp.beta1(), beta2 = (float) hp.beta2(), eps = (float) hp.eps();
        for (int i = 0; i < states.length; i++) {
            TrainableParameter p = parameters.get(i);
            float decay = p.weightDecay() ? (float) hp.weightDecay() : 0f;
            switch (states[i]) {
                case EightBit e -> backend.adamw8bit(p.value(), p.grad(), e.m8(), e.v8(), e.absmaxM(), e.absmaxV(),
                        codeSigned, codeUnsigned, (float) lr, beta1, beta2, eps, decay, step);
                case ThirtyTwoBit t -> backend.adamw32bit(p.value(), p.grad(), t.m(), t.v(), (float) lr, beta1, beta2,
                        eps, decay, step);
            }
        }
    }

    @Override
    public long stateBytes() {
        long n = 0;
        for (Map.Entry<MemoryPlacement, Long> e : stateMemory().entrySet()) {
            if (e.getKey() != MemoryPlacement.MAPPED_HOST) n += e.getValue();
        }
        return n;
    }

    @Override
    public Map<MemoryPlacement, Long> stateMemory() {
        Map<MemoryPlacement, Long> bytes = new TreeMap<>();
        for (Tensor t : allTensors()) bytes.merge(backend.placement(t), t.byteSize(), Long::sum);
        return bytes;
    }

    @Override
    public String describe() {
        int eight = eightBitParameters();
        String states = !type.eightBit() ? "" : eight == this.states.length
                ? "; 8-bit states for all " + eight + " parameters"
                : "; 8-bit states for " + eight + " of " + this.states.length + " parameters (those of fewer than "
                        + min8bitSize + " elements keep 32-bit states, as bitsandbytes' min_8bit_size)";
        return Optimizer.super.describe() + states;
    }

    // ---- checkpoints -------------------------------------------------------------------------------------

    /**
     * Writes each parameter's state under bitsandbytes' names, {@code <parameter>.state1} and {@code .state2} (U8
     * codes or F32 moments) and, for 8-bit states, {@code .absmax1} and {@code .absmax2}; the dynamic maps as
     * {@code qmap1} and {@code qmap2}; the step count, the optimizer's name and min_8bit_size in the metadata.
     */
    @Override
    public void save(Path file) throws IOException {
        try (Arena arena = Arena.ofConfined()) {
            SafetensorsWriter w = new SafetensorsWriter().metadata("format", "pt")
                    .metadata(AdamW.STEP_KEY, Long.toString(step)).metadata(AdamW.OPTIM_KEY, type.configName())
                    .metadata(MIN_8BIT_KEY, Integer.toString(min8bitSize));
            for (int i = 0; i < states.length; i++) {
                String name = parameters.get(i).name();
                List<Tensor> ts = states[i].tensors();
                for (int k = 0; k < ts.size(); k++) add(w, arena, name + STATE_NAMES[k], ts.get(k));
            }
            if (codeSigned != null) {
                add(w, arena, "qmap1", codeSigned);
                add(w, arena, "qmap2", codeUnsigned);
            }
            w.writeTo(file);
        }
    }

    private static final String[] STATE_NAMES = {".state1", ".state2", ".absmax1", ".absmax2"};

    private void add(SafetensorsWriter w, Arena arena, String name, Tensor t) {
        MemorySegment s = arena.allocate(Math.max(1, t.byteSize()), 64).asSlice(0, t.byteSize());
        backend.copyToHost(t, s);
        w.add(name, t.dtype(), t.shape(), s);
    }

    @Override
    public void load(Path file) throws IOException {
        try (SafetensorsFile f = SafetensorsFile.open(file)) {
            AdamW.requireOptimizer(file, f.metadata().get(AdamW.OPTIM_KEY), type);
            long savedStep;
            try {
                savedStep = Long.parseLong(f.metadata().get(AdamW.STEP_KEY));
            } catch (NumberFormatException | NullPointerException e) {
                throw new IOException(file + ": no optimizer step count in its metadata (\"step\"); it was not written by lora4j");
            }
            String savedMin = f.metadata().get(MIN_8BIT_KEY);
            if (savedMin != null && !savedMin.equals(Integer.toString(min8bitSize))) {
                throw new IOException(file + " was written with min_8bit_size " + savedMin + ", this optimizer uses " + min8bitSize);
            }
            int expected = codeSigned == null ? 0 : 2;
            for (State s : states) expected += s.tensors().size();
            if (f.names().size() != expected) {
                throw new IOException(file + " holds " + f.names().size() + " tensors, but this model's " + type
                        + " optimizer has " + expected + ": the checkpoint belongs to a different configuration");
            }
            if (codeSigned != null) {
                requireSameMap(f, file, "qmap1", codeSigned);
                requireSameMap(f, file, "qmap2", codeUnsigned);
            }
            for (int i = 0; i < states.length; i++) {
                String name = parameters.get(i).name();
                List<Tensor> ts = states[i].tensors();
                for (int k = 0; k < ts.size(); k++) restore(f, file, name + STATE_NAMES[k], ts.get(k));
            }
            step = savedStep;
        }
    }

    private void requireSameMap(SafetensorsFile f, Path file, String name, Tensor map) throws IOException {
        if (!f.contains(name)) throw new IOException(file + " has no tensor " + name + " (the dynamic map of its 8-bit states)");
        float[] saved = f.data(name).toArray(ValueLayout.JAVA_FLOAT_UNALIGNED);
        if (!Arrays.equals(saved, backend.toFloats(map))) {
            throw new IOException(file + ": its " + name + " is not the dynamic map this optimizer quantizes with; its 8-bit"
                    + " states cannot be resumed exactly");
        }
    }

    private void restore(SafetensorsFile f, Path file, String name, Tensor into) throws IOException {
        if (!f.contains(name)) {
            throw new IOException(file + " has no tensor " + name + ": the checkpoint belongs to a different model or configuration");
        }
        TensorInfo info = f.info(name);
        if (info.dtype() != into.dtype() || !Arrays.equals(info.shape(), into.shape())) {
            throw new IOException(file + ": " + name + " is " + info.dtype() + Arrays.toString(info.shape()) + " but this"
                    + " optimizer needs " + into.dtype() + Arrays.toString(into.shape()));
        }
        try (Tensor t = backend.upload(f.data(name), into.dtype(), into.dtype(), into.shape())) {
            backend.copy(t, into);
        }
    }

    /** A parameter's state on the host, for tests: state1, state2 (codes or moments) and, for 8-bit states, absmax1 and absmax2, as bytes. */
    public List<byte[]> hostState(String parameterName) {
        for (int i = 0; i < states.length; i++) {
            if (!parameters.get(i).name().equals(parameterName)) continue;
            List<byte[]> out = new ArrayList<>();
            try (Arena arena = Arena.ofConfined()) {
                for (Tensor t : states[i].tensors()) {
                    MemorySegment s = arena.allocate(Math.max(1, t.byteSize()), 64).asSlice(0, t.byteSize());
                    backend.copyToHost(t, s);
                    out.add(s.toArray(ValueLayout.JAVA_BYTE));
                }
            }
            return out;
        }
        throw new IllegalArgumentException("no parameter " + parameterName);
    }

    private List<Tensor> allTensors() {
        List<Tensor> all = new ArrayList<>();
        for (State s : states) if (s != null) all.addAll(s.tensors());
        if (codeSigned != null) all.add(codeSigned);
        if (codeUnsigned != null) all.add(codeUnsigned);
        return all;
    }

    @Override
    public void close() {
        for (Tensor t : allTensors()) t.close();
        Arrays.fill(states, null);
        codeSigned = null;
        codeUnsigned = null;
    }
}
