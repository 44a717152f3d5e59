#!/usr/bin/env bash
# Rebuilds src/native/farm.bpf.o from farm.bpf.c + farm_shared.h. The object is committed (users need no
# compiler); CI runs this script and fails when `git diff --exit-code src/native/farm.bpf.o` shows a change.
# Reproducible: -fdebug-prefix-map keeps the build directory out of the debug info, and the source is
# compiled by a relative path from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
CLANG="${CLANG:-clang}"
OUT="${1:-src/native/farm.bpf.o}" # optional output path (the lab test rebuilds into a temp file and compares)
"$CLANG" -O2 -g -target bpf -D__TARGET_ARCH_x86 \
  -fdebug-prefix-map="$PWD"=. \
  -I/usr/include/x86_64-linux-gnu -Isrc/native \
  -Wall -Werror \
  -c src/native/farm.bpf.c -o "$OUT"
echo "build-bpf: $OUT ($(stat -c %s "$OUT") bytes, $("$CLANG" --version | head -1))"
