#!/usr/bin/env bash
# Run on the GPU machine from the repository root, after scripts/device-bundle.sh made .bundle here.
# Unpacks the runtime and assets into /tmp/lora4j (once per machine) and then:
#   scripts/device-run.sh tests [junit-console-args...]   runs the core and CUDA test suites
#   scripts/device-run.sh lora4j <cli args...>            runs the lora4j CLI
#   scripts/device-run.sh java <java args...>              runs java with lora4j's class path and flags
# Results the caller wants back should be written under $OUT.
set -euo pipefail
root=$(pwd)
b=$root/.bundle
t=/tmp/lora4j
mkdir -p "$t"
if [ ! -x "$t/jre/bin/java" ]; then
    xz -dc "$b/jre.tar.xz" | tar -C "$t" -xf -
fi
# Tests and tools look for the shared assets at ../shared beside the repository, as on a development machine.
shared=$(cd "$root/.." && pwd)/shared
if [ -f "$b/assets.tar.xz" ] && [ ! -d "$shared/assets/tokenizers" ]; then
    mkdir -p "$shared/reference"
    xz -dc "$b/assets.tar.xz" | tar -C "$shared" -xf -
    cp "$b"/reference/*.py "$shared/reference/" 2>/dev/null || true
fi
java=$t/jre/bin/java
flags=(--add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED -Xss4m)
# Extra JVM flags, e.g. LORA4J_JAVA_OPTS="-Dlora4j.cuda.profile=true -Xmx64g".
read -r -a extra <<<"${LORA4J_JAVA_OPTS:-}"
flags+=("${extra[@]}")
cmd=${1:?usage: device-run.sh tests|lora4j|java ...}
shift
case "$cmd" in
    tests)
        # The console launcher does not expand class-path wildcards: list the jars.
        cp="$b/test/classes/lora4j-core:$b/test/classes/lora4j-cuda:$b/lora4j-cli.jar"
        for jar in "$b"/lib/*.jar "$b"/test/lib/*.jar; do cp="$cp:$jar"; done
        # The launcher refuses a class-path scan beside explicit selectors (--select-class ...): scan only without.
        scan=(--scan-class-path "$b/test/classes/lora4j-core:$b/test/classes/lora4j-cuda")
        for arg in "$@"; do
            case "$arg" in --select*) scan=() ;; esac
        done
        exec "$java" "${flags[@]}" -jar "$b"/test/junit-platform-console-standalone-*.jar execute \
            --class-path "$cp" "${scan[@]}" --details=tree --disable-banner "$@"
        ;;
    lora4j)
        exec "$java" "${flags[@]}" -jar "$b/lora4j-cli.jar" "$@"
        ;;
    java)
        # Test classes too, for the comparison and profiling mains kept there. LORA4J_JAVA_WRAPPER, when set, is a
        # command that runs the JVM (scripts/device-ncu.sh puts Nsight Compute there).
        read -r -a wrapper <<<"${LORA4J_JAVA_WRAPPER:-}"
        exec "${wrapper[@]}" "$java" "${flags[@]}" -cp "$b/lora4j-cli.jar:$b/lib/*:$b/test/classes/lora4j-core:$b/test/classes/lora4j-cuda" "$@"
        ;;
    *)
        echo "unknown command '$cmd': use tests, lora4j or java" >&2
        exit 2
        ;;
esac
