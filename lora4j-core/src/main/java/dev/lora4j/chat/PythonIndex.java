package dev.lora4j.chat;

import jinjava.de.odysseus.el.tree.Bindings;
import jinjava.de.odysseus.el.tree.impl.ast.AstBracket;
import jinjava.de.odysseus.el.tree.impl.ast.AstNode;
import jinjava.javax.el.ELContext;

/** {@code text[i]} on a string as Python indexes it: one code point, negative indices from the end. */
final class PythonIndex extends AstBracket {
    PythonIndex(AstNode base, AstNode property, boolean lvalue, boolean strict, boolean ignoreReturnType) {
        super(base, property, lvalue, strict, ignoreReturnType);
    }

    @Override
    public Object eval(Bindings bindings, ELContext context) {
        Object base = prefix.eval(bindings, context);
        if (base instanceof CharSequence text) {
            Object index = property.eval(bindings, context);
            if (index instanceof Number num) {
                int[] cps = text.toString().codePoints().toArray();
                int i = num.intValue() < 0 ? num.intValue() + cps.length : num.intValue();
                return i >= 0 && i < cps.length ? Character.toString(cps[i]) : null;
            }
        }
        return super.eval(bindings, context);
    }
}
