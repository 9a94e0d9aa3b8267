package dev.lora4j.chat;

import com.hubspot.jinjava.Jinjava;
import com.hubspot.jinjava.JinjavaConfig;
import com.hubspot.jinjava.LegacyOverrides;
import com.hubspot.jinjava.el.JinjavaInterpreterResolver;
import com.hubspot.jinjava.el.TruthyTypeConverter;
import com.hubspot.jinjava.lib.fn.ELFunctionDefinition;
import jinjava.de.odysseus.el.ExpressionFactoryImpl;
import jinjava.de.odysseus.el.tree.TreeStore;
import jinjava.de.odysseus.el.tree.impl.Cache;
import jinjava.javax.el.CompositeELResolver;
import jinjava.javax.el.ExpressionFactory;

/**
 * Jinjava set up to behave as the Jinja environment transformers renders chat templates with
 * (ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks, loop controls, tojson as json.dumps,
 * raise_exception and strftime_now) for templates that {@link JinjaTranslator} has prepared: Jinja's operator
 * precedence, Python's str methods, filters and value spellings, and no re-rendering of values that happen to
 * contain template syntax.
 */
final class JinjaEnvironment extends Jinjava {
    static final JinjaEnvironment INSTANCE = new JinjaEnvironment();

    private final ExpressionFactory expressions =
            new ExpressionFactoryImpl(new TreeStore(new PythonParser.SyntaxBuilder(), new Cache(512)), new TruthyTypeConverter());

    private JinjaEnvironment() {
        super(config());
        getGlobalContext().registerFilter(new TemplateFilters.ToJson());
        getGlobalContext().registerFilter(new TemplateFilters.Trim());
        getGlobalContext().registerFilter(new TemplateFilters.ToStr());
        getGlobalContext().registerFilter(new TemplateFilters.Length("length"));
        getGlobalContext().registerFilter(new TemplateFilters.Length("count"));
        getGlobalContext().registerFilter(new TemplateFilters.Extreme(true));
        getGlobalContext().registerFilter(new TemplateFilters.Extreme(false));
        getGlobalContext().registerFilter(new TemplateFilters.Items());
        try {
            getGlobalContext().registerFunction(new ELFunctionDefinition("", "raise_exception",
                    TemplateFunctions.class.getMethod("raiseException", Object.class)));
            getGlobalContext().registerFunction(new ELFunctionDefinition("", "strftime_now",
                    TemplateFunctions.class.getMethod("strftimeNow", String.class)));
            getGlobalContext().registerFunction(new ELFunctionDefinition("", JinjaTranslator.OUTPUT_FUNCTION,
                    TemplateFunctions.class.getMethod("pythonStr", Object.class)));
            getGlobalContext().registerFunction(new ELFunctionDefinition("", JinjaTranslator.LOOP_FUNCTION,
                    TemplateFunctions.class.getMethod("loopFilter", Object.class, Object.class)));
        } catch (NoSuchMethodException e) {
            throw new IllegalStateException(e);
        }
    }

    private static JinjavaConfig config() {
        CompositeELResolver resolver = new CompositeELResolver();
        resolver.add(new PythonMethodsResolver());
        resolver.add(JinjavaInterpreterResolver.DEFAULT_RESOLVER_READ_ONLY);
        return JinjavaConfig.newBuilder()
                // JinjaTranslator has already applied Jinja's whitespace rules to the text.
                .withTrimBlocks(false)
                .withLstripBlocks(false)
                // A message containing "{{ x }}" is text, not a template.
                .withNestedInterpretationEnabled(false)
                .withElResolver(resolver)
                .withLegacyOverrides(LegacyOverrides.newBuilder()
                        .withEvaluateMapKeys(true)
                        .withIterateOverMapKeys(true)
                        .withUsePyishObjectMapper(true)
                        .withUseNaturalOperatorPrecedence(true)
                        .withParseWhitespaceControlStrictly(true)
                        .withAllowAdjacentTextNodes(true)
                        .withUseTrimmingForNotesAndExpressions(true)
                        .withKeepNullableLoopValues(true)
                        .build())
                .build();
    }

    @Override
    public ExpressionFactory getExpressionFactory() {
        return expressions;
    }
}
