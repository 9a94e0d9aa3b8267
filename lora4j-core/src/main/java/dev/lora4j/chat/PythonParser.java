package dev.lora4j.chat;

import com.hubspot.jinjava.el.ExtendedSyntaxBuilder;
import com.hubspot.jinjava.el.ext.ExtendedParser;
import jinjava.de.odysseus.el.tree.impl.Builder;
import jinjava.de.odysseus.el.tree.impl.Parser;
import jinjava.de.odysseus.el.tree.impl.Scanner;
import com.hubspot.jinjava.el.ext.AstRangeBracket;
import jinjava.de.odysseus.el.tree.impl.ast.AstBracket;
import jinjava.de.odysseus.el.tree.impl.ast.AstNode;
import jinjava.de.odysseus.el.tree.impl.ast.AstUnary;

/**
 * Jinjava's expression parser with Jinja's precedence for {@code not}: in Jinja {@code not} binds more loosely
 * than comparisons, tests and filters, so {@code not x is defined} means {@code not (x is defined)} and
 * {@code not a|length == 1} means {@code not ((a|length) == 1)}; Jinjava's parser applies it to {@code x} alone.
 */
final class PythonParser extends ExtendedParser {
    PythonParser(Builder context, String input) {
        super(context, input);
    }

    /** The operand of "and": in Jinja, "not" sits between the boolean operators and the comparisons. */
    @Override
    protected AstNode eq(boolean required) throws Scanner.ScanException, Parser.ParseException {
        if (getToken().getSymbol() == Scanner.Symbol.NOT && !"in".equals(lookahead(0).getImage())) {
            consumeToken();
            return createAstUnary(eq(true), AstUnary.NOT);
        }
        return super.eq(required);
    }

    @Override
    protected AstRangeBracket createAstRangeBracket(AstNode base, AstNode rangeStart, AstNode rangeMax, boolean lvalue, boolean strict) {
        return new PythonSlice(base, rangeStart, rangeMax, lvalue, strict, context.isEnabled(Builder.Feature.IGNORE_RETURN_TYPE));
    }

    @Override
    protected AstBracket createAstBracket(AstNode base, AstNode property, boolean lvalue, boolean strict) {
        return new PythonIndex(base, property, lvalue, strict, context.isEnabled(Builder.Feature.IGNORE_RETURN_TYPE));
    }

    /** Builds expression trees with {@link PythonParser}. */
    static final class SyntaxBuilder extends ExtendedSyntaxBuilder {
        private static final long serialVersionUID = 1L;

        SyntaxBuilder() {
            super(Feature.METHOD_INVOCATIONS, Feature.VARARGS);
        }

        @Override
        protected Parser createParser(String expression) {
            return new PythonParser(this, expression);
        }
    }
}
