#!/usr/bin/env bash
# `berth check` over a store of 50 images (busybox plus a 1 MiB layer of its own each) and 200
# containers (records with their snapshots, made with Debian's ctr): berthd on temp dirs, the
# online check timed with hyperfine, then the offline `berthd check` once berthd is stopped.
#
#   hack/bench-check.sh [runs]      (as root; BERTHD/BERTH override the binaries)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib.sh
. hack/lib.sh
runs=${1:-5}
bench_binaries
bench_need_tools ctr hyperfine jq gzip tar
bench_tmpdir berth-bench-check
ns=bench-check

start_berthd
B="$BERTH --address $berth_sock -n $ns"
C="ctr -a $berth_sock -n $ns"

# One busybox layer for all, one layer of its own per image.
hack/mkbundle.sh "$tmp/bb" >/dev/null
tar -C "$tmp/bb/rootfs" --numeric-owner --owner=0 --group=0 -cf "$tmp/base.tar" .
rm -rf "$tmp/bb"
for i in $(seq 50); do
  oci_begin "$tmp/l$i"
  cp "$tmp/base.tar" "$tmp/layer.tar"
  oci_add_layer "$tmp/l$i" "$tmp/layer.tar"
  mkdir -p "$tmp/own/data"
  head -c 1048576 /dev/urandom >"$tmp/own/data/img$i"
  tar -C "$tmp/own" --numeric-owner --owner=0 --group=0 -cf "$tmp/layer.tar" data
  rm -rf "$tmp/own"
  oci_add_layer "$tmp/l$i" "$tmp/layer.tar"
  oci_finish "$tmp/l$i" "docker.io/berth/img$i:latest" latest '{"Cmd":["sh"]}' "$tmp/img.tar"
  $B images import "$tmp/img.tar" >/dev/null
done
rm -f "$tmp/img.tar" "$tmp/base.tar"
for i in $(seq 200); do
  $C containers create "docker.io/berth/img$(( (i - 1) % 50 + 1 )):latest" "c$i" >/dev/null
done
$B check | tail -n1

hyperfine --runs "$runs" --warmup 1 --export-json "$tmp/h.json" -n "berth check" "$B check"
online=$(jq -r '.results[0].mean' "$tmp/h.json")
kill -TERM "$berthd_pid"
wait "$berthd_pid" 2>/dev/null || true
hyperfine --runs "$runs" --warmup 1 --export-json "$tmp/h2.json" -n "berthd check (offline)" \
  "$BERTHD check --root $tmp/berth/root --state $tmp/berth/state"
offline=$(jq -r '.results[0].mean' "$tmp/h2.json")
printf '\nberth check (50 images, 200 containers): online %.2f s, offline %.2f s\n' "$online" "$offline"
