#!/usr/bin/env bash
# Idempotent set-up used by `npm test`, `npm run demo` and `.ci/run`: installs the Debian packages the
# tests and the demo need (only those missing, so a prepared machine pays nothing) and the npm
# dependencies (npm ci when node_modules is missing or older than the lockfile).
set -euo pipefail
cd "$(dirname "$0")/.."

# command -> Debian package
declare -A NEED=(
  [ip]=iproute2 [nft]=nftables [ping]=iputils-ping [arping]=iputils-arping [ndisc6]=ndisc6
  [curl]=curl [stress-ng]=stress-ng [pgrep]=procps [nsenter]=util-linux [tcpdump]=tcpdump
  [clang]=clang [llvm-strip]=llvm [bpftool]=bpftool [fusermount3]=fuse3 [pkg-config]=pkg-config
  [iptables]=iptables [chromium]=chromium [capsh]=libcap2-bin
  [openssl]=openssl
)
# Benchmarks only (`npm run bench:*` sets HOLDFAST_SETUP_BENCH=1): the tools and the peers we measure against.
if [ "${HOLDFAST_SETUP_BENCH:-}" = 1 ]; then
  NEED[iperf3]=iperf3
  NEED[wrk]=wrk
  NEED[haproxy]=haproxy
  NEED[keepalived]=keepalived
  NEED[lsyncd]=lsyncd
  NEED[rsync]=rsync
fi
missing=()
for cmd in "${!NEED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEED[$cmd]}")
done
[ -f /usr/include/bpf/libbpf.h ] || missing+=(libbpf-dev)
[ -f /usr/include/fuse3/fuse.h ] || missing+=(libfuse3-dev)
# the replication helper's build links OpenSSL 3's libcrypto (headers, pkg-config file)
[ -f /usr/include/openssl/evp.h ] || missing+=(libssl-dev)
# the mirror's JavaScript FUSE fallback (fuse-native loads libfuse.so.2)
ls /usr/lib/*/libfuse.so.2 >/dev/null 2>&1 || missing+=(libfuse2)
# the farm filter's userspace fallback (NFQUEUE through koffi)
ls /usr/lib/*/libnetfilter_queue.so.1 >/dev/null 2>&1 || missing+=(libnetfilter-queue1)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-fund --no-audit --loglevel=error
fi

# The mirror's replication helper is committed prebuilt; rebuild it when missing or older than its sources.
helper=src/native/prebuilt/linux-x64/holdfast-replicator
if [ ! -x "$helper" ] || [ -n "$(find src/native/replicator -newer "$helper" -type f \( -name "*.c" -o -name "*.h" \) 2>/dev/null | head -1)" ]; then
  if command -v gcc >/dev/null 2>&1 && pkg-config --exists fuse3 libcrypto 2>/dev/null; then bash scripts/build-native.sh; fi
fi
