#!/usr/bin/env bash
# The test suite: installs what it needs, fetches the default guest (cached under
# ~/.cache/hako), and runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/default-guest.sh >/dev/null
if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install --locked cargo-nextest
fi
cargo nextest run --workspace --release --no-fail-fast "$@"
