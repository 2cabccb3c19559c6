#!/usr/bin/env bash
# berthd under load, and what it leaves: N sequential and M concurrent `berth run --rm IMAGE
# true`, then the same through the Docker socket (`docker run --rm`), with berthd's RSS, open
# fds and threads before and after each phase, then everything that could leak counted:
# mounts under the root and state dirs, cgroups under /<ns>, active snapshots, containers,
# berth-shim processes, netns, veths, leases, and `berth check`. berthd runs in a network
# namespace of the bench's own; nothing leaves it. Exit 1 if anything is left.
#
#   hack/bench-load.sh [seq] [conc] [docker_seq] [docker_conc]   (as root; default 1000 100 200 50)
#   (or BERTH_LOAD_SEQ, BERTH_LOAD_CONC, BERTH_LOAD_DOCKER_SEQ, BERTH_LOAD_DOCKER_CONC)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib.sh
. hack/lib.sh
seq_n=${1:-${BERTH_LOAD_SEQ:-1000}}
conc_n=${2:-${BERTH_LOAD_CONC:-100}}
dseq_n=${3:-${BERTH_LOAD_DOCKER_SEQ:-200}}
dconc_n=${4:-${BERTH_LOAD_DOCKER_CONC:-50}}
for v in "$seq_n" "$conc_n" "$dseq_n" "$dconc_n"; do
  case "$v" in ''|*[!0-9]*) echo "bench-load: counts must be numbers, got '$v'" >&2; exit 2 ;; esac
done
bench_binaries
bench_need_tools unshare nsenter ip ctr
bench_tmpdir berth-bench-load
ns=bench-load
bench_cgroup_ns "$ns"
bench_cgroup_ns moby

netns=$tmp/netns
touch "$netns"
unshare --net="$netns" true
bench_on_cleanup _unmount_load_netns
_unmount_load_netns() { umount "$netns" 2>/dev/null || true; }
nsenter --net="$netns" ip link set lo up
berth_sock=$tmp/berth.sock
docker_sock=$tmp/docker.sock
nsenter --net="$netns" "$BERTHD" --root "$tmp/berth/root" --state "$tmp/berth/state" \
  --address "$berth_sock" --docker-address "$docker_sock" --log-level warn \
  2>"$tmp/berthd.log" &
berthd_pid=$!
bench_track_pid "$berthd_pid"
wait_sock "$berth_sock"
wait_sock "$docker_sock"
B="$BERTH --address $berth_sock -n $ns"
D="/usr/bin/docker -H unix://$docker_sock"
export DOCKER_CONFIG=$tmp/docker-config

bb=docker.io/berth/busybox:bench
bench_busybox_image "$bb"
$B images import "$busybox_archive" >/dev/null
$D load -i "$busybox_archive" >/dev/null

# "rss_kb fds threads" of berthd.
usage() {
  printf '%s %s %s\n' "$(rss_kb "$berthd_pid")" "$(find "/proc/$berthd_pid/fd" -mindepth 1 | wc -l)" \
    "$(awk '/^Threads/ {print $2}' "/proc/$berthd_pid/status")"
}
# Waits up to 30 s for the blocking pool's threads to idle out, then prints usage.
settled() {
  local last now i
  last=$(usage)
  for i in $(seq 30); do
    sleep 1
    now=$(usage)
    [ "${now##* }" = "${last##* }" ] && [ "$i" -gt 11 ] && break
    last=$now
  done
  usage
}
fail=0
run_one() { $B run --rm "$bb" "c$1" true >/dev/null || { echo "berth run c$1 failed" >&2; return 1; }; }
drun_one() { $D run --rm "$bb" true >/dev/null || { echo "docker run failed" >&2; return 1; }; }

# Runs "$2 i" $1 times, all at once when $3 is "conc"; prints "seconds failures".
phase() {
  local n=$1 fn=$2 mode=$3 start pids=() i bad=0
  start=$(date +%s.%N)
  for i in $(seq "$n"); do
    if [ "$mode" = conc ]; then "$fn" "$mode$i" & pids+=($!); else "$fn" "seq$i" || bad=$((bad + 1)); fi
  done
  for i in "${pids[@]}"; do wait "$i" || bad=$((bad + 1)); done
  awk -v s="$start" -v e="$(date +%s.%N)" -v b="$bad" 'BEGIN {printf "%.1f %d\n", e - s, b}'
}

run_one warm1; run_one warm2; drun_one; drun_one
declare -A before after secs
bad=0
report() { # NAME N BEFORE AFTER SECS
  read -r r0 f0 t0 <<<"$3"; read -r r1 f1 t1 <<<"$4"
  printf '%-26s %5s runs %7.1f s  rss %6d -> %6d KiB  fds %4d -> %4d  threads %3d -> %3d\n' \
    "$1" "$2" "$5" "$r0" "$r1" "$f0" "$f1" "$t0" "$t1"
  [ $((f1 - f0)) -le 5 ] && [ $((f1 - f0)) -ge -5 ] || { echo "  fds did not come back" >&2; fail=1; }
  [ "$t1" -le "$t0" ] || { echo "  threads did not come back" >&2; fail=1; }
}
for p in "berth-sequential $seq_n run_one seq" "berth-concurrent $conc_n run_one conc" \
         "docker-sequential $dseq_n drun_one seq" "docker-concurrent $dconc_n drun_one conc"; do
  read -r name n fn mode <<<"$p"
  [ "$n" -gt 0 ] || continue
  before[$name]=$(settled)
  read -r secs[$name] bad <<<"$(phase "$n" "$fn" "$mode")"
  [ "$bad" = 0 ] || { echo "$name: $bad runs failed" >&2; fail=1; }
  # AutoRemove of docker run --rm ends after the client returned.
  for _ in $(seq 100); do [ -z "$($D ps -aq)" ] && break; sleep 0.2; done
  after[$name]=$(settled)
  report "$name" "$n" "${before[$name]}" "${after[$name]}" "${secs[$name]}"
done

# What is left.
left() { # WHAT COUNT
  printf '  %-34s %s\n' "$1" "$2"
  [ "$2" = 0 ] || fail=1
}
echo "left behind:"
left "mounts under root/state" "$(awk -v r="$tmp/berth/" 'index($5, r) == 1 && $5 !~ /\/netns$/' /proc/self/mountinfo | wc -l)"
cg=0
while read -r m; do
  for n in "$ns" moby; do
    [ -d "$m/$n" ] && cg=$((cg + $(find "$m/$n" -mindepth 1 -type d | wc -l)))
  done
done < <(awk '{for (i = 7; i < NF; i++) if ($i == "-") { if ($(i+1) ~ /^cgroup2?$/) print $5; break }}' /proc/self/mountinfo | sort -u)
left "cgroups under /$ns, /moby" "$cg"
left "active snapshots" "$( (ctr -a "$berth_sock" -n "$ns" snapshots ls; ctr -a "$berth_sock" -n moby snapshots ls) | grep -c Active || true)"
left "containers" "$( (ctr -a "$berth_sock" -n "$ns" containers ls -q; $D ps -aq) | grep -c . || true)"
left "task bundles" "$(find "$tmp/berth/state/tasks" -mindepth 2 -maxdepth 2 2>/dev/null | wc -l)"
left "berth-shim processes" "$(bench_shim_pids berth-shim | wc -l)"
left "netns" "$(find "$tmp/berth/state/netns" -mindepth 1 2>/dev/null | wc -l)"
left "veths" "$(nsenter --net="$netns" ip -o link show type veth | wc -l)"
left "leases" "$( (ctr -a "$berth_sock" -n "$ns" leases ls -q; ctr -a "$berth_sock" -n moby leases ls -q) | grep -c . || true)"
if $B check >"$tmp/check.out" 2>&1; then
  left "berth check" "0"
else
  cat "$tmp/check.out"
  left "berth check" "exit $?"
fi
if [ "$fail" != 0 ]; then echo "bench-load: FAILED (see above; berthd's log: $tmp/berthd.log)" >&2; fi
exit "$fail"
