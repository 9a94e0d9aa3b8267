package dev.lora4j.train.data;

import dev.lora4j.chat.ChatMessage;

import java.util.List;

/**
 * A dataset record in one of TRL's SFT formats, with where it came from. The kinds: language modelling
 * ({@code text}), prompt-completion ({@code prompt}, {@code completion}, as strings or as lists of messages), and
 * conversational ({@code messages}, or ShareGPT's {@code conversations} with {@code from}/{@code value}).
 */
public sealed interface SftRecord {
    DatasetRecord source();

    /** {"text": "..."}: the loss is on every token. */
    record Text(DatasetRecord source, String text) implements SftRecord {}

    /** {"prompt": "...", "completion": "..."}: by default the loss is on the completion only. */
    record PromptCompletion(DatasetRecord source, String prompt, String completion) implements SftRecord {}

    /** {"messages": [{"role": ..., "content": ...}, ...]}: rendered with the chat template. */
    record Conversation(DatasetRecord source, List<ChatMessage> messages) implements SftRecord {}

    /** {"prompt": [messages], "completion": [messages]}: a conversation whose last turns are the completion. */
    record ChatPromptCompletion(DatasetRecord source, List<ChatMessage> prompt, List<ChatMessage> completion) implements SftRecord {}
}
