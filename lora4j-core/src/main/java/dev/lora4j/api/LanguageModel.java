package dev.lora4j.api;

import dev.lora4j.backend.Backend;
import dev.lora4j.chat.ChatMessage;
import dev.lora4j.chat.ChatTemplate;
import dev.lora4j.generate.GenerationOptions;
import dev.lora4j.generate.GenerationResult;
import dev.lora4j.generate.Generator;
import dev.lora4j.io.GenerationConfig;
import dev.lora4j.io.ModelConfig;
import dev.lora4j.model.LlamaModel;
import dev.lora4j.tokenizer.Tokenizer;

import java.nio.file.Path;
import java.util.List;
import java.util.Set;
import java.util.function.Consumer;

/**
 * A model loaded on a device with its tokenizer, ready to generate. One generation runs at a time (the methods
 * are synchronized); close it to free the device memory and the backend.
 */
public final class LanguageModel implements AutoCloseable {
    private final Path folder;
    private final ModelConfig config;
    private final GenerationConfig generationConfig;
    private final Tokenizer tokenizer;
    private final Backend backend;
    private final LlamaModel model;
    private final Generator generator;
    private ChatTemplate chatTemplate;
    private boolean closed;

    LanguageModel(Path folder, ModelConfig config, GenerationConfig generationConfig, Tokenizer tokenizer,
                  Backend backend, LlamaModel model) {
        this.folder = folder;
        this.config = config;
        this.generationConfig = generationConfig;
        this.tokenizer = tokenizer;
        this.backend = backend;
        this.model = model;
        Set<Integer> eos = Generator.eosIds(generationConfig.eosTokenIds(), config.eosTokenIds(), tokenizer);
        this.generator = new Generator(model, tokenizer, eos);
    }

    public ModelConfig config() { return config; }

    public GenerationConfig generationConfig() { return generationConfig; }

    /** The tokenizer of the model folder. */
    public Tokenizer tokenizer() {
        if (tokenizer == null) {
            throw new IllegalStateException(folder + " has no tokenizer.json: copy the model's tokenizer.json (and"
                    + " tokenizer_config.json) into the folder, or generate from token ids");
        }
        return tokenizer;
    }

    public Backend backend() { return backend; }

    /** The decoder itself, for callers that work with token ids and logits. */
    public LlamaModel model() { return model; }

    public Path folder() { return folder; }

    /** The end-of-sequence ids generation stops on. */
    public Set<Integer> eosTokenIds() { return generator.eosTokenIds(); }

    /** What the model authors' generation_config.json asks for (greedy with Hugging Face's defaults otherwise). */
    public GenerationOptions defaultOptions() {
        return GenerationOptions.defaults(generationConfig);
    }

    /** Continues {@code prompt}, encoded with the tokenizer's special tokens (such as BOS). */
    public synchronized GenerationResult generate(String prompt, GenerationOptions options, Consumer<String> streamer) {
        return generate(tokenizer().encode(prompt, true), options, streamer);
    }

    /** Continues {@code prompt} with the model authors' default settings. */
    public GenerationResult generate(String prompt) {
        return generate(prompt, defaultOptions(), null);
    }

    /** Continues a prompt given as token ids. */
    public synchronized GenerationResult generate(int[] promptTokens, GenerationOptions options, Consumer<String> streamer) {
        checkOpen();
        return generator.generate(promptTokens, options, streamer);
    }

    /**
     * The assistant's reply to a conversation: the messages rendered with the tokenizer's chat template (with the
     * generation prompt), encoded without adding special tokens (the template writes them), as transformers'
     * {@code apply_chat_template} does.
     */
    public synchronized GenerationResult chat(List<ChatMessage> messages, GenerationOptions options, Consumer<String> streamer) {
        return generate(tokenizer().encode(renderChat(messages), false), options, streamer);
    }

    /** The prompt text {@link #chat} feeds the model. */
    public String renderChat(List<ChatMessage> messages) {
        return chatTemplate().render(messages, true);
    }

    private synchronized ChatTemplate chatTemplate() {
        if (chatTemplate == null) {
            String source = tokenizer().chatTemplate().orElseThrow(() -> new IllegalStateException(
                    folder + " has no chat template (tokenizer_config.json's chat_template, chat_template.jinja): it is"
                            + " probably a base model; use generate with a plain prompt"));
            chatTemplate = ChatTemplate.of(source, tokenizer.bosToken(), tokenizer.eosToken()).named(folder.toString());
        }
        return chatTemplate;
    }

    private void checkOpen() {
        if (closed) throw new IllegalStateException("the model " + folder + " is closed");
    }

    /** Frees the KV cache, the weights and activations, and the backend. */
    @Override
    public synchronized void close() {
        if (closed) return;
        closed = true;
        generator.close();
        model.close();
        backend.close();
    }
}
