#!/usr/bin/env bash
# The Docker API, side by side: the same docker CLI (Debian's 20.10) and docker-compose 1.29
# against berthd's docker.sock and against Debian's dockerd 20.10 (with the containerd it
# starts and its runc shims): `docker run --rm IMAGE true`, `docker run -d` + `docker rm -f`,
# `docker-compose up -d` / `down -t 0` of a three-service app (one service built from a
# Dockerfile, one with a named volume, one client), and the daemons' idle RSS before and
# after; then a container's data: `docker diff`, `export`, `commit`, `update` and `stats
# --no-stream` of a container that wrote 8 MB and a few files; and the clients' own floor
# (`docker version`, `docker-compose ps` of the downed app) against both. Both daemons run in network
# namespaces of the bench's own; nothing leaves them.
#
#   hack/bench-docker.sh [runs]      (as root; default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib.sh
. hack/lib.sh
runs=${1:-10}
bench_binaries
bench_need_tools hyperfine jq unshare nsenter ip dockerd docker-compose
bench_tmpdir berth-bench-docker
bench_cgroup_ns moby

netns=$tmp/netns
touch "$netns"
unshare --net="$netns" true
bench_on_cleanup _unmount_berth_netns
_unmount_berth_netns() { umount "$netns" 2>/dev/null || true; }
nsenter --net="$netns" ip link set lo up
berth_sock=$tmp/berth.sock
berth_docker=$tmp/berth-docker.sock
nsenter --net="$netns" "$BERTHD" --root "$tmp/berth/root" --state "$tmp/berth/state" \
  --address "$berth_sock" --docker-address "$berth_docker" --log-level warn &
berthd_pid=$!
bench_track_pid "$berthd_pid"
wait_sock "$berth_docker"
BD="/usr/bin/docker -H unix://$berth_docker"

bb=docker.io/berth/busybox:bench
bench_busybox_image "$bb"
sleep 1
berth_idle=$(rss_kb "$berthd_pid")
$BD load -i "$busybox_archive" >/dev/null

start_dockerd
sleep 1
containerd_pid=$(pgrep -P "$dockerd_pid" -x containerd || true)
docker_idle=$(rss_kb "$dockerd_pid")
containerd_idle=${containerd_pid:+$(rss_kb "$containerd_pid")}
$DOCKER load -i "$busybox_archive" >/dev/null

app=$tmp/app
bench_compose_app "$app" "$bb" benchapp 18500
compose() { # SOCKET ARGS...
  local sock=$1; shift
  (cd "$app" && DOCKER_HOST="unix://$sock" COMPOSE_DOCKER_CLI_BUILD=0 DOCKER_BUILDKIT=0 \
    docker-compose -p benchapp "$@")
}
for s in "$berth_docker" "$docker_sock"; do
  compose "$s" build -q >/dev/null 2>&1
  compose "$s" up -d >/dev/null 2>&1
  compose "$s" down -v -t 0 >/dev/null 2>&1
done
up="DOCKER_HOST=unix://SOCK COMPOSE_DOCKER_CLI_BUILD=0 docker-compose -f $app/docker-compose.yml -p benchapp"

hyperfine --runs "$runs" --warmup 2 --export-json "$tmp/run.json" \
  -n "berth run --rm" "$BD run --rm $bb true" \
  -n "dockerd run --rm" "$DOCKER run --rm $bb true" \
  -n "berth run -d + rm -f" "$BD rm -f \$($BD run -d $bb sleep 100)" \
  -n "dockerd run -d + rm -f" "$DOCKER rm -f \$($DOCKER run -d $bb sleep 100)" >/dev/null
# Each up is timed from a downed app, each down from an upped one (one prepare per command).
hyperfine --runs "$runs" --export-json "$tmp/up.json" \
  -p "${up//SOCK/$berth_docker} down -v -t 0" -p "${up//SOCK/$docker_sock} down -v -t 0" \
  -n "berth compose up -d" "${up//SOCK/$berth_docker} up -d" \
  -n "dockerd compose up -d" "${up//SOCK/$docker_sock} up -d" >/dev/null
hyperfine --runs "$runs" --export-json "$tmp/down.json" \
  -p "${up//SOCK/$berth_docker} up -d" -p "${up//SOCK/$docker_sock} up -d" \
  -n "berth compose down" "${up//SOCK/$berth_docker} down -v -t 0" \
  -n "dockerd compose down" "${up//SOCK/$docker_sock} down -v -t 0" >/dev/null

# The clients' own floor: the docker CLI's start-up and one round trip (`version`), and
# docker-compose's start-up, its project lookup and exit (`ps` of the downed app).
hyperfine --runs "$runs" --warmup 1 --export-json "$tmp/floor.json" \
  -n "berth docker version" "$BD version" \
  -n "dockerd docker version" "$DOCKER version" \
  -n "berth compose ps (downed)" "${up//SOCK/$berth_docker} ps" \
  -n "dockerd compose ps (downed)" "${up//SOCK/$docker_sock} ps" >/dev/null

# A container's data, on one container per daemon that wrote 8 MB and a few files.
work='dd if=/dev/zero of=/big bs=1M count=8 2>/dev/null; mkdir -p /d; touch /d/a /d/b; rm /etc/group; sleep 1000'
bc=$($BD run -d "$bb" sh -c "$work")
dc=$($DOCKER run -d "$bb" sh -c "$work")
sleep 1
hyperfine --runs "$runs" --warmup 1 --export-json "$tmp/data.json" \
  -n "berth diff" "$BD diff $bc" -n "dockerd diff" "$DOCKER diff $dc" \
  -n "berth export" "$BD export $bc >/dev/null" -n "dockerd export" "$DOCKER export $dc >/dev/null" \
  -n "berth commit" "$BD commit $bc" -n "dockerd commit" "$DOCKER commit $dc" \
  -n "berth update" "$BD update --cpu-shares 512 $bc" \
  -n "dockerd update" "$DOCKER update --cpu-shares 512 $dc" \
  -n "berth stats --no-stream" "$BD stats --no-stream $bc" \
  -n "dockerd stats --no-stream" "$DOCKER stats --no-stream $dc" >/dev/null
$BD rm -f "$bc" >/dev/null
$DOCKER rm -f "$dc" >/dev/null

printf '%-26s %10s\n' "" "median ms"
jq -s -r '[.[].results[]] | .[] | [.command, (.median*1000)] | @tsv' "$tmp/run.json" "$tmp/up.json" "$tmp/down.json" "$tmp/floor.json" "$tmp/data.json" |
  while IFS=$'\t' read -r n med; do printf '%-26s %10.1f\n' "$n" "$med"; done
jq -s -r '([.[].results[]] | map({(.command): .median}) | add) as $m |
  "ratios (berth / dockerd): run --rm \(($m["berth run --rm"] / $m["dockerd run --rm"]) * 100 | round / 100), run -d + rm -f \(($m["berth run -d + rm -f"] / $m["dockerd run -d + rm -f"]) * 100 | round / 100), compose up \(($m["berth compose up -d"] / $m["dockerd compose up -d"]) * 100 | round / 100), compose down \(($m["berth compose down"] / $m["dockerd compose down"]) * 100 | round / 100)"' \
  "$tmp/run.json" "$tmp/up.json" "$tmp/down.json"
jq -s -r '([.[].results[]] | map({(.command): .median}) | add) as $m |
  "targets: run --rm \($m["dockerd run --rm"] * 150 | round) ms (0.15x), compose up \($m["dockerd compose up -d"] * 300 | round) ms and down \($m["dockerd compose down"] * 300 | round) ms (0.3x); the clients alone: docker version \($m["berth docker version"] * 1000 | round) ms, docker-compose ps \($m["berth compose ps (downed)"] * 1000 | round) ms"' \
  "$tmp/run.json" "$tmp/up.json" "$tmp/down.json" "$tmp/floor.json"
jq -r '(.results | map({(.command): .median}) | add) as $m |
  "data ratios (berth / dockerd): " + ([["diff", "export", "commit", "update", "stats --no-stream"][] |
  "\(.) \((($m["berth " + .] / $m["dockerd " + .]) * 100 | round) / 100)"] | join(", "))' "$tmp/data.json"
sleep 1
containerd_after=${containerd_pid:+$(rss_kb "$containerd_pid")}
echo "idle RSS before: berthd $((berth_idle / 1024)) MB; dockerd $((docker_idle / 1024)) MB + containerd $((${containerd_idle:-0} / 1024)) MB"
echo "RSS after the runs: berthd $(($(rss_kb "$berthd_pid") / 1024)) MB; dockerd $(($(rss_kb "$dockerd_pid") / 1024)) MB + containerd $((${containerd_after:-0} / 1024)) MB"
