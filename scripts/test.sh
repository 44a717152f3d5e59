#!/usr/bin/env bash
# The README's test command (`npm test`): set-up, then typecheck, lint, and every test layer
# (units + properties + simulation, then the network-namespace lab when running as root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npx tsc --noEmit -p .
npx eslint --no-warn-ignored .
if [ "$(id -u)" -eq 0 ]; then
  npx vitest run "$@"
else
  echo "test: not root: running the unit and simulation layers only (the namespace lab needs root)"
  npx vitest run --project unit "$@"
fi
