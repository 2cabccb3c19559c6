#!/usr/bin/env bash
# The main job after set-up: the whole stack, offline, on temp dirs.
#
#  1. berth-runc alone runs a container from a busybox bundle (Debian's busybox-static): its own
#     hostname, pid 1, only loopback, a read-only root.
#  2. berthd on temp dirs, a local docker-registry on 127.0.0.1 (plain HTTP); the busybox base
#     is imported as docker.io/library/busybox:latest (nothing is pulled from the Internet).
#  3. `berth build` makes an image from a Dockerfile on that base; `berth run` runs it.
#  4. `berth images push` sends it to the registry, `berth images rm` removes it locally,
#     `berth images pull` brings it back and it runs again.
#
# Everything (daemons, containers, mounts, cgroups, temp dirs) goes at exit, also on failure
# or Ctrl-C.
#
#   hack/demo.sh            (as root, after hack/setup.sh; BERTHD/BERTH/BERTH_RUNC override)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib.sh
. hack/lib.sh
bench_binaries
RUNC=${BERTH_RUNC:-$(dirname "$BERTHD")/berth-runc}
bench_need_tools docker-registry python3 jq sha256sum gzip busybox
bench_tmpdir berth-demo
trap 'exit 130' INT
trap 'exit 143' TERM
ns=demo-$$
# The containers' cgroups (/<ns>/<id>) go at exit. (RUN's, /berth-build/<id>, are berthd's
# and the runtime's to remove: other builds on this machine may share /berth-build.)
bench_cgroup_ns "$ns"
say() { printf '\n== %s\n' "$*"; }
echo "demo: working in $tmp"

# ---- 1. berth-runc on its own ----
say "berth-runc runs a busybox bundle"
hack/mkbundle.sh "$tmp/bundle" >/dev/null
jq '.process.terminal = false
    | .process.args = ["sh", "-c", "echo \"hello from $(hostname), I am pid $$\"; echo \"interfaces: $(ls /sys/class/net | tr \"\\n\" \" \")\"; touch /x 2>/dev/null || echo \"the root is read-only\"; exit 7"]' \
  "$tmp/bundle/config.json" > "$tmp/config.json"
mv "$tmp/config.json" "$tmp/bundle/config.json"
set +e
"$RUNC" --root "$tmp/runc-state" run --bundle "$tmp/bundle" "demo-$$"
code=$?
set -e
echo "container exited with $code (expected 7)"
[ "$code" -eq 7 ]
rm -rf "$tmp/bundle"

# ---- 2. berthd, the registry, the base image ----
say "berthd and a local registry"
start_registry
start_berthd
B="$BERTH --address $berth_sock -n $ns"
echo "berthd on $berth_sock, docker-registry on 127.0.0.1:$registry_port"
bench_busybox_image docker.io/library/busybox:latest
$B images import "$busybox_archive" >/dev/null
rm -f "$busybox_archive"
$B images ls

# ---- 3. build and run ----
say "berth build"
image=127.0.0.1:$registry_port/demo/hello:1
ctx=$tmp/context
mkdir -p "$ctx"
echo "a file from the build context" > "$ctx/greeting.txt"
cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM busybox
ARG WHO=berth
RUN echo "built by $WHO" > /built-by
COPY greeting.txt /srv/greeting.txt
WORKDIR /srv
ENV GREETING_FILE=/srv/greeting.txt
CMD ["sh", "-c", "cat /built-by $GREETING_FILE; echo \"in $(pwd) as uid $(id -u)\""]
DOCKERFILE
cat "$ctx/Dockerfile"
# --network none: this berthd runs on the host's network, where the default bridge (berth0)
# and its iptables rules would outlive the demo.
$B build --progress plain --network none -t "$image" "$ctx"

say "berth run (the built image)"
$B run --rm "$image" "demo-run1-$$"

# ---- 4. push, remove, pull, run ----
say "berth images push"
$B images push --plain-http "$image"
say "berth images rm, berth builder prune (the image and its build cache are gone locally)"
$B images rm "$image" >/dev/null
$B builder prune >/dev/null
if $B images ls -q | grep -qxF "$image"; then echo "demo: $image is still there" >&2; exit 1; fi
echo "images left: $($B images ls -q | tr '\n' ' ')"
say "berth images pull"
$B images pull --plain-http "$image"
say "berth run (the pulled image)"
$B run --rm "$image" "demo-run2-$$"

say "done; cleaning up"
