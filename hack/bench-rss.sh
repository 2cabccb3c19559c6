#!/usr/bin/env bash
# Memory over a long client session, side by side: the same docker CLI (Debian's 20.10) and
# docker-compose 1.29 run a client suite — the Docker API acceptance list: version, info,
# push and pull against a docker-registry on 127.0.0.1, a multi-stage build, run --rm, run -d
# with -p -v -e --restart, logs, exec, cp both ways, inspect --format, stats, top, pause,
# unpause, rename, restart, stop, start, kill, wait, rm -f, network and volume verbs, save and
# load, ps with filters, events, system df, prunes, and compose up/ps/logs/exec/down of a
# three-service app — against berthd and against Debian's dockerd 20.10, ROUNDS times SUITES
# suites, and reads each daemon's RSS (dockerd's with its containerd) idle before the first
# round and after each one (once it has been idle 12 s: berthd's idle blocking threads end
# after 10 s). Each daemon runs in a network namespace
# of the bench's own with its own registry; nothing leaves them.
#
#   hack/bench-rss.sh [rounds] [suites]      (as root; default 3 2)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib.sh
. hack/lib.sh
rounds=${1:-3}
suites=${2:-2}
bench_binaries
bench_need_tools unshare nsenter ip dockerd docker-compose docker-registry python3
bench_tmpdir berth-bench-rss
bench_cgroup_ns moby

# berthd in a network namespace of its own, with the Docker API.
berth_netns=$tmp/berth-netns
touch "$berth_netns"
unshare --net="$berth_netns" true
_unmount_berth_netns() { umount "$berth_netns" 2>/dev/null || true; }
bench_on_cleanup _unmount_berth_netns
nsenter --net="$berth_netns" ip link set lo up
berth_docker=$tmp/berth-docker.sock
nsenter --net="$berth_netns" "$BERTHD" --root "$tmp/berth/root" --state "$tmp/berth/state" \
  --address "$tmp/berth.sock" --docker-address "$berth_docker" --log-level warn &
berthd_pid=$!
bench_track_pid "$berthd_pid"
wait_sock "$berth_docker"
start_dockerd
containerd_pid=$(pgrep -P "$dockerd_pid" -x containerd || true)

# A docker-registry on 127.0.0.1 inside each daemon's namespace (same port in both).
ns_registry() { # NETNS DIR PORT
  cat >"$2.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $2
http:
  addr: 127.0.0.1:$3
YML
  nsenter --net="$1" docker-registry serve "$2.yml" >"$2.log" 2>&1 &
  bench_track_pid $!
  for _ in $(seq 200); do
    nsenter --net="$1" python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$3/v2/')" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "bench: docker-registry did not answer; its log:" >&2; cat "$2.log" >&2; exit 1
}
port=5123
ns_registry "$berth_netns" "$tmp/registry-berth" $port
ns_registry "$docker_netns" "$tmp/registry-docker" $port

bb=docker.io/berth/busybox:rss
bench_busybox_image "$bb"

app=$tmp/app
bench_compose_app "$app" "$bb" rssapp 18600
mkdir -p "$tmp/ctx"
cat >"$tmp/ctx/Dockerfile" <<EOF
FROM $bb AS first
RUN echo built > /built
FROM $bb
COPY --from=first /built /built
RUN test "\$(cat /built)" = built
EOF
echo payload >"$tmp/payload"

# One client suite against SOCK (berthd's or dockerd's); fails the bench on any error.
suite() { # SOCK N
  local D="/usr/bin/docker -H unix://$1" n=$2 reg=127.0.0.1:$port c k
  export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0
  $D version && $D info && $D images && $D system df
  $D tag "$bb" "$reg/rss/bb:$n" && $D push "$reg/rss/bb:$n" && $D rmi "$reg/rss/bb:$n"
  $D pull "$reg/rss/bb:$n" && $D rmi "$reg/rss/bb:$n"
  $D build --no-cache -t "rss-ms:$n" "$tmp/ctx"
  $D run --rm "$bb" true
  $D run --rm -e A=1 "rss-ms:$n" sh -c 'test "$A" = 1 && cat /built'
  c=$($D run -d --name "rss-$n" -p 127.0.0.1::80 -v "rssvol-$n:/data" -e X=1 --restart unless-stopped \
    "$bb" sh -c 'echo started; while true; do echo hi | nc -l -p 80; done')
  $D logs --tail 1 "$c"
  $D exec "$c" sh -c 'echo x > /tmp/f'
  $D cp "$c:/tmp/f" "$tmp/out-$n" && $D cp "$tmp/payload" "$c:/tmp/payload"
  $D inspect --format '{{.State.Status}} {{.Name}}' "$c"
  $D stats --no-stream "$c" && $D top "$c"
  $D pause "$c" && $D unpause "$c"
  $D rename "rss-$n" "rss-$n-b"
  $D restart -t 1 "$c" && $D stop -t 1 "$c" && $D start "$c"
  k=$($D run -d "$bb" sleep 1000)
  $D kill "$k" && $D wait "$k" || true
  $D rm -f "$k" "$c"
  $D network create "rssnet-$n" && c=$($D run -d --name "rss-net-$n" "$bb" sleep 1000)
  $D network connect "rssnet-$n" "$c" && $D network inspect "rssnet-$n"
  $D network disconnect "rssnet-$n" "$c" && $D rm -f "$c" && $D network rm "rssnet-$n"
  $D volume create "rssv-$n" && $D volume ls && $D volume rm "rssv-$n" "rssvol-$n"
  $D save "$bb" -o "$tmp/save-$n.tar" && $D load -i "$tmp/save-$n.tar" && rm -f "$tmp/save-$n.tar"
  $D ps -a --filter name=rss && $D ps -a --filter status=exited
  $D events --since "$(date -d '-20 sec' +%s)" --until "$(date +%s)"
  (cd "$app" && DOCKER_HOST="unix://$1" docker-compose -p rssapp up -d --build &&
    DOCKER_HOST="unix://$1" docker-compose -p rssapp ps &&
    DOCKER_HOST="unix://$1" docker-compose -p rssapp logs &&
    DOCKER_HOST="unix://$1" docker-compose -p rssapp exec -T client sh -c 'echo ok' &&
    DOCKER_HOST="unix://$1" docker-compose -p rssapp down -v -t 0)
  $D rmi "rss-ms:$n" rssapp-web:latest
  $D container prune -f && $D image prune -f && $D volume prune -f && $D network prune -f
}

# Only berth-shim's or containerd's shims run between suites: the daemons are idle.
daemon_rss() { # the daemon's RSS (KiB), with its containerd for dockerd
  if [ "$1" = berth ]; then rss_kb "$berthd_pid"; else
    echo $(($(rss_kb "$dockerd_pid") + ${containerd_pid:+$(rss_kb "$containerd_pid")}+0)); fi
}

for sock in "$berth_docker" "$docker_sock"; do
  /usr/bin/docker -H "unix://$sock" load -i "$busybox_archive" >/dev/null
done
sleep 12
declare -A rss
status_kb() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }
rss[berth,0]=$(daemon_rss berth)
rss[docker,0]=$(daemon_rss docker)
rss[anon,0]=$(status_kb "$berthd_pid" RssAnon)
rss[file,0]=$(status_kb "$berthd_pid" RssFile)
n=0
for r in $(seq "$rounds"); do
  for _ in $(seq "$suites"); do
    n=$((n + 1))
    suite "$berth_docker" "$n" >"$tmp/suite-berth.log" 2>&1 ||
      { echo "bench: a suite failed against berthd; its output:" >&2; tail -30 "$tmp/suite-berth.log" >&2; exit 1; }
    suite "$docker_sock" "$n" >"$tmp/suite-docker.log" 2>&1 ||
      { echo "bench: a suite failed against dockerd; its output:" >&2; tail -30 "$tmp/suite-docker.log" >&2; exit 1; }
  done
  sleep 12
  rss[berth,$r]=$(daemon_rss berth)
  rss[docker,$r]=$(daemon_rss docker)
  rss[anon,$r]=$(status_kb "$berthd_pid" RssAnon)
  rss[file,$r]=$(status_kb "$berthd_pid" RssFile)
done

printf '%-28s' "RSS MiB after round"
for r in $(seq 0 "$rounds"); do printf '%8s' "$r"; done
echo
for who in berth anon file docker; do
  case $who in
    berth) printf '%-28s' "berthd" ;;
    anon) printf '%-28s' "  of which anonymous" ;;
    file) printf '%-28s' "  of which file-backed" ;;
    docker) printf '%-28s' "dockerd + containerd" ;;
  esac
  for r in $(seq 0 "$rounds"); do awk -v k="${rss[$who,$r]}" 'BEGIN { printf "%8.1f", k / 1024 }' ; done
  echo
done
# Where berthd's resident memory is: its heap, other anonymous maps (thread stacks, the
# allocator's second arena), and file-backed pages (its binary's code that has run, and
# libraries: paged in once, shared and reclaimable; they grow with the code paths a client
# has used, not with use).
awk '/^[0-9a-f]+-[0-9a-f]+ / { kind = ($6 == "[heap]") ? "heap" : ($6 == "" || $6 ~ /^\[/) ? "anon" : "file" }
  /^Rss:/ { kb[kind] += $2 }
  END { printf "berthd after the last round, KiB: heap %d, other anonymous %d, file-backed %d\n", kb["heap"], kb["anon"], kb["file"] }' \
  "/proc/$berthd_pid/smaps"
echo "growth over $n suites: berthd $(((rss[berth,$rounds] - rss[berth,0]) / 1024)) MiB (anonymous $(((rss[anon,$rounds] - rss[anon,0]) / 1024)) MiB), dockerd + containerd $(((rss[docker,$rounds] - rss[docker,0]) / 1024)) MiB (target: berthd within 5 MB of idle)"
