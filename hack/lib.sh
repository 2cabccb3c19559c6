# shellcheck shell=bash
# Shared set-up of the daemon benchmarks (hack/bench-manager.sh, hack/bench-pull.sh); sourced, not
# run. The caller has `set -euo pipefail` and is in the repository's top directory.
#
#   bench_binaries              BERTHD/BERTH (default target/release/…; built if missing)
#   bench_need_tools T...       fail with a hint when a tool is not on PATH
#   bench_tmpdir PREFIX         tmp=/var/tmp/PREFIX.XXXXXX, removed on exit (trap)
#   bench_track_pid PID         a process cleanup kills (and waits for)
#   bench_on_cleanup FUNC       a function cleanup runs first (remove containers, ...)
#   bench_cgroup_ns NS          cgroups /<NS> this script may create: emptied and removed at exit
#   bench_big_image             the ~200 MB, 6-layer OCI archive: archive, archive_mb, image
#   bench_busybox_image REF     a busybox-static OCI archive: busybox_archive
#   bench_compose_app DIR REF PROJECT PORT  the three-service compose app on image REF in DIR
#   start_berthd                berthd on $tmp/berth/{root,state}: berthd_pid, berth_sock
#                               (bench_berthd_netns=1: in a netns of its own, $berthd_netns)
#   start_containerd            containerd, private config, CRI off: containerd_pid, containerd_sock
#   start_registry              Debian's docker-registry on 127.0.0.1:<free port>, plain HTTP: registry_port
#   bench_shim_pids NAME        pids of the shims (berth-shim, containerd-shim-runc-v2) of $tmp
#   rss_kb PID / wait_sock PATH

bench_binaries() {
  local target=${CARGO_TARGET_DIR:-target}
  BERTHD=${BERTHD:-$target/release/berthd}
  BERTH=${BERTH:-$target/release/berth}
  if [ ! -x "$BERTHD" ] || [ ! -x "$BERTH" ]; then
    cargo build --release -p berth-manager
  fi
}

bench_need_tools() {
  local t
  for t in "$@"; do
    command -v "$t" >/dev/null || { echo "bench: $t is missing (hack/setup.sh installs it)" >&2; exit 1; }
  done
}

# ---- temp dir and cleanup ----
tmp=""
_bench_pids=()
_bench_hooks=()
_bench_cgroups=()   # cgroup dirs that did not exist before this script
_bench_run_dirs=()  # containerd 1.6's fixed /run/containerd dirs, if this script made them

bench_tmpdir() {
  tmp=$(mktemp -d "/var/tmp/$1.XXXXXX")
  trap bench_cleanup EXIT
}

bench_track_pid() { _bench_pids+=("$1"); }
bench_on_cleanup() { _bench_hooks+=("$1"); }

bench_cgroup_ns() {
  local m
  # Every mounted cgroup hierarchy (v1 controllers, name=systemd, the v2 unified one).
  while read -r m; do
    [ -e "$m/$1" ] || _bench_cgroups+=("$m/$1")
  done < <(awk '{for (i = 7; i < NF; i++) if ($i == "-") { if ($(i+1) ~ /^cgroup2?$/) print $5; break }}' /proc/self/mountinfo | sort -u)
}

# The processes of a cgroup tree (every level).
_cgroup_procs() { find "$1" -name cgroup.procs -exec cat {} + 2>/dev/null || true; }

# The shims of this script's daemons: argv0 ends in NAME and the command line names $tmp
# (berth-shim: its bundle, argv[1]; containerd-shim-runc-v2: -address).
bench_shim_pids() { # NAME
  local p argv
  for p in /proc/[0-9]*; do
    argv=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
    case "${argv%% *}" in */"$1"|"$1") ;; *) continue ;; esac
    case "$argv" in *" $tmp/"*) echo "${p#/proc/}" ;; esac
  done
}

bench_cleanup() {
  local rc=$? f p m d
  trap - EXIT
  trap '' INT TERM   # a second Ctrl-C must not cut the cleanup short
  set +e
  for f in "${_bench_hooks[@]}"; do "$f"; done
  for p in "${_bench_pids[@]}"; do
    if kill "$p" 2>/dev/null; then wait "$p" 2>/dev/null; fi
  done
  # Shims and containers a failed run left: kill them before unmounting their rootfs.
  for p in $(bench_shim_pids berth-shim) $(bench_shim_pids containerd-shim-runc-v2); do
    kill -9 "$p" 2>/dev/null
  done
  for d in "${_bench_cgroups[@]}"; do
    [ -d "$d" ] || continue
    for p in $(_cgroup_procs "$d"); do kill -9 "$p" 2>/dev/null; done
  done
  # Unmount anything the daemons left under the temp dir, deepest first.
  awk -v d="$tmp" '$5 ~ "^"d {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  rm -rf "$tmp"
  # The cgroups this script's containers made (empty by now), deepest first.
  for d in "${_bench_cgroups[@]}"; do
    [ -d "$d" ] || continue
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
      [ -d "$d" ] || break
      sleep 0.1
    done
    [ -d "$d" ] && echo "bench: could not remove cgroup $d" >&2
  done
  for d in "${_bench_run_dirs[@]}"; do rmdir "$d" 2>/dev/null; done
  return "$rc"
}

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
wait_sock() { for _ in $(seq 500); do [ -S "$1" ] && return 0; sleep 0.02; done; echo "bench: $1 never appeared" >&2; exit 1; }

# ---- OCI image layouts ----
# oci_begin DIR; oci_add_layer DIR TAR (gzip -1, TAR removed)...; oci_finish DIR NAME REF
# CONFIG ARCHIVE (CONFIG: the image config's "config" object; DIR removed).
_oci_diff_ids=()
_oci_layers=()
_oci_layer_paths=()
oci_begin() {
  mkdir -p "$1/blobs/sha256"
  _oci_diff_ids=()
  _oci_layers=()
  _oci_layer_paths=()
}
_oci_blob() { # FILE -> moved into DIR's blobs; prints "DIGEST SIZE"
  local dg size
  dg=$(sha256sum "$2" | cut -d' ' -f1)
  size=$(stat -c %s "$2")
  mv "$2" "$1/blobs/sha256/$dg"
  echo "$dg $size"
}
oci_add_layer() {
  local dir=$1 tarf=$2 diff_id dg size
  diff_id=$(sha256sum "$tarf" | cut -d' ' -f1)
  gzip -1 -c "$tarf" > "$tarf.gz"
  rm -f "$tarf"
  read -r dg size < <(_oci_blob "$dir" "$tarf.gz")
  _oci_diff_ids+=("\"sha256:$diff_id\"")
  _oci_layers+=("{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$dg\",\"size\":$size}")
  _oci_layer_paths+=("\"blobs/sha256/$dg\"")
}
_join() { local IFS=,; echo "$*"; }
oci_finish() {
  local dir=$1 name=$2 ref=$3 cfg=$4 out=$5 arch cdg csize mdg msize
  arch=$(dpkg --print-architecture)
  printf '%s' "{\"architecture\":\"$arch\",\"os\":\"linux\",\"config\":$cfg,\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$(_join "${_oci_diff_ids[@]}")]}}" > "$dir/config"
  read -r cdg csize < <(_oci_blob "$dir" "$dir/config")
  printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$cdg\",\"size\":$csize},\"layers\":[$(_join "${_oci_layers[@]}")]}" > "$dir/manifest"
  read -r mdg msize < <(_oci_blob "$dir" "$dir/manifest")
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$mdg" "$msize" "$name" "$ref" > "$dir/index.json"
  printf '{"imageLayoutVersion":"1.0.0"}' > "$dir/oci-layout"
  # docker-save's manifest.json beside the OCI index, so `docker load` takes the same archive.
  printf '[{"Config":"blobs/sha256/%s","RepoTags":["%s"],"Layers":[%s]}]' \
    "$cdg" "$name" "$(_join "${_oci_layer_paths[@]}")" > "$dir/manifest.json"
  tar -C "$dir" -cf "$out" oci-layout index.json manifest.json blobs
  rm -rf "$dir"
}

# One gzip layer per host tree (~200 MB in all), an OCI image layout in a tar.
bench_big_image() {
  local layout=$tmp/layout src
  echo "bench: building the image in $layout"
  oci_begin "$layout"
  for src in usr/lib/gcc usr/lib/python3 usr/share/perl usr/share/locale usr/share/doc usr/share/i18n; do
    [ -e "/$src" ] || continue
    tar -C / --numeric-owner -cf "$tmp/layer.tar" "$src" 2>/dev/null || true
    oci_add_layer "$layout" "$tmp/layer.tar"
  done
  local nlayers=${#_oci_diff_ids[@]}
  image=docker.io/berth/bench:latest
  archive=$tmp/image.tar
  oci_finish "$layout" "$image" latest '{}' "$archive"
  archive_mb=$(awk -v b="$(stat -c %s "$archive")" 'BEGIN{printf "%.1f", b/1048576}')
  echo "bench: image: $nlayers layers, archive $archive_mb MB"
}

# Debian's busybox-static (the rootfs hack/mkbundle.sh builds), one layer, Cmd ["sh"].
bench_busybox_image() { # NAME:TAG
  local name=$1 bundle=$tmp/busybox-bundle layout=$tmp/busybox-layout
  hack/mkbundle.sh "$bundle" >/dev/null
  oci_begin "$layout"
  tar -C "$bundle/rootfs" --numeric-owner --owner=0 --group=0 -cf "$tmp/busybox-layer.tar" .
  rm -rf "$bundle"
  oci_add_layer "$layout" "$tmp/busybox-layer.tar"
  busybox_archive=$tmp/busybox.tar
  oci_finish "$layout" "$name" "${name##*:}" \
    '{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]}' "$busybox_archive"
}

# The three-service compose app of the Docker benchmarks, in DIR: `web` built from a
# Dockerfile (image PROJECT-web, port 80 published on 127.0.0.1:PORT), `store` with a named
# volume, `client` depending on web; all on image REF.
bench_compose_app() { # DIR REF PROJECT PORT
  mkdir -p "$1/web"
  cat >"$1/web/Dockerfile" <<EOF
FROM $2
RUN echo hello > /index
CMD ["sh", "-c", "while true; do cat /index | nc -l -p 80; done"]
EOF
  cat >"$1/docker-compose.yml" <<EOF
version: "3.8"
services:
  web:
    build: ./web
    image: $3-web:latest
    ports: ["127.0.0.1:$4:80"]
  store:
    image: $2
    volumes: ["data:/data"]
    command: sleep 1000
  client:
    image: $2
    depends_on: [web]
    command: sleep 1000
volumes:
  data:
EOF
}

# ---- the daemons ----
start_berthd() {
  berth_sock=$tmp/berth.sock
  # bench_state_tmpfs=1: the state dir on a tmpfs, as berthd's default /run/berth is (builds
  # extract their context there; on ext4, creating 10,000 files right after deleting as many
  # costs seconds in the inode allocator's recently_deleted scan).
  if [ "${bench_state_tmpfs:-0}" = 1 ]; then
    mkdir -p "$tmp/berth/state"
    mount -t tmpfs -o mode=0711 berth-bench-state "$tmp/berth/state"
  fi
  # bench_berthd_netns=1: in a network namespace of its own with only loopback
  # ($berthd_netns), so that its bridges and iptables rules live and die there.
  local in_netns=()
  if [ "${bench_berthd_netns:-0}" = 1 ]; then
    berthd_netns=$tmp/berthd-netns
    touch "$berthd_netns"
    unshare --net="$berthd_netns" true
    bench_on_cleanup _unmount_berthd_netns
    nsenter --net="$berthd_netns" ip link set lo up
    in_netns=(nsenter --net="$berthd_netns")
  fi
  "${in_netns[@]}" "$BERTHD" --root "$tmp/berth/root" --state "$tmp/berth/state" --address "$berth_sock" \
    --docker-address "$tmp/docker.sock" --log-level warn &
  berthd_pid=$!
  bench_track_pid "$berthd_pid"
  wait_sock "$berth_sock"
}

_unmount_berthd_netns() { umount "$berthd_netns" 2>/dev/null || true; }

start_registry() {
  registry_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat > "$tmp/registry.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $tmp/registry
http:
  addr: 127.0.0.1:$registry_port
YML
  docker-registry serve "$tmp/registry.yml" >"$tmp/registry.log" 2>&1 &
  bench_track_pid $!
  local _
  for _ in $(seq 200); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$registry_port/v2/')" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "bench: docker-registry did not answer; its log:" >&2; cat "$tmp/registry.log" >&2; exit 1
}

start_containerd() {
  containerd_sock=$tmp/containerd.sock
  # containerd 1.6 keeps shim sockets in /run/containerd/s whatever its config says.
  local d
  for d in /run/containerd/s /run/containerd; do
    [ -e "$d" ] || _bench_run_dirs+=("$d")
  done
  mkdir -p "$tmp/containerd"
  cat > "$tmp/containerd/config.toml" <<TOML
version = 2
root = "$tmp/containerd/root"
state = "$tmp/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$containerd_sock"
[ttrpc]
  address = "$containerd_sock.ttrpc"
[debug]
  level = "warn"
TOML
  containerd --config "$tmp/containerd/config.toml" >"$tmp/containerd.log" 2>&1 &
  containerd_pid=$!
  bench_track_pid "$containerd_pid"
  wait_sock "$containerd_sock"
}

# Debian's dockerd (20.10, with the containerd it starts itself and runc), on temp dirs, in a
# network namespace of its own with only loopback ($docker_netns): docker0 and its iptables
# rules live and die there, and a name its store lacks cannot reach Docker Hub. Its
# containers' cgroups go under `berth-bench-docker` (removed by bench_cleanup).
start_dockerd() {
  bench_need_tools dockerd
  local d
  for d in /run/containerd/s /run/containerd; do
    [ -e "$d" ] || _bench_run_dirs+=("$d")
  done
  docker_sock=$tmp/dockerd.sock
  docker_netns=$tmp/docker-netns
  touch "$docker_netns"
  unshare --net="$docker_netns" true
  bench_on_cleanup _unmount_docker_netns
  nsenter --net="$docker_netns" ip link set lo up
  bench_cgroup_ns berth-bench-docker
  mkdir -p "$tmp/docker"
  nsenter --net="$docker_netns" dockerd --data-root "$tmp/docker/root" \
    --exec-root "$tmp/docker/exec" --pidfile "$tmp/docker/dockerd.pid" \
    -H "unix://$docker_sock" --cgroup-parent /berth-bench-docker --log-level warn \
    >"$tmp/dockerd.log" 2>&1 &
  dockerd_pid=$!
  bench_track_pid "$dockerd_pid"
  wait_sock "$docker_sock"
  DOCKER="/usr/bin/docker -H unix://$docker_sock"
  for _ in $(seq 100); do $DOCKER version >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "bench: dockerd did not answer; its log:" >&2; cat "$tmp/dockerd.log" >&2; exit 1
}
_unmount_docker_netns() { umount "$docker_netns" 2>/dev/null || true; }
