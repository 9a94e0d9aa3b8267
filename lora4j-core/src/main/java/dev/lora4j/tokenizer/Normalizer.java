package dev.lora4j.tokenizer;

import java.util.List;
import java.util.Locale;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/** The "normalizer" stage of tokenizer.json: rewrites each run of input text before it is split into words. */
interface Normalizer {
    String normalize(String text);

    record Sequence(List<Normalizer> steps) implements Normalizer {
        public String normalize(String text) {
            for (Normalizer n : steps) text = n.normalize(text);
            return text;
        }
    }

    /** SentencePiece's leading "▁": added only to non-empty text, as the reference does. */
    record Prepend(String prefix) implements Normalizer {
        public String normalize(String text) {
            return text.isEmpty() ? text : prefix + text;
        }
    }

    record Replace(Pattern pattern, String content) implements Normalizer {
        public String normalize(String text) {
            return pattern.matcher(text).replaceAll(Matcher.quoteReplacement(content));
        }
    }

    record Unicode(java.text.Normalizer.Form form) implements Normalizer {
        public String normalize(String text) {
            return java.text.Normalizer.normalize(text, form);
        }
    }

    /** Lowercases character by character (no context rules such as Greek final sigma), as the reference does. */
    record Lowercase() implements Normalizer {
        public String normalize(String text) {
            StringBuilder sb = new StringBuilder(text.length());
            text.codePoints().forEach(cp -> sb.append(Character.toString(cp).toLowerCase(Locale.ROOT)));
            return sb.toString();
        }
    }

    record Strip(boolean left, boolean right) implements Normalizer {
        public String normalize(String text) {
            int start = 0, end = text.length();
            if (left) while (start < end && isWhitespace(text.codePointAt(start))) start += Character.charCount(text.codePointAt(start));
            if (right) while (end > start && isWhitespace(text.codePointBefore(end))) end -= Character.charCount(text.codePointBefore(end));
            return text.substring(start, end);
        }
    }

    /** Unicode White_Space, the definition of whitespace the reference uses everywhere. */
    static boolean isWhitespace(int cp) {
        return switch (cp) {
            case 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000 -> true;
            default -> cp >= 0x2000 && cp <= 0x200A;
        };
    }
}
