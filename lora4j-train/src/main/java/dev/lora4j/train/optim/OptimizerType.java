package dev.lora4j.train.optim;

import dev.lora4j.backend.BitsandbytesAdam;

import java.util.Locale;

/**
 * The optimizers, by the names transformers' TrainingArguments gives them ({@code optim}); docs/optimizers.md says
 * what each computes and where it comes from.
 */
public enum OptimizerType {
    /** torch.optim.AdamW, F32 moments. */
    ADAMW_TORCH("adamw_torch", false, false),
    /** bitsandbytes' AdamW with 32-bit states in paged memory. */
    PAGED_ADAMW_32BIT("paged_adamw_32bit", false, true),
    /** bitsandbytes' AdamW with blockwise 8-bit states (32-bit for small tensors). */
    ADAMW_8BIT("adamw_8bit", true, false),
    /** The same, its states in paged memory. */
    PAGED_ADAMW_8BIT("paged_adamw_8bit", true, true);

    /** Other names transformers accepts for these: its fused torch AdamW computes what adamw_torch does. */
    private static final String[][] ALIASES = {{"adamw_torch_fused", "adamw_torch"}, {"adamw_bnb_8bit", "adamw_8bit"}};

    private final String configName;
    private final boolean eightBit, paged;

    OptimizerType(String configName, boolean eightBit, boolean paged) {
        this.configName = configName;
        this.eightBit = eightBit;
        this.paged = paged;
    }

    /** The name in configurations and checkpoints: adamw_torch, paged_adamw_32bit, adamw_8bit, paged_adamw_8bit. */
    public String configName() {
        return configName;
    }

    /** Whether parameters of at least {@link BitsandbytesAdamW#MIN_8BIT_SIZE} elements get 8-bit states. */
    public boolean eightBit() {
        return eightBit;
    }

    /** Whether states of large parameters go to paged memory. */
    public boolean paged() {
        return paged;
    }

    /** Whether bitsandbytes defines it (every type but adamw_torch). */
    public boolean bitsandbytes() {
        return this != ADAMW_TORCH;
    }

    /**
     * The type a name stands for (case and surrounding blanks ignored), aliases included. An unknown name is an
     * IllegalArgumentException that lists the names there are.
     */
    public static OptimizerType parse(String name) {
        String n = name == null ? "" : name.trim().toLowerCase(Locale.ROOT);
        for (String[] alias : ALIASES) if (alias[0].equals(n)) n = alias[1];
        for (OptimizerType t : values()) if (t.configName.equals(n)) return t;
        throw new IllegalArgumentException("optim must be one of adamw_torch, paged_adamw_32bit, adamw_8bit or"
                + " paged_adamw_8bit (also accepted: adamw_torch_fused for adamw_torch, adamw_bnb_8bit for adamw_8bit);"
                + " got \"" + name + "\"");
    }

    /**
     * The bytes of optimizer state a parameter of {@code elements} elements takes: two F32 moments, or with 8-bit
     * states two bytes per element and two F32 absmax values per block of 256 elements.
     */
    public long stateBytes(long elements) {
        if (eightBit && elements >= BitsandbytesAdamW.MIN_8BIT_SIZE) {
            return 2 * elements + 2 * 4 * BitsandbytesAdam.blocks(elements);
        }
        return 2 * 4 * elements;
    }

    @Override
    public String toString() {
        return configName;
    }
}
