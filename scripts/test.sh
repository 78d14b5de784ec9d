#!/usr/bin/env bash
# The test command of README.md: installs what the tests need (scripts/test-deps.sh)
# and runs the whole suite. On a fresh Debian machine, as root:
#
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test-deps.sh
# rustup's cargo, when test-deps.sh just installed it.
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cargo test --locked
