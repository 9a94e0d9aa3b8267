package dev.lora4j.chat;

import com.hubspot.jinjava.interpret.RenderResult;
import com.hubspot.jinjava.interpret.TemplateError;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * A Hugging Face chat template (the Jinja source in tokenizer_config.json's chat_template), rendered as
 * transformers' apply_chat_template renders it: the same environment settings, the variables messages,
 * add_generation_prompt, bos_token and eos_token, plus any extra ones (tools, documents, enable_thinking,
 * date_string, ...). The output is byte for byte what Python produces (tools/render_chat_templates.py checks the
 * templates of Llama 3 and 3.1, Mistral, Qwen 2.5, Gemma 2, Phi 3.5 and SmolLM 3, with and without tools).
 * Independent of any tokenizer; immutable and safe to share between threads.
 *
 * <p>Known differences, all outside what chat templates do with well-formed conversations: Jinjava has one
 * null for Python's None and for an undefined variable, so {@code {{ none }}} prints nothing (Python: "None")
 * and {@code none|default(x)} gives x; tuples are lists; loops cannot be recursive.
 */
public final class ChatTemplate {
    private final String name;
    private final String source;
    private final JinjaTranslator.Translation translation;
    private final String bosToken;
    private final String eosToken;

    private ChatTemplate(String name, String source, String bosToken, String eosToken) {
        this.name = name;
        this.source = source;
        this.translation = JinjaTranslator.translate(source, name);
        this.bosToken = bosToken;
        this.eosToken = eosToken;
    }

    /**
     * A template from its Jinja source, with the tokenizer's BOS and EOS token texts (either may be null when
     * the tokenizer has none; the variable is then undefined, as transformers leaves it). Throws
     * ChatTemplateException when the source is not well-formed Jinja.
     */
    public static ChatTemplate of(String source, String bosToken, String eosToken) {
        Objects.requireNonNull(source, "chat template source");
        return new ChatTemplate("chat template", normalize(source), bosToken, eosToken);
    }

    /** The same template with a name (say, the model folder) that error messages use. */
    public ChatTemplate named(String templateName) {
        return new ChatTemplate("chat template of " + templateName, source, bosToken, eosToken);
    }

    /** Renders the conversation; with addGenerationPrompt the text ends where the assistant's reply begins. */
    public String render(List<ChatMessage> messages, boolean addGenerationPrompt) {
        return render(messages, addGenerationPrompt, Map.of());
    }

    /**
     * Renders with extra template variables, as keyword arguments of apply_chat_template would be passed.
     * Values may be strings, numbers, booleans, null, lists and maps.
     */
    public String render(List<ChatMessage> messages, boolean addGenerationPrompt, Map<String, ?> extraVariables) {
        List<Map<String, Object>> msgs = new ArrayList<>(messages.size());
        for (ChatMessage m : messages) {
            Map<String, Object> map = new LinkedHashMap<>();
            map.put("role", m.role());
            map.put("content", m.content());
            msgs.add(map);
        }
        Map<String, Object> vars = new HashMap<>();
        vars.put("messages", msgs);
        vars.put("add_generation_prompt", addGenerationPrompt);
        if (bosToken != null) vars.put("bos_token", bosToken);
        if (eosToken != null) vars.put("eos_token", eosToken);
        vars.putAll(extraVariables);
        vars.put(JinjaTranslator.LOOP_CONDITIONS, translation.loopConditions());
        return renderVariables(vars);
    }

    private String renderVariables(Map<String, Object> vars) {
        TemplateFunctions.RAISED.remove();
        RenderResult result;
        String raised;
        try {
            result = JinjaEnvironment.INSTANCE.renderForResult(translation.source(), vars);
        } catch (RuntimeException e) {
            throw new ChatTemplateException(name + " could not be rendered: " + e.getMessage(), e);
        } finally {
            raised = TemplateFunctions.RAISED.get();
            TemplateFunctions.RAISED.remove();
        }
        if (raised != null) throw new ChatTemplateException(name + " refused the conversation: " + raised);
        List<String> fatal = new ArrayList<>();
        for (TemplateError e : result.getErrors()) {
            if (e.getSeverity() == TemplateError.ErrorType.FATAL) fatal.add("line " + e.getLineno() + ": " + e.getMessage());
        }
        if (!fatal.isEmpty()) throw new ChatTemplateException(name + " could not be rendered: " + String.join("; ", fatal));
        return result.getOutput();
    }

    /**
     * Jinja reads template text with newlines normalized to \n and drops one trailing newline
     * (keep_trailing_newline is false in transformers' environment).
     */
    private static String normalize(String source) {
        String s = source.replace("\r\n", "\n").replace('\r', '\n');
        return s.endsWith("\n") ? s.substring(0, s.length() - 1) : s;
    }

    public String source() {
        return source;
    }

    @Override
    public String toString() {
        return name;
    }
}
