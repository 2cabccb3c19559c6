#!/usr/bin/env bash
# The main job after set-up: build a busybox bundle locally (no network) and run a real container
# from it with berth-runc — its own hostname, pid 1, a read-only root and only loopback.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
runc=$top/target/release/berth-runc
work=$(mktemp -d /tmp/berth-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$top/hack/mkbundle.sh" "$work/bundle" >/dev/null
jq '.process.terminal = false
    | .process.args = ["sh", "-c", "echo \"hello from $(hostname), I am pid $$\"; echo \"interfaces: $(ls /sys/class/net | tr \"\\n\" \" \")\"; touch /x 2>/dev/null || echo \"the root is read-only\"; exit 7"]' \
  "$work/bundle/config.json" > "$work/config.json"
mv "$work/config.json" "$work/bundle/config.json"
set +e
"$runc" --root "$work/state" run --bundle "$work/bundle" "demo-$$"
code=$?
set -e
echo "container exited with $code (expected 7)"
[ "$code" -eq 7 ]
