package dev.lora4j.chat;

import com.hubspot.jinjava.el.ext.AstRangeBracket;
import jinjava.de.odysseus.el.tree.Bindings;
import jinjava.de.odysseus.el.tree.impl.ast.AstNode;
import jinjava.javax.el.ELContext;
import jinjava.javax.el.ELException;

/**
 * {@code text[a:b]} on a string as Python slices it: by code point (Jinjava counts UTF-16 units and can cut an
 * emoji in half) and with out-of-range bounds clamped instead of failing. Lists slice as Jinjava does.
 */
final class PythonSlice extends AstRangeBracket {
    PythonSlice(AstNode base, AstNode rangeStart, AstNode rangeMax, boolean lvalue, boolean strict, boolean ignoreReturnType) {
        super(base, rangeStart, rangeMax, lvalue, strict, ignoreReturnType);
    }

    @Override
    public Object eval(Bindings bindings, ELContext context) {
        Object base = prefix.eval(bindings, context);
        if (!(base instanceof CharSequence text)) return super.eval(bindings, context);
        int[] cps = text.toString().codePoints().toArray();
        int n = cps.length;
        int start = bound(property, 0, n, bindings, context);
        int end = bound(rangeMax, n, n, bindings, context);
        return start >= end ? "" : new String(cps, start, end - start);
    }

    private static int bound(AstNode node, int fallback, int length, Bindings bindings, ELContext context) {
        if (node == null) return fallback;
        Object v = node.eval(bindings, context);
        if (v == null) return fallback;
        if (!(v instanceof Number num)) throw new ELException("slice bound " + v + " is not a number");
        int i = num.intValue();
        if (i < 0) i += length;
        return Math.max(0, Math.min(length, i));
    }
}
