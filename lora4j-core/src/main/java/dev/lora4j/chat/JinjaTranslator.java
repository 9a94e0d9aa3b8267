package dev.lora4j.chat;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Turns a Jinja template, as Python's jinja2 reads it under transformers' settings, into an equivalent Jinjava
 * template. It splits the source the way jinja2's lexer does and applies Jinja's whitespace rules itself
 * (trim_blocks, lstrip_blocks, the "-" and "+" markers), because Jinjava's versions differ (its lstrip_blocks
 * also strips spaces between two tags in the middle of a line). The result has no whitespace markers and no
 * comments, so Jinjava renders its text exactly. It also rewrites what Jinjava lacks: loop filters
 * ({@code for x in xs if cond}), the {@code generation} tag, and Python's spelling of printed values.
 */
final class JinjaTranslator {
    static final String OUTPUT_FUNCTION = "lora4j_pystr";
    static final String LOOP_FUNCTION = "lora4j_loop_filter";
    static final String LOOP_CONDITIONS = "__lora4j_loop_conditions";

    private static final Pattern RAW_BEGIN = Pattern.compile("\\{%([-+]?)\\s*raw\\s*(?:-%}\\s*|%})");
    private static final Pattern RAW_END = Pattern.compile("\\{%([-+]?)\\s*endraw\\s*(\\+%}|-%}\\s*|%}\\n?)");
    private static final Pattern COMMENT_END = Pattern.compile("\\+#}|-#}\\s*|#}\\n?");
    private static final Pattern NAME = Pattern.compile("[A-Za-z_][A-Za-z0-9_]*");
    private static final Pattern STRING = Pattern.compile("'([^'\\\\]*(?:\\\\.[^'\\\\]*)*)'|\"([^\"\\\\]*(?:\\\\.[^\"\\\\]*)*)\"", Pattern.DOTALL);

    /** A block tag awaiting its end tag; for loops remember where they were written and what they iterate. */
    private static final class OpenBlock {
        final String tag;
        int outputStart, outputEnd;
        String target, iterable;
        boolean hasElse;

        OpenBlock(String tag) {
            this.tag = tag;
        }
    }

    private static final java.util.Set<String> BLOCK_TAGS = java.util.Set.of("for", "if", "macro", "call", "filter", "with", "autoescape", "block");

    /** A loop filter found in the template: the loop's target names and its condition. */
    record LoopCondition(List<String> targets, String condition) {}

    /** The translated source and the loop conditions its loop filters refer to by index. */
    record Translation(String source, List<LoopCondition> loopConditions) {}

    private final String src;
    private final String templateName;
    private final StringBuilder out = new StringBuilder();
    private final List<LoopCondition> conditions = new ArrayList<>();
    /** Open block tags, to tell a for loop's {% else %} from an if's. */
    private final Deque<OpenBlock> blocks = new ArrayDeque<>();
    private int loops;
    private int pos;
    private boolean lineStarting = true;

    private JinjaTranslator(String source, String templateName) {
        this.src = source;
        this.templateName = templateName;
    }

    /** Source with newlines already normalized to \n and the one trailing newline already removed. */
    static Translation translate(String source, String templateName) {
        JinjaTranslator t = new JinjaTranslator(source, templateName);
        t.run();
        return new Translation(t.out.toString(), List.copyOf(t.conditions));
    }

    private void run() {
        while (pos < src.length()) {
            int open = nextOpening(pos);
            if (open < 0) {
                emitText(src.substring(pos));
                pos = src.length();
                return;
            }
            String text = src.substring(pos, open);
            Matcher raw = RAW_BEGIN.matcher(src).region(open, src.length());
            if (raw.lookingAt()) {
                emitText(lstrip(text, raw.group(1), false));
                pos = raw.end();
                lineStarting = src.charAt(pos - 1) == '\n';
                rawBlock();
                continue;
            }
            char kind = src.charAt(open + 1);
            String sign = open + 2 < src.length() && (src.charAt(open + 2) == '-' || src.charAt(open + 2) == '+') ? String.valueOf(src.charAt(open + 2)) : "";
            emitText(lstrip(text, sign, kind == '{'));
            int bodyStart = open + 2 + sign.length();
            switch (kind) {
                case '#' -> comment(bodyStart, open);
                case '%' -> block(bodyStart, open);
                default -> variable(bodyStart, open);
            }
        }
    }

    /** The next "{{", "{%" or "{#" at or after from, or -1. */
    private int nextOpening(int from) {
        for (int i = src.indexOf('{', from); i >= 0 && i + 1 < src.length(); i = src.indexOf('{', i + 1)) {
            char c = src.charAt(i + 1);
            if (c == '{' || c == '%' || c == '#') return i;
        }
        return -1;
    }

    /**
     * Jinja's rule for the text before a tag: "-" strips all whitespace before it; otherwise, for block and
     * comment tags without "+", spaces and tabs between the start of the line and the tag are removed.
     */
    private String lstrip(String text, String sign, boolean variable) {
        if (sign.equals("-")) return PythonStrings.strip(text, null, false, true);
        if (sign.equals("+") || variable) return text;
        int lineStart = text.lastIndexOf('\n') + 1;
        if (lineStart > 0 || lineStarting) {
            for (int i = lineStart; i < text.length(); i++) {
                char c = text.charAt(i);
                if (c != ' ' && c != '\t') return text;
            }
            return text.substring(0, lineStart);
        }
        return text;
    }

    private void emitText(String text) {
        if (!text.isEmpty()) out.append(text);
    }

    private void rawBlock() {
        Matcher end = RAW_END.matcher(src);
        int search = pos;
        while (end.find(search)) {
            String text = src.substring(pos, end.start());
            out.append("{% raw %}").append(lstrip(text, end.group(1), false)).append("{% endraw %}");
            pos = end.end();
            lineStarting = src.charAt(pos - 1) == '\n';
            return;
        }
        throw error("missing {% endraw %}");
    }

    private void comment(int bodyStart, int open) {
        Matcher end = COMMENT_END.matcher(src);
        if (!end.find(bodyStart)) throw error("comment opened at " + where(open) + " is never closed with #}");
        pos = end.end();
        lineStarting = src.charAt(pos - 1) == '\n';
    }

    private void block(int bodyStart, int open) {
        int[] end = findEnd(bodyStart, true, open);
        String body = src.substring(bodyStart, end[0]).strip();
        pos = end[1];
        lineStarting = src.charAt(pos - 1) == '\n';
        Matcher name = NAME.matcher(body);
        String tag = name.lookingAt() ? name.group() : "";
        if (tag.equals("generation") || tag.equals("endgeneration")) return;
        if (tag.equals("for")) body = loopFilter(body);
        OpenBlock innermost = blocks.peek();
        if (tag.equals("else") && innermost != null && innermost.tag.equals("for")) {
            loopElse(innermost);
            return;
        }
        if (tag.equals("endfor") && innermost != null && innermost.tag.equals("for") && innermost.hasElse) {
            blocks.pop();
            out.append("{% endif %}");
            return;
        }
        int start = out.length();
        out.append("{% ").append(jinjavaExpression(body)).append(" %}");
        if (BLOCK_TAGS.contains(tag) || (tag.equals("set") && topLevelWord(body, "=", 0) < 0 && !body.contains("="))) {
            OpenBlock opened = new OpenBlock(tag);
            if (tag.equals("for")) {
                int in = topLevelWord(body, "in", 0);
                opened.outputStart = start;
                opened.outputEnd = out.length();
                opened.target = body.substring(3, in).strip();
                opened.iterable = body.substring(in + 2).strip();
            }
            blocks.push(opened);
        } else if (tag.startsWith("end") && !blocks.isEmpty()) {
            blocks.pop();
        }
    }

    /**
     * Jinja's {@code for ... else}: the else part renders when the loop ran no iteration. Jinjava has no such
     * thing, so the loop's items go into a variable first and the else part becomes an if on that variable.
     */
    private void loopElse(OpenBlock loop) {
        String items = "__lora4j_loop_items_" + loops++;
        String rewritten = "{% set " + items + " = " + jinjavaExpression(loop.iterable) + " %}{% for " + jinjavaExpression(loop.target) + " in " + items + " %}";
        out.replace(loop.outputStart, loop.outputEnd, rewritten);
        out.append("{% endfor %}{% if not ").append(items).append(" %}");
        loop.hasElse = true;
    }

    private void variable(int bodyStart, int open) {
        int[] end = findEnd(bodyStart, false, open);
        String body = src.substring(bodyStart, end[0]).strip();
        pos = end[1];
        lineStarting = src.charAt(pos - 1) == '\n';
        // A function call rather than "(body)|filter": Jinjava reads "(" ... "," ... ")" as a tuple even when the
        // comma is inside a dict literal.
        out.append("{{ ").append(OUTPUT_FUNCTION).append("(").append(jinjavaExpression(body)).append(") }}");
    }

    /**
     * Finds where a block or variable tag ends, skipping string literals and nested brackets as Jinja's lexer
     * does. Returns {end of the tag's body, position after the closing delimiter and any whitespace it eats}.
     */
    private int[] findEnd(int from, boolean block, int open) {
        Deque<Character> brackets = new ArrayDeque<>();
        int i = from;
        while (i < src.length()) {
            char c = src.charAt(i);
            if (brackets.isEmpty()) {
                int[] end = block ? blockEnd(i) : variableEnd(i);
                if (end != null) return end;
            }
            if (c == '\'' || c == '"') {
                Matcher s = STRING.matcher(src).region(i, src.length());
                if (!s.lookingAt()) throw error("unterminated string in the tag opened at " + where(open));
                i = s.end();
                continue;
            }
            if (c == '(' || c == '[' || c == '{') brackets.push(c == '(' ? ')' : c == '[' ? ']' : '}');
            else if ((c == ')' || c == ']' || c == '}') && !brackets.isEmpty()) {
                if (brackets.peek() != c) throw error("unbalanced '" + c + "' in the tag opened at " + where(open));
                brackets.pop();
            }
            i++;
        }
        throw error((block ? "{%" : "{{") + " opened at " + where(open) + " is never closed");
    }

    private int[] blockEnd(int i) {
        if (src.startsWith("+%}", i)) return new int[] {i, i + 3};
        if (src.startsWith("-%}", i)) return new int[] {i, skipSpace(i + 3)};
        if (src.startsWith("%}", i)) return new int[] {i, i + 2 < src.length() && src.charAt(i + 2) == '\n' ? i + 3 : i + 2};
        return null;
    }

    private int[] variableEnd(int i) {
        if (src.startsWith("-}}", i)) return new int[] {i, skipSpace(i + 3)};
        if (src.startsWith("}}", i)) return new int[] {i, i + 2};
        return null;
    }

    private int skipSpace(int i) {
        while (i < src.length() && PythonStrings.isSpace(src.codePointAt(i))) i += Character.charCount(src.codePointAt(i));
        return i;
    }

    /**
     * {@code for x in xs if cond} becomes {@code for x in lora4j_loop_filter(xs, n)}: Jinjava has no loop
     * filters, and Jinja's loop variables (loop.last, loop.length) count only the items that pass.
     */
    private String loopFilter(String body) {
        int in = topLevelWord(body, "in", 0);
        if (in < 0) return body;
        int cond = topLevelWord(body, "if", in + 2);
        if (cond < 0) return body;
        String condition = body.substring(cond + 2).strip();
        if (condition.endsWith(" recursive")) throw error("recursive loops are not supported");
        List<String> targets = new ArrayList<>();
        for (String t : body.substring(3, in).split(",")) {
            String name = t.strip().replace("(", "").replace(")", "").strip();
            if (!name.isEmpty()) targets.add(name);
        }
        conditions.add(new LoopCondition(List.copyOf(targets), jinjavaExpression(condition)));
        return "for " + body.substring(3, in).strip() + " in " + LOOP_FUNCTION + "(" + body.substring(in + 2, cond).strip() + ", " + (conditions.size() - 1) + ")";
    }

    /** Index of the word outside strings and brackets, at or after from, or -1. */
    private static int topLevelWord(String s, String word, int from) {
        int depth = 0;
        for (int i = from; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == '\'' || c == '"') {
                Matcher m = STRING.matcher(s).region(i, s.length());
                if (m.lookingAt()) {
                    i = m.end() - 1;
                    continue;
                }
            }
            if (c == '(' || c == '[' || c == '{') depth++;
            else if (c == ')' || c == ']' || c == '}') depth--;
            else if (depth == 0 && s.startsWith(word, i)
                    && (i == 0 || !Character.isJavaIdentifierPart(s.charAt(i - 1)))
                    && (i + word.length() == s.length() || !Character.isJavaIdentifierPart(s.charAt(i + word.length())))) {
                return i;
            }
        }
        return -1;
    }

    /**
     * Expression text as Jinjava must see it: string literals re-spelled (Jinja reads them with Python's escape
     * rules, \\u00e9, \\x41 and all; Jinjava knows only a few escapes), and "}}" outside strings (nested dict
     * literals) written "} }", since Jinjava would otherwise end the tag there.
     */
    private String jinjavaExpression(String body) {
        StringBuilder sb = new StringBuilder(body.length() + 8);
        for (int i = 0; i < body.length(); i++) {
            char c = body.charAt(i);
            if (c == '\'' || c == '"') {
                Matcher m = STRING.matcher(body).region(i, body.length());
                if (m.lookingAt()) {
                    String content = m.group(1) != null ? m.group(1) : m.group(2);
                    sb.append('"').append(pythonUnescape(content).replace("\\", "\\\\").replace("\"", "\\\"")).append('"');
                    i = m.end() - 1;
                    continue;
                }
            }
            sb.append(c);
            if (c == '}' && i + 1 < body.length() && body.charAt(i + 1) == '}') sb.append(' ');
        }
        return sb.toString();
    }

    /** Python's "unicode-escape" reading of a string literal's body, which is how Jinja reads it. */
    private String pythonUnescape(String s) {
        if (s.indexOf('\\') < 0) return s;
        StringBuilder sb = new StringBuilder(s.length());
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c != '\\' || i + 1 >= s.length()) {
                sb.append(c);
                continue;
            }
            char e = s.charAt(++i);
            switch (e) {
                case '\n' -> { } // a backslash before a newline continues the line
                case '\\', '\'', '"' -> sb.append(e);
                case 'a' -> sb.append('\u0007');
                case 'b' -> sb.append('\b');
                case 'f' -> sb.append('\f');
                case 'n' -> sb.append('\n');
                case 'r' -> sb.append('\r');
                case 't' -> sb.append('\t');
                case 'v' -> sb.append('\u000B');
                case 'x', 'u', 'U' -> {
                    int digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
                    String hex = s.substring(i + 1, Math.min(s.length(), i + 1 + digits));
                    if (hex.length() != digits || !hex.chars().allMatch(h -> Character.digit(h, 16) >= 0)) throw error("truncated \\" + e + " escape in a string literal");
                    sb.appendCodePoint(Integer.parseInt(hex, 16));
                    i += digits;
                }
                case 'N' -> {
                    int close = s.indexOf('}', i);
                    if (i + 1 >= s.length() || s.charAt(i + 1) != '{' || close < 0) throw error("malformed \\N{...} escape in a string literal");
                    try {
                        sb.appendCodePoint(Character.codePointOf(s.substring(i + 2, close)));
                    } catch (IllegalArgumentException ex) {
                        throw error("unknown character name in \\N{" + s.substring(i + 2, close) + "}");
                    }
                    i = close;
                }
                default -> {
                    if (e >= '0' && e <= '7') {
                        int end = i;
                        while (end < s.length() && end < i + 3 && s.charAt(end) >= '0' && s.charAt(end) <= '7') end++;
                        sb.appendCodePoint(Integer.parseInt(s.substring(i, end), 8));
                        i = end - 1;
                    } else {
                        sb.append('\\').append(e); // Python keeps unknown escapes as written
                    }
                }
            }
        }
        return sb.toString();
    }

    private String where(int offset) {
        int line = 1;
        for (int i = 0; i < offset && i < src.length(); i++) if (src.charAt(i) == '\n') line++;
        return "line " + line;
    }

    private ChatTemplateException error(String what) {
        return new ChatTemplateException(templateName + " is not valid Jinja: " + what);
    }
}
