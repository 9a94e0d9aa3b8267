package dev.lora4j.chat;

import jinjava.javax.el.ELContext;
import jinjava.javax.el.ELResolver;

import java.beans.FeatureDescriptor;
import java.util.Iterator;

/**
 * Resolves Python str method calls on strings ({@code message.content.strip()}) before Jinjava's bean resolver
 * would try Java's methods of the same name. Everything else falls through to the resolvers after it.
 */
final class PythonMethodsResolver extends ELResolver {
    @Override
    public Object invoke(ELContext context, Object base, Object method, Class<?>[] paramTypes, Object[] params) {
        if (base instanceof CharSequence s && method != null) {
            Object result = PythonStrings.call(s.toString(), method.toString(), params);
            if (result != PythonStrings.NOT_A_METHOD) {
                context.setPropertyResolved(true);
                return result;
            }
        }
        return null;
    }

    @Override
    public Object getValue(ELContext context, Object base, Object property) {
        return null;
    }

    @Override
    public Class<?> getType(ELContext context, Object base, Object property) {
        return null;
    }

    @Override
    public void setValue(ELContext context, Object base, Object property, Object value) {
        // never resolves properties; later resolvers handle them
    }

    @Override
    public boolean isReadOnly(ELContext context, Object base, Object property) {
        return true;
    }

    @Override
    public Iterator<FeatureDescriptor> getFeatureDescriptors(ELContext context, Object base) {
        return null;
    }

    @Override
    public Class<?> getCommonPropertyType(ELContext context, Object base) {
        return null;
    }
}
