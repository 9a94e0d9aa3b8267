package dev.lora4j.lora;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.lora4j.backend.cpu.CpuBackend;
import dev.lora4j.io.ModelConfig;
import dev.lora4j.io.ModelFolder;
import dev.lora4j.io.SafetensorsFile;
import dev.lora4j.io.SafetensorsWriter;
import dev.lora4j.model.FineTuneMethod;
import dev.lora4j.model.LossSum;
import dev.lora4j.model.RandomModelWriter;
import dev.lora4j.model.TrainableLlama;
import dev.lora4j.model.TrainableParameter;
import dev.lora4j.model.TrainableParameterReport;
import dev.lora4j.model.TrainingBatch;
import dev.lora4j.tensor.DType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The comparison's plumbing, with lora4j standing in for PEFT (on the GPU machine compare_peft.py writes these
 * files with PEFT): every check passes against lora4j's own results and fails when a reference value is off.
 */
class PeftComparisonTest {

    @Test
    void passesAgainstItselfAndCatchesAWrongGradient(@TempDir Path dir) throws Exception {
        ModelConfig config = new ModelConfig(List.of("LlamaForCausalLM"), "llama", 97, 32, 48, 2, 4, 2, 8, 1e-5, 10000,
                null, 64, 0, 0, false, false, false, null, List.of(), null, "float32", "silu");
        RandomModelWriter.writeWeightsAndConfig(dir.resolve("llama/model"), config, RandomModelWriter.Options.of(DType.F32, 3), null);
        LoraConfig peftLike = LoraConfig.defaults().withR(4).withLoraAlpha(8).withInitLoraWeights("false")
                .withTargetModules(TargetModules.allLinear()).withModulesToSave(List.of("lm_head"));
        int[] prompt = {5, 9, 13, 2, 77, 31, 8};
        TrainingBatch batch = new TrainingBatch(new int[][]{{1, 2, 3, 4, 5, 6}, {7, 8, 9}},
                new int[][]{{-100, -100, 3, 4, 5, 6}, {7, 8, 9}}, 0);
        ObjectMapper json = new ObjectMapper();
        ObjectNode c = json.createObjectNode();
        SafetensorsWriter tensors = new SafetensorsWriter();
        try (CpuBackend cpu = new CpuBackend(2); ModelFolder folder = ModelFolder.open(dir.resolve("llama/model"));
             TrainableLlama model = TrainableLlama.create(cpu, folder, new FineTuneMethod.Lora(peftLike), 5)) {
            model.saveAdapter(dir.resolve("llama/peft_adapter"));
            tensors.add("llama/logits", DType.F32, new long[]{prompt.length, 97}, MemorySegment.ofArray(model.logits(prompt)));
            LossSum loss = model.forwardBackward(batch, 1f);
            ArrayNode keys = c.putArray("grad_keys");
            for (TrainableParameter p : model.parameters()) {
                float[] g = cpu.toFloats(p.grad());
                if (p.name().endsWith("layers.1.mlp.up_proj.lora_B.weight")) g[3] += 1e-2f * (Math.abs(g[3]) + 1);
                tensors.add("llama/grad/" + p.name(), DType.F32, p.grad().shape(), MemorySegment.ofArray(g));
                keys.add(p.name());
            }
            TrainableParameterReport report = model.trainableParameters();
            c.put("name", "llama").put("folder", "llama/model").put("peft_adapter", "llama/peft_adapter")
                    .put("logits", "llama/logits").put("loss_sum", loss.sum()).put("tokens", loss.tokens())
                    .put("grad_prefix", "llama/grad/").put("trainable_params", report.trainable())
                    .put("all_params", report.all()).put("lora4j_adapter", "llama/lora4j_adapter")
                    .put("lora4j_logits", "llama/lora4j_logits.safetensors");
            c.set("prompt", json.valueToTree(prompt));
            ObjectNode b = c.putObject("batch");
            b.set("input_ids", json.valueToTree(batch.inputIds()));
            b.set("labels", json.valueToTree(batch.labels()));
            c.set("lora4j_adapter_config", json.readTree("{\"r\": 2, \"lora_alpha\": 4, \"use_rslora\": true,"
                    + " \"target_modules\": \".*\\\\.(q|v)_proj\", \"init_lora_weights\": false}"));
        }
        tensors.writeTo(dir.resolve("expected.safetensors"));
        ObjectNode root = json.createObjectNode().put("tensors_file", "expected.safetensors");
        root.putArray("cases").add(c);
        Files.writeString(dir.resolve("expected.json"), root.toString());

        List<PeftComparison.Row> rows = PeftComparison.run(dir.resolve("expected.json"), List.of("cpu"));
        assertThat(rows).extracting(PeftComparison.Row::check).containsExactly("parameter counts",
                "(a) PEFT adapter logits", "(c) summed loss", "(c) gradient keys", "(c) gradients",
                "(b) lora4j adapter written");
        assertThat(rows).filteredOn(r -> !r.check().equals("(c) gradients")).allMatch(PeftComparison.Row::pass);
        PeftComparison.Row grads = rows.stream().filter(r -> r.check().equals("(c) gradients")).findFirst().orElseThrow();
        assertThat(grads.pass()).isFalse();
        assertThat(grads.note()).contains("layers.1.mlp.up_proj.lora_B.weight");

        assertThat(dir.resolve("llama/lora4j_adapter/adapter_config.json")).exists();
        assertThat(dir.resolve("llama/lora4j_grads_cpu.safetensors")).exists();
        try (SafetensorsFile logits = SafetensorsFile.open(dir.resolve("llama/lora4j_logits.safetensors"))) {
            assertThat(logits.info("prompt").dtype()).isEqualTo(DType.I32);
            assertThat(logits.info("logits").shape()).containsExactly(prompt.length, 97);
        }
        assertThat(LoraConfig.readAdapterConfig(dir.resolve("llama/lora4j_adapter/adapter_config.json")).targetModules())
                .isEqualTo(TargetModules.regex(".*\\.(q|v)_proj"));
    }
}
