package dev.lora4j.train.data;

import com.fasterxml.jackson.databind.ObjectMapper;
import dev.lora4j.chat.ChatMessage;
import dev.lora4j.chat.ChatTemplate;
import dev.lora4j.tokenizer.Tokenizer;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

class ExampleTokenizerTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private final Tokenizer tok = TestTokenizers.tiny();
    private final ChatTemplate template = TestTokenizers.chatTemplate(tok);
    private static final String EOS = "<|end_of_text|>";
    private static final String EOT = "<|eot_id|>";

    private static DatasetRecord record(String json) {
        try {
            return new DatasetRecord("t.jsonl", 7, JSON.readTree(json));
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }

    private static SftRecord parse(String json) {
        DatasetRecord r = record(json);
        return SftRecords.parse(r, SftRecords.kindOf(r, "text"), "text");
    }

    private ExampleTokenizer tokenizer(Boolean completionOnly, boolean assistantOnly) {
        return new ExampleTokenizer(tok, template, null, completionOnly, assistantOnly);
    }

    /** The text of the tokens that carry a label, run by run. */
    private List<String> labelledRuns(Tokenizer t, TokenizedSequence s) {
        List<String> runs = new ArrayList<>();
        int i = 0;
        while (i < s.length()) {
            if (s.labels()[i] == TokenizedSequence.IGNORE) {
                i++;
                continue;
            }
            int j = i;
            while (j < s.length() && s.labels()[j] != TokenizedSequence.IGNORE) j++;
            runs.add(t.decode(Arrays.copyOfRange(s.inputIds(), i, j)));
            i = j;
        }
        return runs;
    }

    @Test
    void textGetsTheEosTextAppendedOnceAndIsEncodedWithBos() {
        TokenizedSequence s = tokenizer(null, false).tokenize(parse("{\"text\": \"Call me Ishmael.\"}"));
        assertThat(s.inputIds()).containsExactly(tok.encode("Call me Ishmael." + EOS, true));
        assertThat(s.inputIds()[0]).isEqualTo(tok.bosTokenId().getAsInt());
        assertThat(s.inputIds()[s.length() - 1]).isEqualTo(tok.eosTokenId().getAsInt());
        assertThat(s.labels()).containsExactly(s.inputIds());

        TokenizedSequence already = tokenizer(null, false).tokenize(parse("{\"text\": \"Call me Ishmael." + EOS + "\"}"));
        assertThat(already).isEqualTo(s);
    }

    @Test
    void promptCompletionLearnsOnlyTheCompletionByDefault() {
        SftRecord r = parse("{\"prompt\": \"Call me\", \"completion\": \" Ishmael.\"}");
        TokenizedSequence s = tokenizer(null, false).tokenize(r);
        int promptLength = tok.encode("Call me", true).length;
        assertThat(s.inputIds()).containsExactly(tok.encode("Call me Ishmael." + EOS, true));
        for (int i = 0; i < s.length(); i++) {
            assertThat(s.labels()[i]).isEqualTo(i < promptLength ? TokenizedSequence.IGNORE : s.inputIds()[i]);
        }
        assertThat(labelledRuns(tok, s)).containsExactly(" Ishmael." + EOS);

        TokenizedSequence all = tokenizer(false, false).tokenize(r);
        assertThat(all.labels()).containsExactly(all.inputIds());
    }

    @Test
    void messagesAreRenderedWithTheChatTemplateWithoutAddingBosTwice() {
        SftRecord r = parse("{\"messages\": [{\"role\": \"user\", \"content\": \"Who?\"}, {\"role\": \"assistant\", \"content\": \"Ahab.\"}]}");
        TokenizedSequence s = tokenizer(null, false).tokenize(r);
        String rendered = template.render(List.of(ChatMessage.user("Who?"), ChatMessage.assistant("Ahab.")), false);
        assertThat(s.inputIds()).containsExactly(tok.encode(rendered, false));
        assertThat(s.inputIds()[1]).isNotEqualTo(tok.bosTokenId().getAsInt());
        assertThat(s.labels()).containsExactly(s.inputIds());
    }

    @Test
    void assistantOnlyLossLabelsEachAssistantTurnWithItsEndOfTurnToken() {
        SftRecord r = parse("{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
                + " {\"role\": \"user\", \"content\": \"Who?\"}, {\"role\": \"assistant\", \"content\": \"Ahab.\"},"
                + " {\"role\": \"user\", \"content\": \"Where?\"}, {\"role\": \"assistant\", \"content\": \"At sea, far away.\"}]}");
        TokenizedSequence s = tokenizer(null, true).tokenize(r);
        assertThat(labelledRuns(tok, s)).containsExactly("Ahab." + EOT, "At sea, far away." + EOT);
    }

    @Test
    void conversationalPromptCompletionMasksThePromptTurns() {
        SftRecord r = parse("{\"prompt\": [{\"role\": \"user\", \"content\": \"Who?\"}],"
                + " \"completion\": [{\"role\": \"assistant\", \"content\": \"Ahab.\"}]}");
        assertThat(r).isInstanceOf(SftRecord.ChatPromptCompletion.class);
        TokenizedSequence s = tokenizer(null, false).tokenize(r);
        assertThat(labelledRuns(tok, s)).containsExactly("Ahab." + EOT);
    }

    @Test
    void aTemplateThatRewritesEarlierTurnsIsRefusedForAssistantOnlyLoss() {
        ChatTemplate lastIsSpecial = ChatTemplate.of("{% for m in messages %}{% if loop.last and m['role'] == 'assistant' %}"
                + "[final]{% endif %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}",
                null, EOS);
        ExampleTokenizer t = new ExampleTokenizer(tok, lastIsSpecial, null, null, true);
        SftRecord r = parse("{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"},"
                + " {\"role\": \"user\", \"content\": \"c\"}, {\"role\": \"assistant\", \"content\": \"d\"}]}");
        assertThatThrownBy(() -> t.tokenize(r)).isInstanceOf(DatasetFormatException.class)
                .hasMessageStartingWith("t.jsonl:7: assistant_only_loss needs a chat template that renders a conversation turn by turn")
                .hasMessageContaining("message 1");
    }

    @Test
    void aConversationWithoutAnAssistantTurnIsAnErrorUnderAssistantOnlyLoss() {
        SftRecord r = parse("{\"messages\": [{\"role\": \"user\", \"content\": \"Who?\"}]}");
        assertThatThrownBy(() -> tokenizer(null, true).tokenize(r)).isInstanceOf(DatasetFormatException.class)
                .hasMessageContaining("t.jsonl:7").hasMessageContaining("no assistant message");
    }

    @Test
    void optionsThatDoNotSuitTheDatasetAreRefusedBeforeTokenizing() {
        assertThatThrownBy(() -> tokenizer(null, true).checkSuits(SftRecords.Kind.LANGUAGE_MODELING, "train.jsonl"))
                .hasMessageContaining("assistant_only_loss is true, but train.jsonl is language modelling");
        assertThatThrownBy(() -> tokenizer(true, false).checkSuits(SftRecords.Kind.CONVERSATIONAL, "train.jsonl"))
                .hasMessageContaining("completion_only_loss is true, but train.jsonl is conversational");
        assertThatThrownBy(() -> new ExampleTokenizer(tok, null, null, null, false).checkSuits(SftRecords.Kind.CONVERSATIONAL, "c.jsonl"))
                .hasMessageContaining("no chat template");
        assertThatThrownBy(() -> new ExampleTokenizer(tok, template, "</s>", null, false))
                .hasMessageContaining("eos_token \"</s>\" is not a token");
    }

    @Test
    void anEosTokenOverrideEndsTextsInstead() {
        TokenizedSequence s = new ExampleTokenizer(tok, template, EOT, null, false).tokenize(parse("{\"text\": \"Hi\"}"));
        assertThat(s.inputIds()[s.length() - 1]).isEqualTo(tok.tokenId(EOT).getAsInt());
    }

    @Test
    void recordsOfAnotherKindThanTheFirstAreNamed() {
        List<DatasetRecord> records = List.of(record("{\"prompt\": \"a\", \"completion\": \"b\"}"), record("{\"text\": \"c\"}"));
        assertThatThrownBy(() -> SftRecords.parse(records, "text"))
                .hasMessageStartingWith("t.jsonl:7: no \"prompt\" field; the dataset is prompt-completion")
                .hasMessageContaining("fields here: \"text\"");
        assertThatThrownBy(() -> SftRecords.parse(List.of(record("{\"body\": \"x\"}")), "text"))
                .hasMessageContaining("cannot tell the dataset's format").hasMessageContaining("\"body\"");
        assertThatThrownBy(() -> parse("{\"text\": 5}")).hasMessage("t.jsonl:7: field \"text\" must be a string, found a number");
        assertThatThrownBy(() -> parse("{\"messages\": [{\"role\": \"user\"}]}"))
                .hasMessage("t.jsonl:7: messages[0] has no \"content\" (use \"\" for an empty message)");
        assertThatThrownBy(() -> parse("{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\"}]}]}"))
                .hasMessageContaining("messages[0].content must be a string, found an array");
    }

    @Test
    void shareGptConversationsAreReadAsMessages() {
        SftRecord r = parse("{\"conversations\": [{\"from\": \"user\", \"value\": \"Who?\"}, {\"from\": \"assistant\", \"value\": \"Ahab.\"}]}");
        assertThat(r).isEqualTo(new SftRecord.Conversation(((SftRecord.Conversation) r).source(),
                List.of(ChatMessage.user("Who?"), ChatMessage.assistant("Ahab."))));
    }

    // ---- real tokenizers and templates, when the shared assets are present ----

    private static Path shared(String relative) {
        for (Path p = Path.of("").toAbsolutePath(); p != null; p = p.getParent()) {
            Path candidate = p.resolve("shared").resolve(relative);
            if (Files.exists(candidate)) return candidate;
            Path sibling = p.resolveSibling("shared").resolve(relative);
            if (Files.exists(sibling)) return sibling;
        }
        return null;
    }

    @Test
    void assistantTurnsAreFoundWithTheOriginalLlama3TemplateThatAlwaysAppendsTheAssistantHeader() {
        Path folder = shared("assets/tokenizers/llama3");
        assumeTrue(folder != null, "../shared/assets/tokenizers/llama3 is absent: skipping the Llama 3 tokenizer check");
        Tokenizer llama = Tokenizer.load(folder);
        ChatTemplate t = ChatTemplate.of(llama.chatTemplate().orElseThrow(), llama.bosToken(), llama.eosToken());
        SftRecord r = parse("{\"messages\": [{\"role\": \"user\", \"content\": \"Who hunts the whale?\"},"
                + " {\"role\": \"assistant\", \"content\": \"Captain Ahab.\"}, {\"role\": \"user\", \"content\": \"Why?\"},"
                + " {\"role\": \"assistant\", \"content\": \"Revenge, for his leg.\"}]}");
        TokenizedSequence s = new ExampleTokenizer(llama, t, null, null, true).tokenize(r);
        assertThat(labelledRuns(llama, s)).containsExactly("Captain Ahab." + EOT, "Revenge, for his leg." + EOT);
    }

    @Test
    void assistantTurnsAreFoundWithASentencePieceTokenizerWhoseDecodingChangesSpaces() throws IOException {
        Path folder = shared("assets/tokenizers/mistral");
        Path nemo = shared("assets/chat-templates/mistralai-Mistral-Nemo-Instruct-2407.jinja");
        assumeTrue(folder != null && nemo != null, "../shared tokenizer or template assets are absent: skipping the Mistral check");
        Tokenizer mistral = Tokenizer.load(folder);
        ChatTemplate t = ChatTemplate.of(Files.readString(nemo), mistral.bosToken(), mistral.eosToken());
        SftRecord r = parse("{\"messages\": [{\"role\": \"user\", \"content\": \"Who hunts the whale?\"},"
                + " {\"role\": \"assistant\", \"content\": \"Captain Ahab.\"}, {\"role\": \"user\", \"content\": \"Why?\"},"
                + " {\"role\": \"assistant\", \"content\": \"Revenge.\"}]}");
        TokenizedSequence s = new ExampleTokenizer(mistral, t, null, null, true).tokenize(r);
        List<String> runs = labelledRuns(mistral, s);
        assertThat(runs).hasSize(2);
        assertThat(runs.get(0).strip()).isEqualTo("Captain Ahab.</s>");
        assertThat(runs.get(1).strip()).isEqualTo("Revenge.</s>");
    }
}
