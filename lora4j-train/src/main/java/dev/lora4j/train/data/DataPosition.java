package dev.lora4j.train.data;

/**
 * Where training is in its data: the epoch (from 0) and how many micro-batches of that epoch are consumed. With the
 * seed this fixes every batch still to come, which is what makes a resumed run identical to an uninterrupted one.
 */
public record DataPosition(long epoch, int batch) {
    public DataPosition {
        if (epoch < 0 || batch < 0) throw new IllegalArgumentException("data position must be non-negative: epoch " + epoch + ", batch " + batch);
    }

    public static final DataPosition START = new DataPosition(0, 0);
}
