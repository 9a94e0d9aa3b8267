package dev.lora4j.chat;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * Python's str methods, which chat templates call ({@code content.strip()}, {@code s.startswith("x")},
 * {@code text.split("\n")}) and which Java strings lack or define differently (Java's split takes a regex, its
 * strip a narrower whitespace).
 */
final class PythonStrings {
    /** Returned by call when the name is not a str method we provide. */
    static final Object NOT_A_METHOD = new Object();

    private PythonStrings() {}

    /** Python's str.isspace for one character. */
    static boolean isSpace(int cp) {
        return switch (cp) {
            case 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F, 0x20, 0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000 -> true;
            default -> cp >= 0x2000 && cp <= 0x200A;
        };
    }

    static Object call(String s, String method, Object[] args) {
        Object[] a = args == null ? new Object[0] : args;
        return switch (method) {
            case "strip" -> strip(s, charsArg(a, 0), true, true);
            case "lstrip" -> strip(s, charsArg(a, 0), true, false);
            case "rstrip" -> strip(s, charsArg(a, 0), false, true);
            case "startswith" -> affix(s, arg(a, 0), true);
            case "endswith" -> affix(s, arg(a, 0), false);
            case "split" -> split(s, stringOrNull(arg(a, 0)), intArg(a, 1, -1));
            case "rsplit" -> rsplit(s, stringOrNull(arg(a, 0)), intArg(a, 1, -1));
            case "splitlines" -> splitlines(s);
            case "replace" -> replace(s, str(arg(a, 0)), str(arg(a, 1)), intArg(a, 2, -1));
            case "upper" -> s.toUpperCase(Locale.ROOT);
            case "lower" -> s.toLowerCase(Locale.ROOT);
            case "title" -> title(s);
            case "capitalize" -> s.isEmpty() ? s : s.substring(0, s.offsetByCodePoints(0, 1)).toUpperCase(Locale.ROOT)
                    + s.substring(s.offsetByCodePoints(0, 1)).toLowerCase(Locale.ROOT);
            case "find" -> codePointIndex(s, s.indexOf(str(arg(a, 0))));
            case "rfind" -> codePointIndex(s, s.lastIndexOf(str(arg(a, 0))));
            case "count" -> count(s, str(arg(a, 0)));
            case "join" -> join(s, arg(a, 0));
            case "isdigit" -> !s.isEmpty() && s.codePoints().allMatch(Character::isDigit);
            case "isalpha" -> !s.isEmpty() && s.codePoints().allMatch(Character::isLetter);
            case "isalnum" -> !s.isEmpty() && s.codePoints().allMatch(Character::isLetterOrDigit);
            case "isspace" -> !s.isEmpty() && s.codePoints().allMatch(PythonStrings::isSpace);
            case "isupper" -> s.codePoints().anyMatch(Character::isUpperCase) && s.codePoints().noneMatch(Character::isLowerCase);
            case "islower" -> s.codePoints().anyMatch(Character::isLowerCase) && s.codePoints().noneMatch(Character::isUpperCase);
            case "removeprefix" -> s.startsWith(str(arg(a, 0))) ? s.substring(str(arg(a, 0)).length()) : s;
            case "removesuffix" -> !str(arg(a, 0)).isEmpty() && s.endsWith(str(arg(a, 0))) ? s.substring(0, s.length() - str(arg(a, 0)).length()) : s;
            default -> NOT_A_METHOD;
        };
    }

    static String strip(String s, String chars, boolean left, boolean right) {
        int start = 0, end = s.length();
        if (left) {
            while (start < end) {
                int cp = s.codePointAt(start);
                if (!(chars == null ? isSpace(cp) : chars.indexOf(cp) >= 0)) break;
                start += Character.charCount(cp);
            }
        }
        if (right) {
            while (end > start) {
                int cp = s.codePointBefore(end);
                if (!(chars == null ? isSpace(cp) : chars.indexOf(cp) >= 0)) break;
                end -= Character.charCount(cp);
            }
        }
        return s.substring(start, end);
    }

    private static boolean affix(String s, Object what, boolean prefix) {
        if (what instanceof Iterable<?> options) {
            for (Object o : options) if (prefix ? s.startsWith(str(o)) : s.endsWith(str(o))) return true;
            return false;
        }
        return prefix ? s.startsWith(str(what)) : s.endsWith(str(what));
    }

    static List<String> split(String s, String sep, int maxSplit) {
        List<String> out = new ArrayList<>();
        if (sep == null) {
            int i = 0, n = s.length();
            while (true) {
                while (i < n && isSpace(s.codePointAt(i))) i += Character.charCount(s.codePointAt(i));
                if (i >= n) break;
                if (maxSplit >= 0 && out.size() == maxSplit) {
                    out.add(strip(s.substring(i), null, false, true));
                    break;
                }
                int j = i;
                while (j < n && !isSpace(s.codePointAt(j))) j += Character.charCount(s.codePointAt(j));
                out.add(s.substring(i, j));
                i = j;
            }
            return out;
        }
        if (sep.isEmpty()) throw new IllegalArgumentException("empty separator");
        int from = 0;
        while (maxSplit < 0 || out.size() < maxSplit) {
            int at = s.indexOf(sep, from);
            if (at < 0) break;
            out.add(s.substring(from, at));
            from = at + sep.length();
        }
        out.add(s.substring(from));
        return out;
    }

    static List<String> rsplit(String s, String sep, int maxSplit) {
        if (maxSplit < 0) return split(s, sep, -1);
        List<String> out = new ArrayList<>();
        if (sep == null) {
            int end = s.length();
            while (true) {
                while (end > 0 && isSpace(s.codePointBefore(end))) end -= Character.charCount(s.codePointBefore(end));
                if (end <= 0) break;
                if (out.size() == maxSplit) {
                    out.addFirst(strip(s.substring(0, end), null, true, false));
                    break;
                }
                int start = end;
                while (start > 0 && !isSpace(s.codePointBefore(start))) start -= Character.charCount(s.codePointBefore(start));
                out.addFirst(s.substring(start, end));
                end = start;
            }
            return out;
        }
        int to = s.length();
        while (out.size() < maxSplit) {
            int at = s.lastIndexOf(sep, to - sep.length());
            if (at < 0) break;
            out.addFirst(s.substring(at + sep.length(), to));
            to = at;
        }
        out.addFirst(s.substring(0, to));
        return out;
    }

    private static List<String> splitlines(String s) {
        List<String> out = new ArrayList<>();
        int start = 0;
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            boolean lineBreak = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D || c == 0x1E
                    || c == 0x85 || c == 0x2028 || c == 0x2029;
            if (!lineBreak) continue;
            out.add(s.substring(start, i));
            if (c == '\r' && i + 1 < s.length() && s.charAt(i + 1) == '\n') i++;
            start = i + 1;
        }
        if (start < s.length()) out.add(s.substring(start));
        return out;
    }

    private static String replace(String s, String old, String with, int count) {
        if (count < 0) return s.replace(old, with);
        StringBuilder sb = new StringBuilder();
        int from = 0;
        for (int done = 0; done < count; done++) {
            int at = old.isEmpty() ? (from <= s.length() ? from : -1) : s.indexOf(old, from);
            if (at < 0) break;
            sb.append(s, from, at).append(with);
            if (old.isEmpty()) {
                if (at < s.length()) sb.appendCodePoint(s.codePointAt(at));
                from = at + (at < s.length() ? Character.charCount(s.codePointAt(at)) : 1);
            } else {
                from = at + old.length();
            }
        }
        if (from <= s.length()) sb.append(s.substring(Math.min(from, s.length())));
        return sb.toString();
    }

    private static long count(String s, String sub) {
        if (sub.isEmpty()) return s.codePointCount(0, s.length()) + 1L;
        long n = 0;
        for (int at = s.indexOf(sub); at >= 0; at = s.indexOf(sub, at + sub.length())) n++;
        return n;
    }

    private static String join(String sep, Object items) {
        if (!(items instanceof Iterable<?> it)) throw new IllegalArgumentException("str.join needs a list of strings");
        StringBuilder sb = new StringBuilder();
        boolean first = true;
        for (Object o : it) {
            if (!first) sb.append(sep);
            sb.append(str(o));
            first = false;
        }
        return sb.toString();
    }

    private static String title(String s) {
        StringBuilder sb = new StringBuilder(s.length());
        boolean previousCased = false;
        for (int i = 0; i < s.length(); ) {
            int cp = s.codePointAt(i);
            i += Character.charCount(cp);
            boolean cased = Character.isUpperCase(cp) || Character.isLowerCase(cp) || Character.isTitleCase(cp);
            sb.appendCodePoint(cased ? (previousCased ? Character.toLowerCase(cp) : Character.toTitleCase(cp)) : cp);
            previousCased = cased;
        }
        return sb.toString();
    }

    /** Python indexes strings by code point, Java by UTF-16 unit. */
    private static int codePointIndex(String s, int utf16Index) {
        return utf16Index < 0 ? -1 : s.codePointCount(0, utf16Index);
    }

    private static Object arg(Object[] a, int i) {
        return i < a.length ? a[i] : null;
    }

    private static String charsArg(Object[] a, int i) {
        return stringOrNull(arg(a, i));
    }

    private static String stringOrNull(Object o) {
        return o == null ? null : str(o);
    }

    private static int intArg(Object[] a, int i, int fallback) {
        Object o = arg(a, i);
        return o instanceof Number n ? n.intValue() : fallback;
    }

    private static String str(Object o) {
        return o == null ? "None" : o.toString();
    }
}
