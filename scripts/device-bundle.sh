#!/usr/bin/env bash
# Builds the self-contained bundle that runs lora4j on a machine with a GPU but no JDK:
#   .bundle/jre.tar.xz    a jlink-made Java 25 runtime (the modules lora4j and its libraries use)
#   .bundle/lora4j-cli.jar, .bundle/lib/  the CLI jar and its runtime dependencies (lora4j-cuda carries the nvcc-built kernels)
#   .bundle/test/         test classes of lora4j-core and lora4j-cuda, their test dependencies and the JUnit
#                         console launcher, so the backend test suite runs there
#   .bundle/assets.tar.xz the tokenizers from ../shared (the model-comparison and tokenizer scripts read them)
#   .bundle/reference/    the reference stack's benchmark script
# Then scripts/device-run.sh, run there from the repository root, unpacks it and runs what it is asked.
# Usage: scripts/device-bundle.sh [--skip-build]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/find-java25.sh
root=$(pwd)
out=$root/.bundle
if [ "${1:-}" != "--skip-build" ]; then
    mvn -B -ntp -q -o install -DskipTests || mvn -B -ntp -q install -DskipTests
fi
rm -rf "$out"
mkdir -p "$out/lib" "$out/test/lib" "$out/test/classes" "$out/reference"
cp lora4j-cli/target/dist/lora4j-cli.jar "$out/"  # its manifest finds lib/ beside it
cp lora4j-cli/target/dist/lib/*.jar "$out/lib/"

# Test classpath: the test classes of core and cuda and everything they need at test time.
mvn -B -ntp -q -o -pl lora4j-cuda dependency:build-classpath -Dmdep.includeScope=test \
    -Dmdep.outputFile="$out/test/cp.txt" >/dev/null
# Only what the runtime lib/ lacks; the console launcher already holds JUnit, and AssertJ's plain assertions do
# not need byte-buddy (9 MB), which would not fit.
tr ':' '\n' < "$out/test/cp.txt" | grep '\.jar$' | grep -v '/lora4j-' | while read -r jar; do
    name=$(basename "$jar")
    case "$name" in junit-*|opentest4j-*|apiguardian-*|byte-buddy-*) continue ;; esac
    [ -f "$out/lib/$name" ] || cp "$jar" "$out/test/lib/"
done
rm "$out/test/cp.txt"
for m in lora4j-core lora4j-cuda; do
    mkdir -p "$out/test/classes/$m"
    cp -r "$m/target/test-classes/." "$out/test/classes/$m/"
done
mvn -B -ntp -q -o dependency:copy -Dartifact=org.junit.platform:junit-platform-console-standalone:1.14.1 \
    -DoutputDirectory="$out/test" >/dev/null 2>&1 \
 || mvn -B -ntp -q dependency:copy -Dartifact=org.junit.platform:junit-platform-console-standalone:1.14.1 \
    -DoutputDirectory="$out/test" >/dev/null

# The runtime: the modules the jars need (jdeps says java.desktop/java.sql for Jinjava's bean access).
jre=$(mktemp -d)/jre
"$JAVA_HOME/bin/jlink" --add-modules java.base,jdk.incubator.vector,java.desktop,java.sql,java.logging,java.management,jdk.unsupported,java.compiler,java.naming,java.xml,jdk.crypto.ec,jdk.zipfs \
    --strip-debug --no-header-files --no-man-pages --output "$jre" 2>/dev/null
tar -C "$(dirname "$jre")" -cf - jre | xz -T0 -6 > "$out/jre.tar.xz"
rm -rf "$(dirname "$jre")"

if [ -d ../shared/assets ]; then
    tar -C ../shared -cf - assets/tokenizers assets/chat-templates | xz -T0 -6 > "$out/assets.tar.xz"
    cp ../shared/reference/*.py "$out/reference/"
else
    echo "note: ../shared is absent; the bundle has no tokenizer assets or reference scripts" >&2
fi
du -sh "$out" "$out"/* | sed 's/^/  /'
total=$(du -sb "$out" | cut -f1)
if [ "$total" -gt $((60 * 1024 * 1024)) ]; then
    echo "bundle is $((total / 1048576)) MiB: over the 60 MiB that can travel with the working tree" >&2
    exit 1
fi
