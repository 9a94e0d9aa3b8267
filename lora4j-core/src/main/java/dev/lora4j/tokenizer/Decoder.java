package dev.lora4j.tokenizer;

import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The "decoder" stage of tokenizer.json: turns the list of token strings back into text. Each step maps a list
 * of strings to a list of strings; the result is their concatenation.
 */
interface Decoder {
    List<String> decodeChain(List<String> tokens);

    default String decode(List<String> tokens) {
        return String.join("", decodeChain(tokens));
    }

    record Sequence(List<Decoder> steps) implements Decoder {
        public List<String> decodeChain(List<String> tokens) {
            for (Decoder d : steps) tokens = d.decodeChain(tokens);
            return tokens;
        }
    }

    record Replace(Pattern pattern, String content) implements Decoder {
        public List<String> decodeChain(List<String> tokens) {
            List<String> out = new ArrayList<>(tokens.size());
            String replacement = Matcher.quoteReplacement(content);
            for (String t : tokens) out.add(pattern.matcher(t).replaceAll(replacement));
            return out;
        }
    }

    /** Runs of "<0xNN>" tokens become the text their bytes spell, or one U+FFFD per byte when invalid UTF-8. */
    record ByteFallback() implements Decoder {
        public List<String> decodeChain(List<String> tokens) {
            List<String> out = new ArrayList<>(tokens.size());
            byte[] pending = new byte[16];
            int n = 0;
            for (String t : tokens) {
                int b = byteValue(t);
                if (b >= 0) {
                    if (n == pending.length) pending = java.util.Arrays.copyOf(pending, n * 2);
                    pending[n++] = (byte) b;
                    continue;
                }
                flush(pending, n, out);
                n = 0;
                out.add(t);
            }
            flush(pending, n, out);
            return out;
        }

        private static void flush(byte[] bytes, int n, List<String> out) {
            if (n == 0) return;
            String s = Utf8.decodeStrict(bytes, n);
            if (s != null) out.add(s);
            else for (int i = 0; i < n; i++) out.add(String.valueOf(Utf8.REPLACEMENT));
        }

        private static int byteValue(String t) {
            if (t.length() != 6 || !t.startsWith("<0x") || t.charAt(5) != '>') return -1;
            int hi = Character.digit(t.charAt(3), 16), lo = Character.digit(t.charAt(4), 16);
            return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
        }
    }

    record Fuse() implements Decoder {
        public List<String> decodeChain(List<String> tokens) {
            return List.of(String.join("", tokens));
        }
    }

    /** Removes up to start leading and stop trailing occurrences of one character from every string. */
    record Strip(int content, int start, int stop) implements Decoder {
        public List<String> decodeChain(List<String> tokens) {
            List<String> out = new ArrayList<>(tokens.size());
            for (String t : tokens) {
                int[] cps = t.codePoints().toArray();
                int from = 0;
                for (int i = 0; i < Math.min(start, cps.length) && cps[i] == content; i++) from = i + 1;
                int to = cps.length;
                for (int i = 0; i < stop && cps.length - i - 1 >= from; i++) {
                    int index = cps.length - i - 1;
                    if (cps[index] != content) break;
                    to = index;
                }
                out.add(new String(cps, from, Math.max(0, to - from)));
            }
            return out;
        }
    }

    /**
     * "▁" back to spaces; in the first token, with a prepend scheme other than never, the replacement characters
     * are dropped instead (that is how the reference removes the space it prepended).
     */
    record Metaspace(int replacement, PreTokenizer.PrependScheme prependScheme) implements Decoder {
        public List<String> decodeChain(List<String> tokens) {
            List<String> out = new ArrayList<>(tokens.size());
            for (int i = 0; i < tokens.size(); i++) {
                boolean drop = i == 0 && prependScheme != PreTokenizer.PrependScheme.NEVER;
                StringBuilder sb = new StringBuilder(tokens.get(i).length());
                tokens.get(i).codePoints().forEach(cp -> {
                    if (cp != replacement) sb.appendCodePoint(cp);
                    else if (!drop) sb.append(' ');
                });
                out.add(sb.toString());
            }
            return out;
        }
    }

    /**
     * Byte-level tokens back to bytes and then to text (invalid UTF-8 becomes U+FFFD). A token with a character
     * outside the byte alphabet (an added token such as "<|eot_id|>" may have one) contributes its own UTF-8.
     */
    record ByteLevel() implements Decoder {
        public List<String> decodeChain(List<String> tokens) {
            java.io.ByteArrayOutputStream bytes = new java.io.ByteArrayOutputStream();
            for (String t : tokens) {
                byte[] mapped = new byte[t.length()];
                int n = 0;
                boolean allMapped = true;
                for (int i = 0; i < t.length(); ) {
                    int cp = t.codePointAt(i);
                    int b = ByteLevelAlphabet.byteOf(cp);
                    if (b < 0) {
                        allMapped = false;
                        break;
                    }
                    mapped[n++] = (byte) b;
                    i += Character.charCount(cp);
                }
                if (allMapped) bytes.write(mapped, 0, n);
                else bytes.writeBytes(Utf8.encode(t));
            }
            byte[] all = bytes.toByteArray();
            return List.of(Utf8.decodeLossy(all, all.length));
        }
    }
}
