package dev.lora4j.train.data;

import dev.lora4j.chat.ChatMessage;
import dev.lora4j.chat.ChatTemplate;
import dev.lora4j.chat.ChatTemplateException;
import dev.lora4j.tokenizer.Tokenizer;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Turns SFT records into token ids and labels as TRL's SFTTrainer prepares its dataset:
 * <ul>
 *   <li>text: the EOS token's text is appended unless the text already ends with it; the text is encoded with the
 *       tokenizer's special tokens (BOS); every token is a label.</li>
 *   <li>prompt-completion: EOS appended to the completion in the same way; prompt and prompt+completion are encoded
 *       separately, and the first {@code len(encode(prompt))} tokens are the prompt (masked when
 *       completion_only_loss, which defaults to true for this kind).</li>
 *   <li>messages: rendered with the chat template (which writes BOS and end-of-turn tokens itself, so no EOS is
 *       appended) and encoded without adding special tokens; with assistant_only_loss only the assistant turns
 *       are labels.</li>
 *   <li>conversational prompt-completion: the prompt messages rendered with the generation prompt are the prompt,
 *       the whole conversation is the sequence.</li>
 * </ul>
 * Where TRL appends EOS only to a field literally named "text", the dataset_text_field is used here whatever its
 * name (TRL leaves such datasets without EOS, which looks unintended).
 */
public final class ExampleTokenizer {
    private final Tokenizer tokenizer;
    private final ChatTemplate chatTemplate;
    private final String eosToken;
    private final Boolean completionOnlyLoss;
    private final boolean assistantOnlyLoss;
    private int promptBoundaryMismatches;

    /**
     * @param chatTemplate       null when the tokenizer has none (conversational records are then an error)
     * @param eosToken           the end-of-sequence text appended to texts and completions; null for the tokenizer's
     * @param completionOnlyLoss null for TRL's default: true for prompt-completion records
     */
    public ExampleTokenizer(Tokenizer tokenizer, ChatTemplate chatTemplate, String eosToken, Boolean completionOnlyLoss,
                            boolean assistantOnlyLoss) {
        this.tokenizer = tokenizer;
        this.chatTemplate = chatTemplate;
        this.eosToken = eosToken != null ? eosToken : tokenizer.eosToken();
        this.completionOnlyLoss = completionOnlyLoss;
        this.assistantOnlyLoss = assistantOnlyLoss;
        if (eosToken != null && tokenizer.tokenId(eosToken).isEmpty()) {
            throw new IllegalArgumentException("eos_token \"" + eosToken + "\" is not a token of the model's tokenizer; use one of its special tokens");
        }
    }

    /** Prompt-completion records whose prompt tokens were not a prefix of the prompt+completion tokens (TRL warns). */
    public int promptBoundaryMismatches() {
        return promptBoundaryMismatches;
    }

    /** Checks that the options suit a dataset of this kind, before any record is tokenized. */
    public void checkSuits(SftRecords.Kind kind, String datasetName) {
        boolean conversational = kind == SftRecords.Kind.CONVERSATIONAL || kind == SftRecords.Kind.CONVERSATIONAL_PROMPT_COMPLETION;
        boolean promptCompletion = kind == SftRecords.Kind.PROMPT_COMPLETION || kind == SftRecords.Kind.CONVERSATIONAL_PROMPT_COMPLETION;
        if (assistantOnlyLoss && !conversational) {
            throw new IllegalArgumentException("assistant_only_loss is true, but " + datasetName + " is " + kind.description()
                    + "; it needs conversational records (messages)");
        }
        if (Boolean.TRUE.equals(completionOnlyLoss) && !promptCompletion) {
            throw new IllegalArgumentException("completion_only_loss is true, but " + datasetName + " is " + kind.description()
                    + "; it needs prompt-completion records");
        }
        if (conversational && chatTemplate == null) {
            throw new IllegalArgumentException(datasetName + " is conversational, but the model's tokenizer has no chat template"
                    + " (tokenizer_config.json's chat_template or chat_template.jinja); add one, or use text records");
        }
        if (!conversational && eosToken == null) {
            throw new IllegalArgumentException("the tokenizer names no eos_token to end each example with; set eos_token in the"
                    + " training config to one of its special tokens");
        }
    }

    public TokenizedSequence tokenize(SftRecord record) {
        return switch (record) {
            case SftRecord.Text t -> {
                int[] ids = tokenizer.encode(withEos(t.text()), true);
                yield new TokenizedSequence(ids, ids.clone());
            }
            case SftRecord.PromptCompletion pc -> {
                int[] prompt = tokenizer.encode(pc.prompt(), true);
                int[] all = tokenizer.encode(pc.prompt() + withEos(pc.completion()), true);
                yield promptCompletion(prompt, all, null);
            }
            case SftRecord.Conversation c -> {
                String text = render(c.messages(), false, c.source());
                int[] ids = tokenizer.encode(text, false);
                int[] labels = ids.clone();
                if (assistantOnlyLoss) applyMask(labels, assistantMask(c.messages(), text, ids, c.source()));
                yield new TokenizedSequence(ids, labels);
            }
            case SftRecord.ChatPromptCompletion cpc -> {
                List<ChatMessage> all = new ArrayList<>(cpc.prompt());
                all.addAll(cpc.completion());
                int[] prompt = tokenizer.encode(render(cpc.prompt(), true, cpc.source()), false);
                String text = render(all, false, cpc.source());
                int[] ids = tokenizer.encode(text, false);
                boolean[] assistant = assistantOnlyLoss ? assistantMask(all, text, ids, cpc.source()) : null;
                yield promptCompletion(prompt, ids, assistant);
            }
        };
    }

    private TokenizedSequence promptCompletion(int[] prompt, int[] all, boolean[] assistantMask) {
        if (prompt.length > all.length || !Arrays.equals(prompt, 0, prompt.length, all, 0, prompt.length)) promptBoundaryMismatches++;
        int[] labels = all.clone();
        if (!Boolean.FALSE.equals(completionOnlyLoss)) {
            Arrays.fill(labels, 0, Math.min(prompt.length, labels.length), TokenizedSequence.IGNORE);
        }
        if (assistantMask != null) applyMask(labels, assistantMask);
        return new TokenizedSequence(all, labels);
    }

    private String withEos(String text) {
        return text.endsWith(eosToken) ? text : text + eosToken;
    }

    private String render(List<ChatMessage> messages, boolean generationPrompt, DatasetRecord where) {
        try {
            return chatTemplate.render(messages, generationPrompt);
        } catch (ChatTemplateException e) {
            throw where.error(e.getMessage());
        }
    }

    private boolean[] assistantMask(List<ChatMessage> messages, String text, int[] ids, DatasetRecord where) {
        List<int[]> spans = AssistantSpans.find(chatTemplate, messages, text, where);
        if (spans.isEmpty()) {
            throw where.error("assistant_only_loss is true, but this conversation has no assistant message, so it has"
                    + " nothing to learn from; remove it or add the assistant's reply");
        }
        int[][] offsets = TokenOffsets.of(tokenizer, ids, text);
        if (offsets == null) {
            throw where.error("assistant_only_loss: the tokenizer's decoding of this conversation differs from its text"
                    + " beyond whitespace, so the assistant turns cannot be located in the tokens");
        }
        boolean[] mask = new boolean[ids.length];
        for (int k = 0; k < ids.length; k++) {
            for (int[] s : spans) {
                if (offsets[0][k] < s[1] && s[0] < offsets[1][k]) {
                    mask[k] = true;
                    break;
                }
            }
        }
        return mask;
    }

    private static void applyMask(int[] labels, boolean[] keep) {
        for (int i = 0; i < labels.length; i++) if (!keep[i]) labels[i] = TokenizedSequence.IGNORE;
    }
}
