# Sourced by lora4j's scripts: sets JAVA_HOME to a Java 25+ JDK, or explains how to get one and exits.
# Order: $LORA4J_JAVA_HOME, $JAVA_HOME, the JDK of `java` on the PATH, then the usual install folders.
lora4j_java_major() {
    "$1/bin/java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p' | cut -d. -f1
}
lora4j_find_java25() {
    local candidates=()
    [ -n "${LORA4J_JAVA_HOME:-}" ] && candidates+=("$LORA4J_JAVA_HOME")
    [ -n "${JAVA_HOME:-}" ] && candidates+=("$JAVA_HOME")
    if command -v java >/dev/null 2>&1; then
        candidates+=("$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")")
    fi
    local d
    for d in /usr/lib/jvm/temurin-2[5-9]* /usr/lib/jvm/*-2[5-9]* /usr/lib/jvm/jdk-2[5-9]* /opt/java/* /opt/jdk*; do
        [ -d "$d" ] && candidates+=("$d")
    done
    for d in "${candidates[@]}"; do
        if [ -x "$d/bin/java" ]; then
            local major
            major=$(lora4j_java_major "$d")
            if [ -n "$major" ] && [ "$major" -ge 25 ] 2>/dev/null; then
                echo "$d"
                return 0
            fi
        fi
    done
    return 1
}
if ! LORA4J_JDK=$(lora4j_find_java25); then
    echo "lora4j needs Java 25 or newer and found none (looked at \$LORA4J_JAVA_HOME, \$JAVA_HOME, java on the PATH, /usr/lib/jvm)." >&2
    echo "Install a JDK 25 (for example Temurin 25) and set LORA4J_JAVA_HOME to its folder." >&2
    exit 1
fi
export JAVA_HOME="$LORA4J_JDK"
