package dev.lora4j.train;

import dev.lora4j.model.MemoryReport;

import java.nio.file.Path;

/**
 * How a run ended: the steps taken, train_loss (the mean of every step's loss, as transformers reports it), the
 * last eval_loss (NaN without evaluation), the seconds it ran, where the trained adapter or model is, and where the
 * device memory went (also in output_dir as {@value MemoryReport#FILE_NAME}).
 */
public record TrainResult(long globalStep, double trainLoss, double evalLoss, double runtimeSeconds, long tokensSeen, Path output,
                          MemoryReport memory) {}
