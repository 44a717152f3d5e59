#!/usr/bin/env bash
# Builds the replication helper (src/native/replicator/*.c, libfuse3) into
# src/native/prebuilt/linux-x64/holdfast-replicator, which is committed so that users need no compiler.
# Needs gcc and pkg-config + libfuse3-dev (Debian: gcc pkg-config libfuse3-dev).
set -euo pipefail
cd "$(dirname "$0")/.."
src=src/native/replicator
out=src/native/prebuilt/linux-x64/holdfast-replicator
mkdir -p "$(dirname "$out")"
# -ffile-prefix-map keeps the build directory out of the binary (reproducible across checkouts)
gcc -O2 -g0 -std=gnu11 -Wall -Wextra -Wno-unused-result -pthread -D_FILE_OFFSET_BITS=64 \
  -ffile-prefix-map="$PWD"=. \
  $(pkg-config --cflags fuse3) \
  -o "$out.tmp" "$src"/main.c "$src"/wire.c "$src"/sha256.c "$src"/primary.c "$src"/resync.c "$src"/secondary.c \
  $(pkg-config --libs fuse3) -ldl
mv "$out.tmp" "$out"
"$out" selftest >/dev/null
echo "built $out"
