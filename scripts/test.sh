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
if [ "$(id -u)" -eq 0 ]; then
  # One layer after the other: the simulation saturates both cores, and the lab's timing assertions
  # (detection, takeover within 1 s) must not run beside it.
  npx vitest run --project unit "$@"
  npx vitest run --project lab "$@"
else
  echo "test: not root: running the unit and simulation layers only (the namespace lab needs root)"
  npx vitest run --project unit "$@"
fi
