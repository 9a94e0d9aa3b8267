package dev.lora4j.lora;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.lora4j.backend.Backend;
import dev.lora4j.backend.Backends;
import dev.lora4j.backend.HostConversions;
import dev.lora4j.io.ComparisonMain;
import dev.lora4j.io.ModelFolder;
import dev.lora4j.io.SafetensorsFile;
import dev.lora4j.io.SafetensorsWriter;
import dev.lora4j.io.TensorInfo;
import dev.lora4j.model.FineTuneMethod;
import dev.lora4j.model.LossSum;
import dev.lora4j.model.TrainableLlama;
import dev.lora4j.model.TrainableParameter;
import dev.lora4j.model.TrainableParameterReport;
import dev.lora4j.model.TrainingBatch;
import dev.lora4j.tensor.DType;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeSet;

/**
 * Checks lora4j's LoRA against PEFT on the model folders and adapters {@code tools/compare_peft.py prepare} wrote
 * (the script documents the three checks and the commands):
 * <ul>
 *   <li>(a) a PEFT adapter loads and gives PEFT's logits;</li>
 *   <li>(c) one training step on the same batch gives PEFT's summed loss and gradients (written beside, under PEFT's keys);</li>
 *   <li>(b) lora4j trains and saves an adapter, with its logits, for {@code compare_peft.py verify} to load in PEFT.</li>
 * </ul>
 * <pre>
 *   java ... dev.lora4j.lora.PeftComparison EXPECTED_JSON [DEVICES] [RESULTS_JSON]
 * </pre>
 * DEVICES is a comma-separated list (default {@code cpu}); the adapter of (b) comes from the first. Prints one row
 * per check and exits with status 1 when any fails.
 *
 * <p>Tolerances: the CPU backend computes in F32 as PyTorch's CPU does, with another summation order: logits
 * 1e-4, loss 1e-5 relative, each gradient tensor 1e-4 of its largest element. CUDA (cuBLASLt, F32 weights and
 * adapters): logits 1e-3, loss 1e-4 relative, gradients 1e-3 of the largest element.
 */
public final class PeftComparison {

    /** One check on one device. */
    public record Row(String device, String model, String check, double value, double tolerance, boolean pass, String note) {}

    private PeftComparison() {}

    public static void main(String[] args) throws IOException {
        ComparisonMain.main(args, "PeftComparison", "peft-results.json", PeftComparison::run, PeftComparison::printTable, PeftComparison::json, Row::pass);
    }

    public static List<Row> run(Path expectedJson, List<String> devices) throws IOException {
        JsonNode root = new ObjectMapper().readTree(expectedJson.toFile());
        Path dir = expectedJson.toAbsolutePath().getParent();
        List<Row> rows = new ArrayList<>();
        try (SafetensorsFile expected = SafetensorsFile.open(dir.resolve(root.path("tensors_file").asText()))) {
            boolean first = true;
            for (String device : devices) {
                List<String> notices = new ArrayList<>();
                try (Backend backend = Backends.open(device.trim(), notices::add)) {
                    if (!backend.name().equals(device.trim())) {
                        rows.add(new Row(device, "-", "device", Double.NaN, 0, false,
                                "device unavailable: " + String.join("; ", notices)));
                        continue;
                    }
                    for (JsonNode c : root.path("cases")) {
                        rows.addAll(compareCase(backend, dir, c, expected, first));
                    }
                }
                first = false;
            }
        }
        return rows;
    }

    private static List<Row> compareCase(Backend backend, Path dir, JsonNode c, SafetensorsFile expected,
                                         boolean writeAdapter) throws IOException {
        List<Row> rows = new ArrayList<>();
        String name = c.path("name").asText();
        String dev = backend.name();
        boolean cpu = dev.equals("cpu");
        try (ModelFolder folder = ModelFolder.open(dir.resolve(c.path("folder").asText()))) {
            Path peftAdapter = dir.resolve(c.path("peft_adapter").asText());
            try (TrainableLlama model = TrainableLlama.withAdapter(backend, folder, peftAdapter)) {
                // PEFT's print_trainable_parameters() figures for the same configuration
                TrainableParameterReport report = model.trainableParameters();
                boolean countsMatch = report.trainable() == c.path("trainable_params").asLong()
                        && report.all() == c.path("all_params").asLong();
                rows.add(new Row(dev, name, "parameter counts", report.trainable(), 0, countsMatch, report
                        + (countsMatch ? "" : " (PEFT: " + c.path("trainable_params").asLong() + " of "
                        + c.path("all_params").asLong() + ")")));

                // (a) logits of the PEFT adapter
                int[] prompt = ints(c.path("prompt"));
                float[] ours = model.logits(prompt);
                float[] theirs = floats(expected, c.path("logits").asText(), ours.length);
                double diff = maxAbsDiff(ours, theirs);
                double tol = cpu ? 1e-4 : 1e-3;
                rows.add(new Row(dev, name, "(a) PEFT adapter logits", diff, tol, diff <= tol,
                        String.format(Locale.ROOT, "max |logit| %.2f", maxAbs(theirs))));

                // (c) one training step: loss and gradients
                TrainingBatch batch = batch(c.path("batch"));
                model.zeroGrad();
                LossSum loss = model.forwardBackward(batch, 1f);
                double refLoss = c.path("loss_sum").asDouble();
                double lossTol = (cpu ? 1e-5 : 1e-4) * Math.abs(refLoss);
                boolean tokensMatch = loss.tokens() == c.path("tokens").asLong();
                rows.add(new Row(dev, name, "(c) summed loss", Math.abs(loss.sum() - refLoss), lossTol,
                        tokensMatch && Math.abs(loss.sum() - refLoss) <= lossTol,
                        String.format(Locale.ROOT, "lora4j %.6f, PEFT %.6f over %d tokens%s", loss.sum(), refLoss,
                                loss.tokens(), tokensMatch ? "" : " (PEFT: " + c.path("tokens").asLong() + " tokens)")));
                rows.addAll(compareGradients(backend, model, c, expected, dir.resolve(name), cpu));
            }
            if (writeAdapter) rows.add(writeLora4jAdapter(backend, folder, dir, c));
        }
        return rows;
    }

    private static List<Row> compareGradients(Backend backend, TrainableLlama model, JsonNode c, SafetensorsFile expected,
                                              Path caseDir, boolean cpu) throws IOException {
        String dev = backend.name(), name = c.path("name").asText();
        String prefix = c.path("grad_prefix").asText();
        TreeSet<String> peftKeys = new TreeSet<>();
        for (JsonNode k : c.path("grad_keys")) peftKeys.add(k.asText());
        Map<String, float[]> ours = new LinkedHashMap<>();
        SafetensorsWriter writer = new SafetensorsWriter().metadata("format", "pt");
        for (TrainableParameter p : model.parameters()) {
            float[] g = backend.toFloats(p.grad());
            ours.put(p.name(), g);
            writer.add(p.name(), DType.F32, p.grad().shape(), MemorySegment.ofArray(g));
        }
        Files.createDirectories(caseDir);
        writer.writeTo(caseDir.resolve("lora4j_grads_" + dev + ".safetensors"));

        List<Row> rows = new ArrayList<>();
        TreeSet<String> missing = new TreeSet<>(peftKeys);
        missing.removeAll(ours.keySet());
        TreeSet<String> extra = new TreeSet<>(ours.keySet());
        extra.removeAll(peftKeys);
        rows.add(new Row(dev, name, "(c) gradient keys", ours.size(), 0, missing.isEmpty() && extra.isEmpty(),
                ours.size() + " tensors" + (missing.isEmpty() ? "" : "; only PEFT has " + missing)
                        + (extra.isEmpty() ? "" : "; only lora4j has " + extra)));
        double worst = 0;
        String worstKey = "";
        for (Map.Entry<String, float[]> e : ours.entrySet()) {
            if (!peftKeys.contains(e.getKey())) continue;
            float[] theirs = floats(expected, prefix + e.getKey(), e.getValue().length);
            double scale = Math.max(maxAbs(theirs), 1e-6);
            double rel = maxAbsDiff(e.getValue(), theirs) / scale;
            if (rel > worst) {
                worst = rel;
                worstKey = e.getKey();
            }
        }
        double tol = cpu ? 1e-4 : 1e-3;
        rows.add(new Row(dev, name, "(c) gradients", worst, tol, worst <= tol,
                "worst max|dg|/max|g|" + (worstKey.isEmpty() ? "" : " at " + worstKey)));
        return rows;
    }

    /** (b): a lora4j adapter with random B, one SGD step, saved in PEFT's format with the logits it gives. */
    private static Row writeLora4jAdapter(Backend backend, ModelFolder folder, Path dir, JsonNode c) throws IOException {
        String name = c.path("name").asText();
        JsonNode cfg = c.path("lora4j_adapter_config");
        LoraConfig config = LoraConfig.parseAdapterConfig(cfg.toString(), "expected.json, case " + name + ", lora4j_adapter_config");
        Path adapterDir = dir.resolve(c.path("lora4j_adapter").asText());
        int[] prompt = ints(c.path("prompt"));
        float[] logits;
        try (TrainableLlama model = TrainableLlama.create(backend, folder, new FineTuneMethod.Lora(config), 7)) {
            TrainingBatch batch = batch(c.path("batch"));
            model.zeroGrad();
            model.forwardBackward(batch, 1f / batch.targetCount());
            for (TrainableParameter p : model.parameters()) {
                backend.scale(p.grad(), -0.5f);
                backend.add(p.value(), p.grad());
            }
            model.saveAdapter(adapterDir);
            logits = model.logits(prompt);
        }
        int vocab = logits.length / prompt.length;
        new SafetensorsWriter().metadata("format", "pt")
                .add("prompt", DType.I32, new long[]{prompt.length}, MemorySegment.ofArray(prompt))
                .add("logits", DType.F32, new long[]{prompt.length, vocab}, MemorySegment.ofArray(logits))
                .writeTo(dir.resolve(c.path("lora4j_logits").asText()));
        // The saved adapter must load back to the same model here too.
        try (TrainableLlama reloaded = TrainableLlama.withAdapter(backend, folder, adapterDir)) {
            double diff = maxAbsDiff(reloaded.logits(prompt), logits);
            double tol = backend.name().equals("cpu") ? 1e-5 : 1e-4;
            return new Row(backend.name(), name, "(b) lora4j adapter written", diff, tol, diff <= tol,
                    "reloaded in lora4j; PEFT loads it in compare_peft.py verify");
        }
    }

    private static TrainingBatch batch(JsonNode b) {
        JsonNode ids = b.path("input_ids"), labels = b.path("labels");
        int[][] in = new int[ids.size()][], lab = new int[labels.size()][];
        for (int i = 0; i < in.length; i++) {
            in[i] = ints(ids.get(i));
            lab[i] = ints(labels.get(i));
        }
        return new TrainingBatch(in, lab, 0);
    }

    private static float[] floats(SafetensorsFile file, String key, int expectedLength) throws IOException {
        TensorInfo info = file.info(key);
        if (info.numel() != expectedLength) {
            throw new IOException(file.path() + ": " + key + " holds " + info.numel() + " values, lora4j has " + expectedLength);
        }
        return HostConversions.toFloats(file.data(key), info.dtype(), info.numel());
    }

    private static int[] ints(JsonNode array) {
        int[] out = new int[array.size()];
        for (int i = 0; i < out.length; i++) out[i] = array.get(i).asInt();
        return out;
    }

    private static double maxAbsDiff(float[] a, float[] b) {
        double m = 0;
        for (int i = 0; i < a.length; i++) m = Math.max(m, Math.abs((double) a[i] - b[i]));
        return m;
    }

    private static double maxAbs(float[] a) {
        double m = 0;
        for (float v : a) m = Math.max(m, Math.abs(v));
        return m;
    }

    private static void printTable(List<Row> rows) {
        System.out.printf(Locale.ROOT, "%-6s %-8s %-28s %11s %9s %-4s %s%n", "device", "model", "check", "value",
                "tolerance", "ok", "note");
        for (Row r : rows) {
            System.out.printf(Locale.ROOT, "%-6s %-8s %-28s %11.3e %9.0e %-4s %s%n", r.device(), r.model(), r.check(),
                    r.value(), r.tolerance(), r.pass() ? "PASS" : "FAIL", r.note());
        }
        long failed = rows.stream().filter(r -> !r.pass()).count();
        System.out.println(failed == 0 ? "all " + rows.size() + " checks pass" : failed + " of " + rows.size() + " checks FAIL");
    }

    /** One row as the results JSON has it. */
    private static Map<String, Object> json(Row r) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("device", r.device());
        m.put("model", r.model());
        m.put("check", r.check());
        m.put("value", Double.isNaN(r.value()) ? null : r.value());
        m.put("tolerance", r.tolerance());
        m.put("pass", r.pass());
        m.put("note", r.note());
        return m;
    }
}
