#!/usr/bin/env bash
# The README's test command (`npm test`): set-up, then typecheck, lint, and every test layer
# (units + properties + simulation, then the network-namespace lab when running as root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npx tsc --noEmit -p .
npx eslint --no-warn-ignored .
# The package itself: ESM + CJS + d.ts build, and the built entry points load.
npx tsup --silent
node --input-type=module -e "const m = await import('./dist/index.js'); if (typeof m.Membership !== 'function') throw new Error('dist/index.js lacks Membership');"
node -e "const m = require('./dist/index.cjs'); if (typeof m.Membership !== 'function') throw new Error('dist/index.cjs lacks Membership');"
# The packed package installed in a scratch project without a compiler, typechecked and loaded as a vendor would.
rm -f .test-results/vendor.json
HOLDFAST_VENDOR_SKIP_BUILD=1 bash scripts/vendor-test.sh
if [ "$(id -u)" -eq 0 ]; then
  # One layer after the other: the simulation saturates both cores, and the lab's timing assertions
  # (detection, takeover within 1 s) must not run beside it.
  layers=(unit lab)
else
  echo "test: not root: running the unit and simulation layers only (the namespace lab needs root)"
  layers=(unit)
fi
mkdir -p .test-results
for layer in "${layers[@]}"; do
  npx vitest run --project "$layer" --passWithNoTests --reporter=default --reporter=json --outputFile=".test-results/$layer.json" "$@"
done
# One plain closing line over every layer.
node -e '
  let p = 0, f = 0, s = 0;
  for (const l of process.argv.slice(1)) {
    const r = JSON.parse(require("fs").readFileSync(`.test-results/${l}.json`, "utf8"));
    p += r.numPassedTests; f += r.numFailedTests; s += r.numPendingTests + r.numTodoTests;
  }
  // The vendor run (scripts/vendor-test.sh) selects two lab tests by name: the others it did not run are not skips.
  const fs = require("fs");
  if (fs.existsSync(".test-results/vendor.json")) {
    const r = JSON.parse(fs.readFileSync(".test-results/vendor.json", "utf8"));
    p += r.numPassedTests; f += r.numFailedTests;
  }
  console.log(`tests: ${p} passed, ${f} failed, ${s} skipped`);
' "${layers[@]}"
