package dev.lora4j.train.checkpoint;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.lora4j.train.data.DataPosition;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * {@code trainer_state.json}: transformers' fields (global_step, epoch, max_steps, log_history, best_metric, ...) so
 * that tools reading Hugging Face checkpoints find what they expect, plus a {@code lora4j} section with what an exact
 * resume needs: the data position, the seed, the dataset's fingerprint and the schedule.
 *
 * @param logHistory every logged record so far, as in metrics.jsonl
 * @param trainLossSum the sum of every optimizer step's loss, for the final train_loss average
 */
public record TrainerState(long globalStep, double epoch, long maxSteps, double numTrainEpochs, int loggingSteps,
                           int evalSteps, int saveSteps, int trainBatchSize, Double bestMetric, Long bestGlobalStep,
                           String bestModelCheckpoint, List<JsonNode> logHistory, DataPosition position, long seed,
                           String datasetFingerprint, int datasetSize, int gradientAccumulationSteps, String schedulerType,
                           double learningRate, long warmupSteps, long tokensSeen, double trainLossSum, String method) {

    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    public TrainerState {
        logHistory = List.copyOf(logHistory);
    }

    public String toJson() {
        ObjectNode root = JSON.createObjectNode();
        root.put("global_step", globalStep);
        root.put("epoch", epoch);
        root.put("max_steps", maxSteps);
        root.put("num_train_epochs", numTrainEpochs);
        root.put("logging_steps", loggingSteps);
        root.put("eval_steps", evalSteps);
        root.put("save_steps", saveSteps);
        root.put("train_batch_size", trainBatchSize);
        if (bestMetric == null) root.putNull("best_metric"); else root.put("best_metric", bestMetric);
        if (bestGlobalStep == null) root.putNull("best_global_step"); else root.put("best_global_step", bestGlobalStep);
        root.put("best_model_checkpoint", bestModelCheckpoint);
        ArrayNode history = root.putArray("log_history");
        logHistory.forEach(history::add);
        ObjectNode own = root.putObject("lora4j");
        ObjectNode pos = own.putObject("data_position");
        pos.put("epoch", position.epoch());
        pos.put("batch", position.batch());
        own.put("seed", seed);
        own.put("dataset_fingerprint", datasetFingerprint);
        own.put("dataset_size", datasetSize);
        own.put("gradient_accumulation_steps", gradientAccumulationSteps);
        own.put("lr_scheduler_type", schedulerType);
        own.put("learning_rate", learningRate);
        own.put("warmup_steps", warmupSteps);
        own.put("tokens_seen", tokensSeen);
        own.put("train_loss_sum", trainLossSum);
        own.put("method", method);
        try {
            return JSON.writeValueAsString(root) + "\n";
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("cannot write trainer_state.json", e);
        }
    }

    public void write(Path file) throws IOException {
        Files.writeString(file, toJson(), StandardCharsets.UTF_8);
    }

    public static TrainerState read(Path file) throws IOException {
        JsonNode root;
        try {
            root = JSON.readTree(Files.readString(file, StandardCharsets.UTF_8));
        } catch (JsonProcessingException e) {
            throw new IOException(file + " is not valid JSON: " + e.getOriginalMessage(), e);
        }
        if (root == null || !root.isObject()) throw new IOException(file + " must hold a JSON object");
        JsonNode own = root.get("lora4j");
        if (own == null || !own.isObject()) {
            throw new IOException(file + " has no \"lora4j\" section: the checkpoint was not written by lora4j, which needs"
                    + " its data position and seed to resume exactly");
        }
        Fields f = new Fields(file, root), o = new Fields(file, own);
        JsonNode pos = own.get("data_position");
        if (pos == null || !pos.isObject()) throw new IOException(file + ": lora4j.data_position is missing");
        Fields p = new Fields(file, pos);
        List<JsonNode> history = new ArrayList<>();
        JsonNode h = root.get("log_history");
        if (h != null && h.isArray()) h.forEach(history::add);
        try {
            return new TrainerState(f.longValue("global_step"), f.doubleValue("epoch"), f.longValue("max_steps"),
                    f.doubleValue("num_train_epochs"), (int) f.longValue("logging_steps"), (int) f.longValue("eval_steps"),
                    (int) f.longValue("save_steps"), (int) f.longValue("train_batch_size"),
                    f.optDouble("best_metric"), f.optLong("best_global_step"), f.optString("best_model_checkpoint"), history,
                    new DataPosition(p.longValue("epoch"), (int) p.longValue("batch")), o.longValue("seed"),
                    o.string("dataset_fingerprint"), (int) o.longValue("dataset_size"),
                    (int) o.longValue("gradient_accumulation_steps"), o.string("lr_scheduler_type"),
                    o.doubleValue("learning_rate"), o.longValue("warmup_steps"), o.longValue("tokens_seen"),
                    o.doubleValue("train_loss_sum"), o.string("method"));
        } catch (IllegalArgumentException e) {
            throw new IOException(file + ": " + e.getMessage(), e);
        }
    }

    private record Fields(Path file, JsonNode node) {
        JsonNode get(String name) throws IOException {
            JsonNode n = node.get(name);
            if (n == null || n.isNull()) throw new IOException(file + ": field " + name + " is missing");
            return n;
        }

        long longValue(String name) throws IOException {
            JsonNode n = get(name);
            if (!n.canConvertToLong() || !n.isIntegralNumber()) throw new IOException(file + ": field " + name + " must be an integer, found " + n);
            return n.longValue();
        }

        double doubleValue(String name) throws IOException {
            JsonNode n = get(name);
            if (!n.isNumber()) throw new IOException(file + ": field " + name + " must be a number, found " + n);
            return n.doubleValue();
        }

        String string(String name) throws IOException {
            JsonNode n = get(name);
            if (!n.isTextual()) throw new IOException(file + ": field " + name + " must be a string, found " + n);
            return n.textValue();
        }

        Double optDouble(String name) throws IOException {
            JsonNode n = node.get(name);
            return n == null || n.isNull() ? null : doubleValue(name);
        }

        Long optLong(String name) throws IOException {
            JsonNode n = node.get(name);
            return n == null || n.isNull() ? null : longValue(name);
        }

        String optString(String name) throws IOException {
            JsonNode n = node.get(name);
            return n == null || n.isNull() ? null : string(name);
        }
    }
}
