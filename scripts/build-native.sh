#!/usr/bin/env bash
# Builds the replication helper (src/native/replicator/*.c, libfuse3, libcrypto) into
# src/native/prebuilt/linux-x64/holdfast-replicator, which is committed so that users need no compiler.
# Needs gcc and pkg-config + libfuse3-dev + libssl-dev (Debian: gcc pkg-config libfuse3-dev libssl-dev). At run time
# it needs libfuse3.so.3 and libcrypto.so.3 (Debian 12: libfuse3-3, libssl3), linked dynamically.
#
# Reproducible: on the same Debian (same gcc, binutils, libfuse3-dev, libssl-dev) the output is byte-identical whatever the
# checkout path, the time or the locale, so CI can rebuild it and `git diff --exit-code` the committed file
# (.ci/run). What makes it so: fixed flags and source order; -ffile-prefix-map (no build path in the binary);
# -g0 (no debug info); no build-id note (-Wl,--build-id=none); -frandom-seed (fixed symbol-name seed);
# SOURCE_DATE_EPOCH / LC_ALL / TZ pinned (nothing here uses __DATE__, but the environment cannot leak in).
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C TZ=UTC SOURCE_DATE_EPOCH=0
src=src/native/replicator
out=src/native/prebuilt/linux-x64/holdfast-replicator
mkdir -p "$(dirname "$out")"
gcc -O2 -g0 -std=gnu11 -Wall -Wextra -Wno-unused-result -pthread -D_FILE_OFFSET_BITS=64 \
  -ffile-prefix-map="$PWD"=. -frandom-seed=holdfast-replicator -Wl,--build-id=none \
  $(pkg-config --cflags fuse3 libcrypto) \
  -o "$out.tmp" "$src"/main.c "$src"/wire.c "$src"/crypto.c "$src"/primary.c "$src"/resync.c "$src"/secondary.c "$src"/filter.c \
  $(pkg-config --libs fuse3 libcrypto)
chmod 0755 "$out.tmp"
mv "$out.tmp" "$out"
"$out" selftest --vectors test/vectors/wire.json >/dev/null # known answers + the wire vectors shared with wire.ts
echo "built $out"
