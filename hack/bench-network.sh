#!/usr/bin/env bash
# What a network costs `berth run --rm IMAGE ID /bin/true`: --net none (only lo), --net bridge
# (netns, veth, CNI ADD/DEL through bridge + host-local; portmap too when publishing) and --net bridge
# with one published port, in one hyperfine run, beside Debian's dockerd 20.10 doing the same
# (`docker run --rm` on its default bridge, with and without -p, and --network none). berthd
# and dockerd run in network namespaces of the bench's own: their bridges, veths and iptables
# rules go with them, and nothing leaves the machine.
#
#   hack/bench-network.sh [runs]      (as root; default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib.sh
. hack/lib.sh
runs=${1:-20}
bench_binaries
bench_need_tools hyperfine jq unshare nsenter ip dockerd
bench_tmpdir berth-bench-net
bench_cgroup_ns bench

netns=$tmp/netns
touch "$netns"
unshare --net="$netns" true
nsenter --net="$netns" ip link set lo up
berth_sock=$tmp/berth.sock
nsenter --net="$netns" "$BERTHD" --root "$tmp/berth/root" --state "$tmp/berth/state" \
  --address "$berth_sock" --docker-address "" --log-level warn &
berthd_pid=$!
bench_track_pid "$berthd_pid"
wait_sock "$berth_sock"
B="$BERTH --address $berth_sock -n bench"

bb=docker.io/berth/busybox:bench
bench_busybox_image "$bb"
$B images import "$busybox_archive" >/dev/null
for net in "" "--net bridge" "--net bridge -p 127.0.0.1:18080:80"; do
  # shellcheck disable=SC2086
  out=$($B run --rm $net "$bb" check echo ok </dev/null 2>&1) || { echo "bench: run $net: $out" >&2; exit 1; }
done

start_dockerd
$DOCKER load -i "$busybox_archive" >/dev/null
$DOCKER run --rm -p 127.0.0.1:18081:80 "$bb" true

hyperfine --runs "$runs" --warmup 3 --export-json "$tmp/h.json" \
  -n "berth none" "$B run --rm $bb n1 /bin/true" \
  -n "berth bridge" "$B run --rm --net bridge $bb n2 /bin/true" \
  -n "berth bridge -p" "$B run --rm --net bridge -p 127.0.0.1:18080:80 $bb n3 /bin/true" \
  -n "docker none" "$DOCKER run --rm --network none $bb /bin/true" \
  -n "docker bridge" "$DOCKER run --rm $bb /bin/true" \
  -n "docker bridge -p" "$DOCKER run --rm -p 127.0.0.1:18081:80 $bb /bin/true" >/dev/null
printf '%-18s %10s %10s\n' "run --rm" "median ms" "mean ms"
jq -r '.results[] | [.command, (.median*1000), (.mean*1000)] | @tsv' "$tmp/h.json" |
  while IFS=$'\t' read -r n med mean; do printf '%-18s %10.1f %10.1f\n' "$n" "$med" "$mean"; done
jq -r '(.results | map({(.command): .median}) | add) as $m |
  "berth bridge adds \((($m["berth bridge"] - $m["berth none"]) * 10000 | round) / 10) ms to berth none",
  "berth bridge -p adds \((($m["berth bridge -p"] - $m["berth none"]) * 10000 | round) / 10) ms to berth none",
  "berth bridge / docker bridge: \(($m["berth bridge"] / $m["docker bridge"]) * 100 | round / 100)",
  "berth bridge -p / docker bridge -p: \(($m["berth bridge -p"] / $m["docker bridge -p"]) * 100 | round / 100)"' "$tmp/h.json"
