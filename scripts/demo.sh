#!/usr/bin/env bash
# The README's demo command (`npm run demo`): set-up, then the demo cluster in network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec npx tsx examples/demo.ts "$@"
