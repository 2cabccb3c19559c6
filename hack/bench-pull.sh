#!/usr/bin/env bash
# Pull + unpack of a ~200 MB multi-layer image from a local docker-registry (plain HTTP on
# 127.0.0.1) into berthd (`berth images pull`: daemon-side, parallel layers) and into Debian's
# containerd (`ctr images pull --plain-http`: client-side), both on private temp roots, measured
# with hyperfine in the same run; the image is removed (and GC'd) between runs. Prints seconds
# and MB/s.
#
#   hack/bench-pull.sh [runs]      (as root; BERTHD/BERTH override the binaries)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib.sh
. hack/lib.sh
runs=${1:-3}
bench_binaries
bench_need_tools containerd ctr docker-registry hyperfine jq sha256sum gzip python3
bench_tmpdir berth-bench-pull

bench_big_image

start_registry
port=$registry_port
start_berthd
start_containerd

# Push the image to the registry once (through berthd).
remote=127.0.0.1:$port/berth/bench:latest
B="$BERTH --address $berth_sock -n bench"
C="ctr -a $containerd_sock -n bench"
$B images import --base-name berth/bench "$archive" >/dev/null
$B images tag "$image" "$remote" >/dev/null
$B images push --plain-http "$remote" >/dev/null
$B images rm "$image" "$remote" >/dev/null
echo "bench: pushed $remote; $runs runs each"

hyperfine --runs "$runs" --export-json "$tmp/h.json" \
  --prepare "$B images rm $remote >/dev/null 2>&1 || true; $C images rm --sync $remote >/dev/null 2>&1 || true; sync" \
  -n "berth pull -> berthd" "$B images pull --plain-http $remote" \
  -n "ctr pull -> containerd" "$C images pull --plain-http $remote"

mean() { jq -r --arg n "$1" '.results[] | select(.command == $n) | .mean' "$tmp/h.json"; }
b=$(mean "berth pull -> berthd"); c=$(mean "ctr pull -> containerd")
echo
printf '%-24s %10s %10s\n' "pull+unpack" "seconds" "MB/s"
for pair in "berth pull -> berthd:$b" "ctr pull -> containerd:$c"; do
  name=${pair%%:*}; s=${pair##*:}
  printf '%-24s %10.2f %10.1f\n' "$name" "$s" "$(awk -v m="$archive_mb" -v s="$s" 'BEGIN{print m/s}')"
done
printf 'throughput ratio berthd/containerd: %.2fx\n' "$(awk -v b="$b" -v c="$c" 'BEGIN{print c/b}')"
