#!/usr/bin/env bash
# Runs a command after the idempotent set-up, from the repository root: `bash scripts/with-setup.sh CMD...`
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec npx "$@"
