package dev.lora4j.train.data;

import dev.lora4j.chat.ChatMessage;
import dev.lora4j.chat.ChatTemplate;
import dev.lora4j.chat.ChatTemplateException;

import java.util.ArrayList;
import java.util.List;

/**
 * Finds where the assistant turns are in a rendered conversation, for assistant_only_loss. transformers does this
 * with {@code {% generation %}} tags that few templates have; instead, the conversation is rendered incrementally:
 * the text before assistant message i is the rendering of messages 0..i-1 with the generation prompt, and the
 * text up to its end is the rendering of messages 0..i. The turn is what lies between (its content and the
 * template's end-of-turn marker), provided each rendering is a prefix of the next, which holds for templates that
 * render a conversation turn by turn. A template that rewrites earlier turns (e.g. one that drops the reasoning
 * of earlier replies) is refused with an error, rather than masking the wrong text.
 */
final class AssistantSpans {
    private AssistantSpans() {}

    /** Character ranges {@code [start, end)} of the assistant turns in {@code full}, the whole rendering. */
    static List<int[]> find(ChatTemplate template, List<ChatMessage> messages, String full, DatasetRecord where) {
        List<int[]> spans = new ArrayList<>();
        for (int i = 0; i < messages.size(); i++) {
            if (!messages.get(i).role().equals("assistant")) continue;
            String before = render(template, messages.subList(0, i), true, where, i);
            String through = render(template, messages.subList(0, i + 1), false, where, i);
            if (through.equals(render(template, messages.subList(0, i + 1), true, where, i))) {
                through = withoutUnconditionalPrompt(template, through, full);
            }
            if (!through.startsWith(before) || !full.startsWith(through)) {
                throw where.error("assistant_only_loss needs a chat template that renders a conversation turn by turn"
                        + " (the first messages rendered alone are a prefix of the whole conversation), and this one does"
                        + " not at message " + i + " (assistant); train without assistant_only_loss, or with a template that does");
            }
            if (through.length() > before.length()) spans.add(new int[]{before.length(), through.length()});
        }
        return spans;
    }

    /**
     * Some templates (the first Llama 3 Instruct one) append the assistant header after the last message whatever
     * add_generation_prompt says; that header is what an empty conversation renders to, and is not part of the turn.
     */
    private static String withoutUnconditionalPrompt(ChatTemplate template, String through, String full) {
        String empty;
        try {
            empty = template.render(List.of(), false);
        } catch (ChatTemplateException e) {
            return through;
        }
        for (int start = 0; start < empty.length(); start++) {
            String suffix = empty.substring(start);
            if (through.endsWith(suffix) && full.startsWith(through.substring(0, through.length() - suffix.length()))) {
                return through.substring(0, through.length() - suffix.length());
            }
        }
        return through;
    }

    private static String render(ChatTemplate t, List<ChatMessage> prefix, boolean generationPrompt, DatasetRecord where, int i) {
        try {
            return t.render(prefix, generationPrompt);
        } catch (ChatTemplateException e) {
            throw where.error("assistant_only_loss: the chat template cannot render the conversation up to message " + i
                    + " on its own: " + e.getMessage());
        }
    }
}
