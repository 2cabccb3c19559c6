#!/usr/bin/env bash
# Benchmarks berthd against Debian's containerd 1.6, both on private temp roots (containerd with
# its own config, CRI disabled, runc as its runtime):
#
# import: import + unpack of a ~200 MB multi-layer image into berthd and into containerd, measured
#   with hyperfine; content is removed between runs. Prints seconds, MB/s and the ratio, and the
#   idle RSS of both daemons.
# run: `run --rm IMAGE ID /bin/true` of a busybox image built from Debian's busybox-static, end to
#   end through each client (berth -> berthd, ctr -> containerd, ctr -> berthd) in one hyperfine
#   run; prints medians and means in ms and the ratio berth/containerd (target: <= 0.25). Then the
#   RSS of each daemon and of its per-container shims (berth-shim, containerd-shim-runc-v2) with
#   CONTAINERS detached `sleep 1000` containers running, one daemon at a time.
#
#   hack/bench-manager.sh [runs] [import|run|all]     (as root; default: 3 import runs, all)
#   RUN_RUNS=20 RUN_WARMUP=3 CONTAINERS=20 BENCH_PART=all BERTHD=… BERTH=…     (overrides)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib.sh
. hack/lib.sh
runs=3
part=${BENCH_PART:-all}
for a in "$@"; do
  case $a in
    import|run|all) part=$a ;;
    ''|*[!0-9]*) echo "usage: hack/bench-manager.sh [runs] [import|run|all]" >&2; exit 2 ;;
    *) runs=$a ;;
  esac
done
case $part in import|run|all) ;; *) echo "bench: BENCH_PART must be import, run or all" >&2; exit 2 ;; esac
run_runs=${RUN_RUNS:-20}
run_warmup=${RUN_WARMUP:-3}
containers=${CONTAINERS:-20}
do_import=0; do_run=0
[ "$part" = run ] || do_import=1
[ "$part" = import ] || do_run=1

bench_binaries
bench_need_tools containerd ctr hyperfine jq sha256sum gzip
if [ "$do_run" = 1 ]; then
  bench_need_tools runc containerd-shim-runc-v2
  for b in berth-shim berth-runc; do
    [ -x "$(dirname "$BERTHD")/$b" ] || { echo "bench: $(dirname "$BERTHD")/$b is missing (cargo build --release --workspace --bins)" >&2; exit 1; }
  done
fi
bench_tmpdir berth-bench
# Containers in namespace `bench` get cgroups /bench/<id> (from both daemons): removed at exit.
[ "$do_run" = 1 ] && bench_cgroup_ns bench

[ "$do_import" = 1 ] && bench_big_image

start_berthd
if [ "$do_import" = 1 ]; then sleep 1; berthd_rss_fresh=$(rss_kb "$berthd_pid"); fi
start_containerd
if [ "$do_import" = 1 ]; then sleep 1; containerd_rss_fresh=$(rss_kb "$containerd_pid"); fi

B="$BERTH --address $berth_sock -n bench"
C="ctr -a $containerd_sock -n bench"
CB="ctr -a $berth_sock -n bench"
kb2mb() { awk -v k="$1" 'BEGIN{print k/1024}'; }

# ==== import ====
if [ "$do_import" = 1 ]; then
echo "bench: $runs runs each"
hyperfine --runs "$runs" --export-json "$tmp/h.json" \
  --prepare "$B images rm $image >/dev/null 2>&1 || true; $CB images rm --sync $image >/dev/null 2>&1 || true; $C images rm --sync $image >/dev/null 2>&1 || true; sync" \
  -n "berth -> berthd" "$B images import $archive" \
  -n "ctr -> containerd" "$C images import $archive" \
  -n "ctr -> berthd" "$CB images import $archive"

# Idle RSS after the work (give the blocking pool time to wind down).
sleep 12
berthd_rss_after=$(rss_kb "$berthd_pid")
containerd_rss_after=$(rss_kb "$containerd_pid")

mean() { jq -r --arg n "$1" '.results[] | select(.command == $n) | .mean' "$tmp/h.json"; }
b=$(mean "berth -> berthd"); c=$(mean "ctr -> containerd"); cb=$(mean "ctr -> berthd")
echo
printf '%-20s %10s %10s\n' "import+unpack" "seconds" "MB/s"
for pair in "berth -> berthd:$b" "ctr -> containerd:$c" "ctr -> berthd:$cb"; do
  name=${pair%%:*}; s=${pair##*:}
  printf '%-20s %10.2f %10.1f\n' "$name" "$s" "$(awk -v m="$archive_mb" -v s="$s" 'BEGIN{print m/s}')"
done
printf 'throughput ratio berthd/containerd: %.2fx (ctr->berthd: %.2fx)\n' \
  "$(awk -v b="$b" -v c="$c" 'BEGIN{print c/b}')" "$(awk -v b="$cb" -v c="$c" 'BEGIN{print c/b}')"
echo
printf '%-12s %14s %14s\n' "idle RSS" "fresh (MB)" "after (MB)"
printf '%-12s %14.1f %14.1f\n' berthd "$(kb2mb "$berthd_rss_fresh")" "$(kb2mb "$berthd_rss_after")"
printf '%-12s %14.1f %14.1f\n' containerd "$(kb2mb "$containerd_rss_fresh")" "$(kb2mb "$containerd_rss_after")"
fi

# ==== run ====
[ "$do_run" = 1 ] || exit 0
[ "$do_import" = 1 ] && echo

# ctr keeps its IO fifos (and, with --runc-root, runc's state) in the temp dir, not in the
# host's /run/containerd. The runtime is containerd's default, io.containerd.runc.v2 with runc.
mkdir -p "$tmp/fifo"
CR="$C run --fifo-dir $tmp/fifo --runc-root $tmp/containerd/runc"
CBR="$CB run --fifo-dir $tmp/fifo"

# Containers still to remove (at the end, or by the cleanup after a failure).
berth_live=()
ctr_live=()
remove_berth() { # IDs: kill -9, wait, delete the task and the container
  local id
  [ $# -gt 0 ] || return 0
  for id in "$@"; do $B tasks kill -s 9 "$id" >/dev/null 2>&1 || true; done
  for id in "$@"; do
    # shellcheck disable=SC2086
    timeout 20 $B tasks wait "$id" >/dev/null 2>&1 || true
    $B tasks rm "$id" >/dev/null 2>&1 || true
  done
  $B containers rm "$@" >/dev/null
}
remove_ctr() { # DAEMON_CTR IDs: ctr task kill -s SIGKILL, task rm once it has stopped, c rm
  local ctr=$1 id; shift
  [ $# -gt 0 ] || return 0
  for id in "$@"; do $ctr task kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
  for id in "$@"; do
    for _ in $(seq 200); do
      $ctr task rm "$id" >/dev/null 2>&1 && break
      $ctr task ls -q 2>/dev/null | grep -qx "$id" || break
      sleep 0.05
    done
  done
  $ctr c rm "$@" >/dev/null
}
run_cleanup() {
  remove_berth "${berth_live[@]}" 2>/dev/null
  remove_ctr "$C" "${ctr_live[@]}" 2>/dev/null
  # A run that failed half-way may leave its container behind.
  remove_berth run-berth 2>/dev/null
  remove_ctr "$C" run-ctr 2>/dev/null
  remove_ctr "$CB" run-ctr-berthd 2>/dev/null
  true
}
bench_on_cleanup run_cleanup

bb=docker.io/berth/busybox:bench
bench_busybox_image "$bb"
$B images import "$busybox_archive" >/dev/null
$C images import "$busybox_archive" >/dev/null
# Same daemon and namespace as berth's import: ctr sees that image; importing it through ctr too
# checks ctr's own import path into berthd (the image is unchanged).
$CB images import "$busybox_archive" >/dev/null
echo "bench: busybox image $bb ($(stat -c %s "$busybox_archive") bytes) imported into berthd and containerd"

# Each command once with `echo`, before timing: it must print and exit 0.
declare -A run_cmd=(
  ["berth -> berthd"]="$B run --rm $bb run-berth"
  ["ctr -> containerd"]="$CR --rm $bb run-ctr"
  ["ctr -> berthd"]="$CBR --rm $bb run-ctr-berthd"
)
run_names=("berth -> berthd" "ctr -> containerd" "ctr -> berthd")
for n in "${run_names[@]}"; do
  rc=0
  out=$(${run_cmd[$n]} echo bench-ok </dev/null 2>&1) || rc=$?
  if [ "$rc" != 0 ] || [ "$(printf '%s' "$out" | tr -d '\r')" != bench-ok ]; then
    echo "bench: $n: '${run_cmd[$n]} echo bench-ok' exited $rc, printed: $out" >&2
    exit 1
  fi
done

echo "bench: run --rm /bin/true, $run_warmup warmup + $run_runs runs each"
hyperfine --warmup "$run_warmup" --runs "$run_runs" --export-json "$tmp/run.json" \
  -n "berth -> berthd" "${run_cmd["berth -> berthd"]} /bin/true" \
  -n "ctr -> containerd" "${run_cmd["ctr -> containerd"]} /bin/true" \
  -n "ctr -> berthd" "${run_cmd["ctr -> berthd"]} /bin/true"

stat_ms() { jq -r --arg n "$1" --arg k "$2" '.results[] | select(.command == $n) | .[$k] * 1000' "$tmp/run.json"; }
echo
printf '%-20s %12s %12s %12s\n' "run --rm /bin/true" "median (ms)" "mean (ms)" "stddev (ms)"
for n in "${run_names[@]}"; do
  printf '%-20s %12.1f %12.1f %12.1f\n' "$n" "$(stat_ms "$n" median)" "$(stat_ms "$n" mean)" "$(stat_ms "$n" stddev)"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }
rb=$(stat_ms "berth -> berthd" median); rc=$(stat_ms "ctr -> containerd" median); rcb=$(stat_ms "ctr -> berthd" median)
r=$(ratio "$rb" "$rc")
printf 'ratio berth/containerd (median): %s (target <= 0.25: %s); mean: %s; ctr->berthd/containerd: %s\n' \
  "$r" "$(awk -v r="$r" 'BEGIN{print (r <= 0.25) ? "met" : "not met"}')" \
  "$(ratio "$(stat_ms "berth -> berthd" mean)" "$(stat_ms "ctr -> containerd" mean)")" "$(ratio "$rcb" "$rc")"

# ---- RSS with $containers containers running ----
# PSS: shared pages (libc, the shim's own text) divided among the processes mapping them, so
# the sum is what the shims cost together; RSS counts every shared page in every shim.
pss_kb() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }
rss_stats() { # FUNC PIDs -> "count min mean max sum" (kB)
  local p f=$1
  shift
  for p in "$@"; do "$f" "$p"; done |
    awk 'NR==1{min=$1;max=$1} {s+=$1; if($1<min)min=$1; if($1>max)max=$1} END{printf "%d %d %.0f %d %d\n", NR, min, (NR? s/NR : 0), max, s}'
}
report_rss() { # LABEL DAEMON_PID DAEMON_BEFORE SHIM_NAME
  local label=$1 dpid=$2 before=$3 shim=$4 n mn avg mx sum pn pmn pavg pmx psum
  # shellcheck disable=SC2046
  read -r n mn avg mx sum < <(rss_stats rss_kb $(bench_shim_pids "$shim"))
  # shellcheck disable=SC2046,SC2034
  read -r pn pmn pavg pmx psum < <(rss_stats pss_kb $(bench_shim_pids "$shim"))
  printf '%-12s %6s %10s %10s | %-24s %5s %8s %8s %8s %9s | %8s %9s\n' \
    "$label" "$containers" "$before" "$(rss_kb "$dpid")" "$shim" "$n" "$mn" "$avg" "$mx" "$sum" "$pavg" "$psum"
  [ "$n" = "$containers" ] || echo "bench: $label: $n $shim processes found for $containers containers" >&2
}

echo
echo "bench: RSS with $containers detached containers (sleep 1000) running, one daemon at a time"
printf '%-12s %6s %10s %10s | %-24s %5s %8s %8s %8s %9s | %8s %9s\n' \
  "RSS (kB)" "ctrs" "daemon0" "daemon" "per-container shim" "n" "min" "mean" "max" "sum" "PSS mean" "PSS sum"
before=$(rss_kb "$berthd_pid")
for i in $(seq "$containers"); do
  berth_live+=("c$i")
  $B run -d "$bb" "c$i" sleep 1000 >/dev/null
done
sleep 2
report_rss berthd "$berthd_pid" "$before" berth-shim
remove_berth "${berth_live[@]}"
berth_live=()

before=$(rss_kb "$containerd_pid")
for i in $(seq "$containers"); do
  ctr_live+=("c$i")
  $CR -d "$bb" "c$i" sleep 1000 >/dev/null
done
sleep 2
report_rss containerd "$containerd_pid" "$before" containerd-shim-runc-v2
remove_ctr "$C" "${ctr_live[@]}"
ctr_live=()
echo "(daemon0: the daemon's RSS before the containers; daemon: with them running)"
