package dev.lora4j.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.lora4j.chat.ChatMessage;
import dev.lora4j.chat.ChatTemplate;
import dev.lora4j.tokenizer.Tokenizer;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;

@Command(name = "chat-template",
        description = {"Render a conversation with a model's chat template, as transformers' apply_chat_template does.",
                "MESSAGES is a JSON file: an array of {\"role\", \"content\"} objects, or an object with a \"messages\" array."})
final class ChatTemplateCommand implements Callable<Integer> {
    private static final ObjectMapper JSON = new ObjectMapper();

    @Option(names = {"-m", "--model"}, required = true, description = "Model or tokenizer folder (tokenizer_config.json holds the template).")
    Path model;

    @Parameters(index = "0", paramLabel = "MESSAGES", description = "JSON file with the messages.")
    Path messagesFile;

    @Option(names = "--template", description = "Use this Jinja template file instead of the model's.")
    Path templateFile;

    @Option(names = "--add-generation-prompt", description = "End with the assistant turn's opening, as for generation.")
    boolean addGenerationPrompt;

    @Option(names = "--tokens", description = "Print the token ids of the rendered text instead of the text.")
    boolean tokens;

    @Override
    public Integer call() throws IOException {
        Tokenizer tokenizer = Tokenizer.load(model);
        String source = templateFile != null ? Files.readString(templateFile, StandardCharsets.UTF_8)
                : tokenizer.chatTemplate().orElseThrow(() -> new IllegalArgumentException(
                        model.resolve("tokenizer_config.json") + " has no chat_template: give one with --template FILE"));
        ChatTemplate template = ChatTemplate.of(source, tokenizer.bosToken(), tokenizer.eosToken());
        String rendered = template.render(readMessages(messagesFile), addGenerationPrompt);
        PrintStream out = new PrintStream(System.out, false, StandardCharsets.UTF_8);
        if (tokens) out.println(JSON.writeValueAsString(tokenizer.encode(rendered, false)));
        else out.print(rendered);
        out.flush();
        return 0;
    }

    /** Reads messages from a JSON file, naming the file and the message index in every error. */
    static List<ChatMessage> readMessages(Path file) throws IOException {
        JsonNode root;
        try {
            root = JSON.readTree(Files.readString(file, StandardCharsets.UTF_8));
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalArgumentException(file + ": not valid JSON (" + e.getOriginalMessage() + ")");
        }
        JsonNode array = root != null && root.isObject() ? root.get("messages") : root;
        if (array == null || !array.isArray()) {
            throw new IllegalArgumentException(file + ": expected an array of messages or an object with a \"messages\" array");
        }
        List<ChatMessage> messages = new ArrayList<>();
        for (int i = 0; i < array.size(); i++) {
            JsonNode m = array.get(i);
            JsonNode role = m.get("role"), content = m.get("content");
            if (role == null || !role.isTextual()) throw new IllegalArgumentException(file + ": messages[" + i + "].role must be a string");
            if (content == null || !content.isTextual()) throw new IllegalArgumentException(file + ": messages[" + i + "].content must be a string");
            messages.add(new ChatMessage(role.asText(), content.asText()));
        }
        return messages;
    }
}
