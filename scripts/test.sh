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
cargo test --locked --lib --bins --tests -- --test-threads "${GITVAULT_TEST_THREADS:-2}"
# The library's documented example (lib.rs): open a vault, back up, restore.
cargo test --locked --doc

# Benchmarks run once each in test mode (criterion), as a smoke test: no timing is asserted.
echo "== benchmarks (smoke)"
cargo test --locked --benches
bash benches/replay.sh --days 6 --bin target/debug/gitvault
