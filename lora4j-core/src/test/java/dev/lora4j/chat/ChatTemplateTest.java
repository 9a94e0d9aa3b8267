package dev.lora4j.chat;

import dev.lora4j.tokenizer.SharedAssets;
import dev.lora4j.tokenizer.Tokenizer;
import org.junit.jupiter.api.Test;

import java.time.LocalDate;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class ChatTemplateTest {
    static final String SIMPLE = "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}";

    @Test
    void rendersTheConversationAndTheGenerationPrompt() {
        ChatTemplate t = ChatTemplate.of(SIMPLE, "<s>", "</s>");
        List<ChatMessage> chat = List.of(ChatMessage.system("Be brief."), ChatMessage.user("Hi"));
        assertThat(t.render(chat, true)).isEqualTo("<system>Be brief.\n<user>Hi\n<assistant>");
        assertThat(t.render(chat, false)).isEqualTo("<system>Be brief.\n<user>Hi\n");
    }

    @Test
    void rendersTheChatTemplateOfALlama3TokenizerFolder() {
        Tokenizer tokenizer = Tokenizer.load(SharedAssets.require("tokenizers/llama3"));
        ChatTemplate t = ChatTemplate.of(tokenizer.chatTemplate().orElseThrow(), tokenizer.bosToken(), tokenizer.eosToken());
        String text = t.render(List.of(ChatMessage.user("  Hello!  ")), true);
        assertThat(text).isEqualTo("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
        int[] ids = tokenizer.encode(text, false);
        assertThat(ids).startsWith(128000, 128006).endsWith(128007, 271);
    }

    @Test
    void passesExtraVariablesAsKeywordArgumentsWould() {
        ChatTemplate t = ChatTemplate.of("{{ greeting }} {{ tools|length }} {{ tools[0].name }}{% if flag %}!{% endif %}", null, null);
        assertThat(t.render(List.of(), false, Map.of("greeting", "hello", "tools", List.of(Map.of("name", "search")), "flag", true)))
                .isEqualTo("hello 1 search!");
    }

    @Test
    void leavesTheSpecialTokenVariablesUndefinedWhenTheTokenizerHasNone() {
        ChatTemplate t = ChatTemplate.of("{% if bos_token is defined %}bos{% else %}none{% endif %}", null, "</s>");
        assertThat(t.render(List.of(), false)).isEqualTo("none");
    }

    @Test
    void messageTextIsNeverInterpretedAsTemplate() {
        ChatTemplate t = ChatTemplate.of(SIMPLE, null, null);
        assertThat(t.render(List.of(ChatMessage.user("{{ 7 * 6 }} {% if true %}x{% endif %}")), false))
                .isEqualTo("<user>{{ 7 * 6 }} {% if true %}x{% endif %}\n");
    }

    @Test
    void raiseExceptionBecomesAnExceptionNamingTheTemplate() {
        ChatTemplate t = ChatTemplate.of("{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}ok", null, null);
        assertThatThrownBy(() -> t.render(List.of(ChatMessage.system("x")), true))
                .isInstanceOf(ChatTemplateException.class)
                .hasMessage("chat template refused the conversation: System role not supported");
        assertThatThrownBy(() -> t.named("google/gemma-2-2b-it").render(List.of(ChatMessage.system("x")), true))
                .hasMessage("chat template of google/gemma-2-2b-it refused the conversation: System role not supported");
        assertThat(t.render(List.of(ChatMessage.user("x")), true)).isEqualTo("ok");
    }

    @Test
    void malformedTemplatesAreRefusedWithTheReason() {
        assertThatThrownBy(() -> ChatTemplate.of("{% for m in messages %}{{ m.role ", null, null))
                .isInstanceOf(ChatTemplateException.class).hasMessageContaining("is not valid Jinja").hasMessageContaining("line 1");
        assertThatThrownBy(() -> ChatTemplate.of("{# never closed", null, null).named("x"))
                .hasMessage("chat template is not valid Jinja: comment opened at line 1 is never closed with #}");
        assertThatThrownBy(() -> ChatTemplate.of("{{ 1 + }}", null, null).named("broken").render(List.of(), false))
                .isInstanceOf(ChatTemplateException.class).hasMessageStartingWith("chat template of broken could not be rendered");
    }

    @Test
    void strftimeNowFormatsTheCurrentDate() {
        ChatTemplate t = ChatTemplate.of("{{ strftime_now('%d %b %Y') }}", null, null);
        String before = LocalDate.now().format(DateTimeFormatter.ofPattern("dd MMM yyyy", Locale.ENGLISH));
        String rendered = t.render(List.of(), false);
        String after = LocalDate.now().format(DateTimeFormatter.ofPattern("dd MMM yyyy", Locale.ENGLISH));
        assertThat(rendered).isIn(before, after);
    }

    @Test
    void rendersFromManyThreadsAtOnce() throws Exception {
        ChatTemplate ok = ChatTemplate.of(SIMPLE, null, null);
        ChatTemplate refusing = ChatTemplate.of("{{ raise_exception('no ' ~ messages[0].content) }}", null, null);
        ExecutorService pool = Executors.newFixedThreadPool(4);
        try {
            List<Future<String>> results = new ArrayList<>();
            for (int i = 0; i < 200; i++) {
                int n = i;
                results.add(pool.submit(() -> {
                    if (n % 3 == 0) {
                        try {
                            refusing.render(List.of(ChatMessage.user("x" + n)), false);
                            return "rendered";
                        } catch (ChatTemplateException e) {
                            return e.getMessage();
                        }
                    }
                    return ok.render(List.of(ChatMessage.user("m" + n)), false);
                }));
            }
            for (int i = 0; i < results.size(); i++) {
                String expected = i % 3 == 0 ? "chat template refused the conversation: no x" + i : "<user>m" + i + "\n";
                assertThat(results.get(i).get()).isEqualTo(expected);
            }
        } finally {
            pool.shutdownNow();
        }
    }
}
