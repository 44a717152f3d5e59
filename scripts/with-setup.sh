#!/usr/bin/env bash
# Runs a command after the idempotent set-up and the package build, from the repository root:
# `bash scripts/with-setup.sh CMD...`
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# What runs the shipped daemon (dist/cli.js) measures the build of this checkout.
npx tsup --silent
exec npx "$@"
