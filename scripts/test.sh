#!/usr/bin/env bash
# The project's one test command (README.md): installs what the tests need when it is missing,
# checks formatting and lints, then runs every test. Safe to run on a fresh machine and on a
# developer's machine alike.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings

echo "== cargo test"
cargo test --locked --all-targets -- --test-threads "${GITVAULT_TEST_THREADS:-2}"
