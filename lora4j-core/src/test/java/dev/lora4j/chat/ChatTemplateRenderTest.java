package dev.lora4j.chat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.lora4j.tokenizer.SharedAssets;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * Every chat template renders byte for byte as Python jinja2 does under transformers' settings. The expected
 * outputs come from tools/render_chat_templates.py (expected-renders.json); the real templates come from the
 * shared assets, the feature templates from this package's resources.
 */
class ChatTemplateRenderTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    @TestFactory
    List<DynamicTest> rendersExactlyAsPythonJinja() throws Exception {
        JsonNode expected;
        try (InputStream in = getClass().getResourceAsStream("expected-renders.json")) {
            expected = JSON.readTree(in);
        }
        Map<String, String> sources = new HashMap<>();
        List<DynamicTest> tests = new ArrayList<>();
        for (JsonNode c : expected.get("cases")) {
            String origin = c.get("source").asText();
            String source = sources.computeIfAbsent(origin, ChatTemplateRenderTest::load);
            String name = c.get("template").asText() + " / " + c.get("conversation").asText() + " / generation prompt "
                    + c.get("add_generation_prompt").asBoolean() + (c.get("extra").isEmpty() ? "" : " / " + c.get("extra"));
            tests.add(DynamicTest.dynamicTest(name, () -> check(source, c)));
        }
        return tests;
    }

    private static void check(String source, JsonNode c) {
        List<ChatMessage> messages = new ArrayList<>();
        for (JsonNode m : c.get("messages")) messages.add(new ChatMessage(m.get("role").asText(), m.get("content").asText()));
        ChatTemplate template = ChatTemplate.of(source, text(c.get("bos_token")), text(c.get("eos_token"))).named(c.get("template").asText());
        @SuppressWarnings("unchecked")
        Map<String, Object> extra = JSON.convertValue(c.get("extra"), Map.class);
        boolean generationPrompt = c.get("add_generation_prompt").asBoolean();
        if (c.has("error")) {
            assertThatThrownBy(() -> template.render(messages, generationPrompt, extra))
                    .isInstanceOf(ChatTemplateException.class)
                    .hasMessage("chat template of " + c.get("template").asText() + " refused the conversation: " + c.get("error").asText());
        } else {
            assertThat(template.render(messages, generationPrompt, extra)).isEqualTo(c.get("output").asText());
        }
    }

    private static String text(JsonNode n) {
        return n == null || n.isNull() ? null : n.asText();
    }

    private static String load(String origin) {
        try {
            if (origin.startsWith("resource:")) {
                try (InputStream in = ChatTemplateRenderTest.class.getResourceAsStream(origin.substring("resource:".length()))) {
                    return new String(in.readAllBytes(), StandardCharsets.UTF_8);
                }
            }
            String relative = origin.substring("shared:".length());
            if (relative.endsWith("tokenizer_config.json")) {
                Path p = SharedAssets.require(relative);
                return JSON.readTree(Files.readString(p)).get("chat_template").asText();
            }
            return Files.readString(SharedAssets.require(relative));
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }
}
