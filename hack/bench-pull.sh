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
runs=${1:-3}
target=${CARGO_TARGET_DIR:-target}
BERTHD=${BERTHD:-$target/release/berthd}
BERTH=${BERTH:-$target/release/berth}
if [ ! -x "$BERTHD" ] || [ ! -x "$BERTH" ]; then
  cargo build --release -p berth-manager
fi
for t in containerd ctr docker-registry hyperfine jq sha256sum gzip python3; do
  command -v "$t" >/dev/null || { echo "bench: $t is missing (hack/setup.sh installs it)" >&2; exit 1; }
done

tmp=$(mktemp -d /var/tmp/berth-bench-pull.XXXXXX)
berthd_pid=""
containerd_pid=""
registry_pid=""
cleanup() {
  for p in "$berthd_pid" "$containerd_pid" "$registry_pid"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
  done
  awk -v d="$tmp" '$5 ~ "^"d {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

# ---- the image: one gzip layer per source tree, an OCI image layout in a tar ----
echo "bench: building the image in $tmp/layout"
layout=$tmp/layout
mkdir -p "$layout/blobs/sha256"
layers=(usr/lib/gcc usr/lib/python3 usr/share/perl usr/share/locale usr/share/doc usr/share/i18n)
diff_ids=()
layer_descs=()
for src in "${layers[@]}"; do
  [ -e "/$src" ] || continue
  tar -C / --numeric-owner -cf "$tmp/layer.tar" "$src" 2>/dev/null || true
  diff_id=$(sha256sum "$tmp/layer.tar" | cut -d' ' -f1)
  gzip -1 -c "$tmp/layer.tar" > "$tmp/layer.tgz"
  dg=$(sha256sum "$tmp/layer.tgz" | cut -d' ' -f1)
  size=$(stat -c %s "$tmp/layer.tgz")
  mv "$tmp/layer.tgz" "$layout/blobs/sha256/$dg"
  diff_ids+=("\"sha256:$diff_id\"")
  layer_descs+=("{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$dg\",\"size\":$size}")
done
rm -f "$tmp/layer.tar"
arch=$(dpkg --print-architecture)
join() { local IFS=,; echo "$*"; }
config="{\"architecture\":\"$arch\",\"os\":\"linux\",\"config\":{},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$(join "${diff_ids[@]}")]}}"
printf '%s' "$config" > "$tmp/config"
cdg=$(sha256sum "$tmp/config" | cut -d' ' -f1); csize=$(stat -c %s "$tmp/config")
mv "$tmp/config" "$layout/blobs/sha256/$cdg"
manifest="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$cdg\",\"size\":$csize},\"layers\":[$(join "${layer_descs[@]}")]}"
printf '%s' "$manifest" > "$tmp/manifest"
mdg=$(sha256sum "$tmp/manifest" | cut -d' ' -f1); msize=$(stat -c %s "$tmp/manifest")
mv "$tmp/manifest" "$layout/blobs/sha256/$mdg"
image=docker.io/berth/bench:latest
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"latest"}}]}' \
  "$mdg" "$msize" "$image" > "$layout/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"
archive=$tmp/image.tar
tar -C "$layout" -cf "$archive" oci-layout index.json blobs
rm -rf "$layout"
archive_mb=$(awk -v b="$(stat -c %s "$archive")" 'BEGIN{printf "%.1f", b/1048576}')
echo "bench: image: ${#diff_ids[@]} layers, archive ${archive_mb} MB"

wait_sock() { for _ in $(seq 500); do [ -S "$1" ] && return 0; sleep 0.02; done; echo "bench: $1 never appeared" >&2; exit 1; }

# ---- the registry ----
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$tmp/registry.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $tmp/registry
http:
  addr: 127.0.0.1:$port
YML
docker-registry serve "$tmp/registry.yml" >"$tmp/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 200); do
  python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/v2/')" 2>/dev/null && break
  sleep 0.05
done

# ---- berthd ----
"$BERTHD" --root "$tmp/berth/root" --state "$tmp/berth/state" --address "$tmp/berth.sock" --log-level warn &
berthd_pid=$!
wait_sock "$tmp/berth.sock"

# ---- containerd (private config, CRI disabled) ----
mkdir -p "$tmp/containerd"
cat > "$tmp/containerd/config.toml" <<TOML
version = 2
root = "$tmp/containerd/root"
state = "$tmp/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$tmp/containerd.sock"
[ttrpc]
  address = "$tmp/containerd.sock.ttrpc"
[debug]
  level = "warn"
TOML
containerd --config "$tmp/containerd/config.toml" >"$tmp/containerd.log" 2>&1 &
containerd_pid=$!
wait_sock "$tmp/containerd.sock"

# Push the image to the registry once (through berthd).
remote=127.0.0.1:$port/berth/bench:latest
B="$BERTH --address $tmp/berth.sock -n bench"
C="ctr -a $tmp/containerd.sock -n bench"
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
