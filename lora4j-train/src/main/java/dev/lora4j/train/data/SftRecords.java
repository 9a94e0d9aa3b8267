package dev.lora4j.train.data;

import com.fasterxml.jackson.databind.JsonNode;
import dev.lora4j.chat.ChatMessage;

import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;

/**
 * Recognises the SFT format of dataset records as TRL does: the first record decides the dataset's kind
 * (conversational when it has {@code messages} or {@code conversations}, prompt-completion when it has
 * {@code prompt}, language modelling otherwise, from {@code dataset_text_field}), and every record must then be of
 * that kind. Fields other than the ones a kind uses are ignored, as TRL ignores extra columns.
 */
public final class SftRecords {
    /** The kinds of dataset, decided by the first record. */
    public enum Kind {
        LANGUAGE_MODELING("language modelling", "a text field"),
        PROMPT_COMPLETION("prompt-completion", "prompt and completion strings"),
        CONVERSATIONAL("conversational", "messages"),
        CONVERSATIONAL_PROMPT_COMPLETION("conversational prompt-completion", "prompt and completion message lists");

        private final String label;
        private final String fields;

        Kind(String label, String fields) {
            this.label = label;
            this.fields = fields;
        }

        /** "prompt-completion (prompt and completion strings)", for messages. */
        public String description() {
            return label + " (" + fields + ")";
        }

        /** "prompt-completion". */
        public String label() {
            return label;
        }
    }

    private SftRecords() {}

    /** The kind of a dataset whose first record is {@code first}. */
    public static Kind kindOf(DatasetRecord first, String textField) {
        JsonNode f = first.fields();
        if (f.has("messages") || f.has("conversations")) return Kind.CONVERSATIONAL;
        if (f.has("prompt")) return f.get("prompt").isArray() ? Kind.CONVERSATIONAL_PROMPT_COMPLETION : Kind.PROMPT_COMPLETION;
        if (f.has(textField)) return Kind.LANGUAGE_MODELING;
        throw first.error("cannot tell the dataset's format from its first record: it has none of the fields \""
                + textField + "\" (text; see dataset_text_field), \"prompt\"/\"completion\" or \"messages\"; its fields: "
                + fieldNames(f));
    }

    /** Converts every record, all of the first record's kind. */
    public static List<SftRecord> parse(List<DatasetRecord> records, String textField) {
        if (records.isEmpty()) throw new IllegalArgumentException("no records");
        Kind kind = kindOf(records.getFirst(), textField);
        List<SftRecord> out = new ArrayList<>(records.size());
        for (DatasetRecord r : records) out.add(parse(r, kind, textField));
        return out;
    }

    public static SftRecord parse(DatasetRecord r, Kind kind, String textField) {
        JsonNode f = r.fields();
        String expected = "; the dataset is " + kind.description() + ", as its first record (" + r.file() + ") decides";
        return switch (kind) {
            case LANGUAGE_MODELING -> {
                if (!f.has(textField)) throw r.error("no \"" + textField + "\" field" + expected + "; fields here: " + fieldNames(f));
                yield new SftRecord.Text(r, string(r, f, textField));
            }
            case PROMPT_COMPLETION -> {
                requireFields(r, f, expected, "prompt", "completion");
                yield new SftRecord.PromptCompletion(r, string(r, f, "prompt"), string(r, f, "completion"));
            }
            case CONVERSATIONAL -> {
                String key = f.has("messages") ? "messages" : "conversations";
                if (!f.has(key)) throw r.error("no \"messages\" field" + expected + "; fields here: " + fieldNames(f));
                List<ChatMessage> messages = messages(r, f.get(key), key);
                if (messages.isEmpty()) throw r.error("\"" + key + "\" is an empty list; a conversation needs at least one message");
                yield new SftRecord.Conversation(r, messages);
            }
            case CONVERSATIONAL_PROMPT_COMPLETION -> {
                requireFields(r, f, expected, "prompt", "completion");
                List<ChatMessage> prompt = messages(r, f.get("prompt"), "prompt");
                List<ChatMessage> completion = messages(r, f.get("completion"), "completion");
                if (prompt.isEmpty()) throw r.error("\"prompt\" is an empty list of messages");
                if (completion.isEmpty()) throw r.error("\"completion\" is an empty list of messages");
                yield new SftRecord.ChatPromptCompletion(r, prompt, completion);
            }
        };
    }

    private static void requireFields(DatasetRecord r, JsonNode f, String expected, String... names) {
        for (String n : names) {
            if (!f.has(n)) throw r.error("no \"" + n + "\" field" + expected + "; fields here: " + fieldNames(f));
        }
    }

    private static String string(DatasetRecord r, JsonNode f, String field) {
        JsonNode n = f.get(field);
        if (!n.isTextual()) throw r.error("field \"" + field + "\" must be a string, found " + DatasetReader.kind(n));
        return n.asText();
    }

    /**
     * A list of {"role", "content"} objects; ShareGPT's {"from", "value"} are read as role and content, as TRL's
     * maybe_convert_to_chatml renames them.
     */
    private static List<ChatMessage> messages(DatasetRecord r, JsonNode list, String field) {
        if (!list.isArray()) throw r.error("field \"" + field + "\" must be a list of messages {\"role\": ..., \"content\": ...}, found " + DatasetReader.kind(list));
        List<ChatMessage> out = new ArrayList<>(list.size());
        for (int i = 0; i < list.size(); i++) {
            JsonNode m = list.get(i);
            String where = field + "[" + i + "]";
            if (!m.isObject()) throw r.error(where + " must be a message object {\"role\": ..., \"content\": ...}, found " + DatasetReader.kind(m));
            JsonNode role = m.has("role") ? m.get("role") : m.get("from");
            JsonNode content = m.has("content") ? m.get("content") : m.get("value");
            if (role == null || role.isNull()) throw r.error(where + " has no \"role\"");
            if (!role.isTextual()) throw r.error(where + ".role must be a string, found " + DatasetReader.kind(role));
            if (content == null || content.isNull()) throw r.error(where + " has no \"content\" (use \"\" for an empty message)");
            if (!content.isTextual()) {
                throw r.error(where + ".content must be a string, found " + DatasetReader.kind(content)
                        + " (multimodal content lists are not supported)");
            }
            out.add(new ChatMessage(role.asText(), content.asText()));
        }
        return out;
    }

    static String fieldNames(JsonNode f) {
        List<String> names = new ArrayList<>();
        for (Iterator<String> it = f.fieldNames(); it.hasNext(); ) names.add("\"" + it.next() + "\"");
        return names.isEmpty() ? "none" : String.join(", ", names);
    }
}
