package dev.lora4j.chat;

import com.hubspot.jinjava.interpret.InterpretException;
import com.hubspot.jinjava.interpret.JinjavaInterpreter;
import com.hubspot.jinjava.util.ForLoop;
import com.hubspot.jinjava.util.ObjectIterator;
import com.hubspot.jinjava.util.ObjectTruthValue;

import java.time.LocalDateTime;
import java.time.format.TextStyle;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * The globals transformers gives chat templates, raise_exception (the template refuses the conversation) and
 * strftime_now (the current local time, formatted with a C strftime format), and the two functions that
 * {@link JinjaTranslator} writes into translated templates. Public only because Jinjava calls them reflectively.
 */
public final class TemplateFunctions {
    /** The message of the first raise_exception of the render on this thread, if any. */
    static final ThreadLocal<String> RAISED = new ThreadLocal<>();

    private TemplateFunctions() {}

    public static Object raiseException(Object message) {
        String text = PythonValues.str(message);
        if (RAISED.get() == null) RAISED.set(text);
        throw new IllegalStateException(text);
    }

    /** What {{ x }} prints: Python's str(x), except that a missing value (Jinjava's null) prints nothing. */
    public static String pythonStr(Object value) {
        return value == null ? "" : PythonValues.str(value);
    }

    /** The items of a loop that pass its "if" condition, evaluated with the loop variables bound to each item. */
    public static List<Object> loopFilter(Object items, Object conditionIndex) {
        JinjavaInterpreter interpreter = JinjavaInterpreter.getCurrent();
        @SuppressWarnings("unchecked")
        List<JinjaTranslator.LoopCondition> conditions = (List<JinjaTranslator.LoopCondition>) interpreter.getContext().get(JinjaTranslator.LOOP_CONDITIONS);
        JinjaTranslator.LoopCondition condition = conditions.get(((Number) conditionIndex).intValue());
        List<Object> kept = new ArrayList<>();
        ForLoop loop = ObjectIterator.getLoop(items);
        while (loop.hasNext()) {
            Object item = loop.next();
            try (var scope = interpreter.enterScope()) {
                bind(condition.targets(), item, interpreter);
                Object result = interpreter.resolveELExpression(condition.condition(), interpreter.getLineNumber());
                if (ObjectTruthValue.evaluate(result)) kept.add(item);
            }
        }
        return kept;
    }

    private static void bind(List<String> targets, Object item, JinjavaInterpreter interpreter) {
        if (targets.size() == 1) {
            interpreter.getContext().put(targets.getFirst(), item);
            return;
        }
        List<Object> parts = new ArrayList<>();
        if (item instanceof Map.Entry<?, ?> e) {
            parts.add(e.getKey());
            parts.add(e.getValue());
        } else if (item instanceof Iterable<?> it) {
            it.forEach(parts::add);
        } else {
            throw new InterpretException("cannot unpack " + PythonValues.repr(item) + " into " + targets);
        }
        for (int i = 0; i < targets.size(); i++) interpreter.getContext().put(targets.get(i), i < parts.size() ? parts.get(i) : null);
    }

    public static String strftimeNow(String format) {
        return strftime(LocalDateTime.now(), format);
    }

    /** The C strftime directives templates use; others are copied through. */
    static String strftime(LocalDateTime t, String format) {
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < format.length(); i++) {
            char c = format.charAt(i);
            if (c != '%' || i + 1 >= format.length()) {
                sb.append(c);
                continue;
            }
            char d = format.charAt(++i);
            switch (d) {
                case 'Y' -> sb.append(t.getYear());
                case 'y' -> sb.append(String.format("%02d", t.getYear() % 100));
                case 'm' -> sb.append(String.format("%02d", t.getMonthValue()));
                case 'd' -> sb.append(String.format("%02d", t.getDayOfMonth()));
                case 'H' -> sb.append(String.format("%02d", t.getHour()));
                case 'I' -> sb.append(String.format("%02d", (t.getHour() + 11) % 12 + 1));
                case 'M' -> sb.append(String.format("%02d", t.getMinute()));
                case 'S' -> sb.append(String.format("%02d", t.getSecond()));
                case 'p' -> sb.append(t.getHour() < 12 ? "AM" : "PM");
                case 'b' -> sb.append(t.getMonth().getDisplayName(TextStyle.SHORT, Locale.ENGLISH));
                case 'B' -> sb.append(t.getMonth().getDisplayName(TextStyle.FULL, Locale.ENGLISH));
                case 'a' -> sb.append(t.getDayOfWeek().getDisplayName(TextStyle.SHORT, Locale.ENGLISH));
                case 'A' -> sb.append(t.getDayOfWeek().getDisplayName(TextStyle.FULL, Locale.ENGLISH));
                case 'j' -> sb.append(String.format("%03d", t.getDayOfYear()));
                case '%' -> sb.append('%');
                default -> sb.append('%').append(d);
            }
        }
        return sb.toString();
    }
}
