#!/usr/bin/env bash
# Runs every test: formatting, lints, unit tests and the end-to-end suites (as root: they make
# namespaces, mounts and cgroups). The integration tests run the release binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets -- -D warnings
log=$(mktemp /tmp/berth-test.XXXXXX)
trap 'rm -f "$log"' EXIT
cargo test --release --workspace --no-fail-fast -- --test-threads=4 2>&1 | tee "$log"
# One closing line over every test binary (the last binary cargo runs may be a doc-test
# binary with no tests, whose own summary would read as "0 passed").
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
