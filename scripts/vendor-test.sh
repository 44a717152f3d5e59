#!/usr/bin/env bash
# Vendor test: the package as a user gets it. Builds, packs, installs the tarball into a scratch project outside
# the repository with every C/C++ compiler hidden (raw-socket's node-gyp build must fail and the install still
# succeed: it is optional), typechecks the vendor programs of test/vendor against the installed package (ESM with
# nodenext and bundler resolution, CJS with nodenext), loads it with import and require, and counts the lines of
# HA code of each vendor program.
#   bash scripts/vendor-test.sh     (npm run test:vendor; HOLDFAST_VENDOR_SKIP_BUILD=1 reuses dist/)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

work="$(mktemp -d "${TMPDIR:-/tmp}/holdfast-vendor.XXXXXX")"
trap 'rm -rf "$work"' EXIT
say() { echo "vendor: $*"; }
fail() {
  echo "vendor: FAILED: $*" >&2
  exit 1
}

# ---- build and pack ------------------------------------------------------------------------------------
if [ "${HOLDFAST_VENDOR_SKIP_BUILD:-}" != "1" ]; then npx tsup --silent; fi
[ -f dist/index.js ] && [ -f dist/index.cjs ] || fail "dist/ is not built"
tarball="$work/$(npm pack --silent --pack-destination "$work" | tail -n 1)"
[ -f "$tarball" ] || fail "npm pack produced no tarball"
say "packed $(basename "$tarball") ($(du -k "$tarball" | cut -f1) KiB)"

# ---- a PATH without any compiler -----------------------------------------------------------------------
# Only node, npm, python (node-gyp's configure step), make and basic tools: node-gyp gets as far as make, which
# finds no cc/c++/g++. Compiler variables are cleared too.
nobin="$work/bin"
mkdir -p "$nobin"
python="$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null || true)"
for tool in node npm npx sh bash env make uname cat cp mv rm ln ls mkdir rmdir chmod touch sed grep awk tr \
  head tail wc sort find xargs dirname basename readlink realpath tar gzip mktemp id which true false test expr \
  printf echo flock; do
  p="$(type -P "$tool" || true)" # the file, not a shell builtin (printf, echo, test)
  [ -n "$p" ] && ln -s "$(readlink -f "$p")" "$nobin/$tool"
done
[ -n "$python" ] && ln -s "$python" "$nobin/python3"
for cc in cc gcc g++ c++ clang clang++ cpp ld; do
  PATH="$nobin" command -v "$cc" >/dev/null 2>&1 && fail "$cc is still on the restricted PATH"
done

# ---- the scratch project -------------------------------------------------------------------------------
app="$work/app"
mkdir -p "$app"
tsVersion="$(node -p 'require("typescript/package.json").version')"
typesVersion="$(node -p 'require("@types/node/package.json").version')"
tsxVersion="$(node -p 'require("tsx/package.json").version')"
# The install scripts the package itself approves (its allowScripts): raw-socket's build is attempted, and must
# fail. (fuse-native's is not approved: its node-gyp-build compiles when the prebuild cannot load, i.e. without
# libfuse2, and it is not optional.)
node -e '
  const own = require(process.argv[1]);
  const app = { name: "holdfast-vendor-app", version: "1.0.0", private: true, type: "module", allowScripts: own.allowScripts ?? {} };
  require("fs").writeFileSync(process.argv[2], JSON.stringify(app, null, 2));' "$repo/package.json" "$app/package.json"
# Under `npm run`, the outer npm's settings come as npm_config_* variables (its prefix, log level, an empty
# allow-scripts list): clear them so this install is a plain one in the scratch project.
clear=(-u CC -u CXX -u CPP -u LD)
while IFS= read -r v; do clear+=(-u "$v"); done < <(compgen -e | grep -i '^npm_' || true)
(
  cd "$app"
  env "${clear[@]}" PATH="$nobin" \
    npm install --no-fund --no-audit --foreground-scripts "$tarball" "typescript@$tsVersion" "@types/node@$typesVersion" "tsx@$tsxVersion"
) >"$work/install.log" 2>&1 || {
  cat "$work/install.log" >&2
  fail "npm install of the tarball failed without a compiler"
}
[ -d "$app/node_modules/holdfast/dist" ] || fail "holdfast is not installed"
# raw-socket must not have been built: either npm dropped it (failed optional dependency) or it has no binary.
rawlog="$(sed -n '/raw-socket/,$p' "$work/install.log")" # from its first mention (its install script) onwards
if [ -f "$app/node_modules/raw-socket/build/Release/raw.node" ]; then
  fail "raw-socket was compiled: a compiler was reachable"
elif grep -q "gyp ERR\|make: \*\*\*" <<<"$rawlog"; then
  why="$(grep -m1 -o "[a-z+]*: \(No such file or directory\|not found\)" <<<"$rawlog" || true)"
  say "raw-socket: node-gyp build failed without a compiler (${why:-see npm output}); $([ -d "$app/node_modules/raw-socket" ] && echo "left without its binary" || echo "dropped as optional")"
else
  say "raw-socket: build skipped; $([ -d "$app/node_modules/raw-socket" ] && echo "installed without its binary" || echo "not installed")"
fi

# ---- typecheck the vendor programs against the installed package --------------------------------------
# The vendor programs are the repository's example nodes (they import "holdfast" alone) and a CJS program.
cp examples/mirror-node.ts "$app/mirror.ts"
cp examples/farm-node.ts "$app/farm.ts"
cp test/vendor/cjs.cts "$app/"
# Library files are checked too (skipLibCheck false) where the package's own declarations differ: index.d.ts
# (nodenext) and index.d.cts (cjs); the bundler setting reads the same index.d.ts as nodenext.
opts='"target": "ES2022", "lib": ["ES2023"], "types": ["node"], "strict": true, "noEmit": true'
cat >"$app/tsconfig.nodenext.json" <<EOF
{ "compilerOptions": { $opts, "skipLibCheck": false, "module": "nodenext", "moduleResolution": "nodenext" }, "files": ["mirror.ts", "farm.ts"] }
EOF
cat >"$app/tsconfig.bundler.json" <<EOF
{ "compilerOptions": { $opts, "skipLibCheck": true, "module": "esnext", "moduleResolution": "bundler" }, "files": ["mirror.ts", "farm.ts"] }
EOF
cat >"$app/tsconfig.cjs.json" <<EOF
{ "compilerOptions": { $opts, "skipLibCheck": false, "module": "nodenext", "moduleResolution": "nodenext" }, "files": ["cjs.cts"] }
EOF
for setting in nodenext bundler cjs; do
  # With the resolution trace: "holdfast" must resolve to the installed tarball, not the repository.
  if ! (cd "$app" && ./node_modules/.bin/tsc -p "tsconfig.$setting.json" --traceResolution >"$work/tsc.log" 2>&1); then
    grep "error TS" "$work/tsc.log" >&2 || tail -n 20 "$work/tsc.log" >&2
    fail "tsc ($setting) failed"
  fi
  resolved="$(grep -m1 "Module name 'holdfast' was successfully resolved" "$work/tsc.log" || true)"
  case "$resolved" in
    *"'$app/node_modules/holdfast/"*) ;;
    *) fail "tsc ($setting): holdfast did not resolve into the scratch project: ${resolved:-not resolved}" ;;
  esac
  target="${resolved##*"$app"/}"
  say "tsc --noEmit ($setting): ok, holdfast -> ${target%%\'*}"
done

# ---- load it, ESM and CJS ------------------------------------------------------------------------------
check='for (const k of ["Membership", "Module", "PacketFilter", "FileReplicator"]) if (typeof m[k] !== "function") throw new Error(`${k} is ${typeof m[k]}`);
if (!MODULE_URL.includes("/app/node_modules/holdfast/")) throw new Error(`loaded from ${MODULE_URL}`);
console.log(`vendor: ${FORM}: Membership, Module, PacketFilter, FileReplicator are functions; ping method: ${new m.PingProbe({ host: "127.0.0.1" }).method}`);'
(cd "$app" && node --input-type=module -e "const m = await import('holdfast'); const MODULE_URL = import.meta.resolve('holdfast'); const FORM = 'import'; $check") ||
  fail "import('holdfast') failed"
(cd "$app" && node -e "const m = require('holdfast'); const MODULE_URL = require.resolve('holdfast'); const FORM = 'require'; $check") ||
  fail "require('holdfast') failed"

# ---- size of the vendor programs ------------------------------------------------------------------------
# A program with a `// ---- HA` section counts that section (to the next `// ----` heading): the rest is its demo
# app and test harness; otherwise every line that is not blank or a comment.
for f in examples/mirror-node.ts examples/farm-node.ts test/vendor/cjs.cts; do
  n="$(node -e '
    const src = require("fs").readFileSync(process.argv[1], "utf8").split("\n");
    const start = src.findIndex((l) => l.startsWith("// ---- HA"));
    let lines = src;
    if (start >= 0) {
      const end = src.findIndex((l, i) => i > start && l.startsWith("// ---- "));
      lines = src.slice(start + 1, end < 0 ? undefined : end);
    }
    let inBlock = false, n = 0;
    for (let line of lines) {
      line = line.trim();
      if (inBlock) { if (line.includes("*/")) { inBlock = false; line = line.slice(line.indexOf("*/") + 2).trim(); } else continue; }
      if (line.startsWith("/*")) { if (!line.includes("*/")) { inBlock = true; continue; } line = line.slice(line.indexOf("*/") + 2).trim(); }
      if (line === "" || line.startsWith("//")) continue;
      n++;
    }
    console.log(n);' "$f")"
  say "$f: $n lines of HA code"
done

# ---- run them from the installed package, in network namespaces (root) ----------------------------------
# The lab tests that start these programs run them from the scratch project (HOLDFAST_PROGRAM_ROOT): a 3-node farm
# (settled, then a node killed: survivors' connections complete, new ones served within 1 s; it rejoins breaking nothing) and a
# 2-node mirror (the primary crashes under writes: failover, every acknowledged record on the new primary, resync
# and swap back).
if [ "$(id -u)" -eq 0 ] && [ "${HOLDFAST_VENDOR_LAB:-1}" = 1 ]; then
  mkdir -p "$app/examples" "$repo/.test-results"
  cp examples/farm-node.ts examples/mirror-node.ts "$app/examples/"
  HOLDFAST_PROGRAM_ROOT="$app" npx vitest run --project lab \
    --reporter=default --reporter=json --outputFile="$repo/.test-results/vendor.json" \
    test/lab/farm.test.ts test/lab/mirror-module.test.ts \
    -t "settles with every owned bucket|SIGKILL of a node|acknowledged records survive a crash of the primary" ||
    fail "the example programs run from the installed package failed their lab tests"
  node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    if (r.numPassedTests < 3) { console.error(`vendor: only ${r.numPassedTests} lab tests passed`); process.exit(1); }
    console.log(`vendor: from the installed package: ${r.numPassedTests} lab tests passed (3-node farm crash + rejoin, 2-node mirror crash)`);' "$repo/.test-results/vendor.json"
fi
say "ok"
