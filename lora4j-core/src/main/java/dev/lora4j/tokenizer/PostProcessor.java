package dev.lora4j.tokenizer;

import java.util.List;

/** The "post_processor" stage: wraps a single encoded sequence in its special tokens (BOS, EOS, CLS, SEP). */
interface PostProcessor {
    int[] process(int[] ids);

    /** Adds nothing (tokenizer.json's ByteLevel post-processor only adjusts offsets, which we do not track). */
    record None() implements PostProcessor {
        public int[] process(int[] ids) {
            return ids;
        }
    }

    record Sequence(List<PostProcessor> steps) implements PostProcessor {
        public int[] process(int[] ids) {
            for (PostProcessor p : steps) ids = p.process(ids);
            return ids;
        }
    }

    /** Fixed ids before and after the sequence: TemplateProcessing's single template, or BOS/EOS flags. */
    record Surround(int[] before, int[] after) implements PostProcessor {
        public int[] process(int[] ids) {
            int[] out = new int[before.length + ids.length + after.length];
            System.arraycopy(before, 0, out, 0, before.length);
            System.arraycopy(ids, 0, out, before.length, ids.length);
            System.arraycopy(after, 0, out, before.length + ids.length, after.length);
            return out;
        }
    }
}
