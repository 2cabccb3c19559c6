#!/usr/bin/env bash
# Runs every test: formatting, lints, unit tests and the end-to-end suites (as root: they make
# namespaces, mounts and cgroups). The integration tests run the release binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets -- -D warnings
cargo test --release --workspace -- --test-threads=4
