package dev.lora4j.tokenizer;

import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;

/**
 * Compiles the regular expressions of tokenizer files, written for Oniguruma, into java.util.regex patterns
 * with the same meaning. Both are backtracking engines with ordered alternation, lookaround and possessive
 * quantifiers, so the syntax carries over; what differs is the character classes: Oniguruma's {@code \s},
 * {@code \d}, {@code \w} and {@code (?i)} are Unicode-aware (Java needs UNICODE_CHARACTER_CLASS for that), and
 * Oniguruma names scripts bare ({@code \p{Han}}) where Java wants {@code \p{IsHan}}.
 */
final class SplitRegex {
    /** GPT-2's pre-tokenization pattern, used by the ByteLevel pre-tokenizer when its use_regex is true. */
    static final String GPT2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

    private SplitRegex() {}

    static Pattern compile(String onigurumaPattern, String where) {
        String java = translate(onigurumaPattern, where);
        try {
            return Pattern.compile(java, Pattern.UNICODE_CHARACTER_CLASS);
        } catch (PatternSyntaxException e) {
            throw new TokenizerException(where + ": the regular expression " + quote(onigurumaPattern)
                    + " cannot be used: " + e.getDescription() + ". Check the pattern in the tokenizer file.", e);
        }
    }

    /** Pattern that matches the literal text, as the files' {"String": ...} patterns mean. */
    static Pattern literal(String text) {
        return Pattern.compile(Pattern.quote(text));
    }

    private static String translate(String p, String where) {
        StringBuilder out = new StringBuilder(p.length() + 16);
        for (int i = 0; i < p.length(); i++) {
            char c = p.charAt(i);
            if (c != '\\' || i + 1 >= p.length()) {
                out.append(c);
                continue;
            }
            char next = p.charAt(i + 1);
            if ((next == 'p' || next == 'P') && i + 2 < p.length() && p.charAt(i + 2) == '{') {
                int close = p.indexOf('}', i + 3);
                if (close < 0) throw new TokenizerException(where + ": unterminated \\p{ in the regular expression " + quote(p));
                String name = p.substring(i + 3, close);
                boolean negated = name.startsWith("^");
                if (negated) name = name.substring(1);
                char kind = negated ? (next == 'p' ? 'P' : 'p') : next;
                out.append('\\').append(kind).append('{').append(javaPropertyName(name, where, p)).append('}');
                i = close;
            } else {
                out.append(c).append(next);
                i++;
            }
        }
        return out.toString();
    }

    private static String javaPropertyName(String name, String where, String pattern) {
        for (String candidate : new String[] {name, "Is" + name}) {
            try {
                Pattern.compile("\\p{" + candidate + "}");
                return candidate;
            } catch (PatternSyntaxException ignored) {
                // try the next spelling
            }
        }
        throw new TokenizerException(where + ": unknown Unicode property \\p{" + name + "} in the regular expression " + quote(pattern));
    }

    private static String quote(String s) {
        return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
    }
}
