#!/usr/bin/env bash
# Benchmarks `berth build` against Debian's `buildah bud --isolation chroot`, same machine, same
# run: the reference build (FROM busybox, RUN echo hello > /hello, COPY a file, CMD) without
# cache and fully cached. Both start from the same busybox-static image (hack/lib.sh), imported
# into berthd (namespace bench) and pulled from the same OCI archive into buildah's private
# storage; nothing comes from the network. berthd runs on a temp root with berth-runc.
# Targets: berth no-cache <= 0.25 x buildah no-cache; berth fully cached <= 20 ms.
#
#   hack/bench-build.sh [runs]          (as root; default 10 runs, 2 warm-ups)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib.sh
. hack/lib.sh
runs=${1:-10}
bench_binaries
bench_need_tools hyperfine buildah jq
bench_tmpdir berth-bench-build
bench_cgroup_ns berth-build

base=docker.io/library/busybox:latest
bench_busybox_image "$base"
start_berthd
B="$BERTH --address $berth_sock -n bench"
$B images import "$busybox_archive" >/dev/null

# buildah on private storage (vfs: no overlay mounts to leave behind), the same base.
BA="buildah --root $tmp/buildah/root --runroot $tmp/buildah/run --storage-driver vfs"
id=$($BA pull -q "oci-archive:$busybox_archive")
$BA tag "$id" "$base"
cleanup_buildah() { $BA rmi -a -f >/dev/null 2>&1 || true; }
bench_on_cleanup cleanup_buildah

ctx=$tmp/context
mkdir -p "$ctx"
head -c 4096 /dev/urandom > "$ctx/file"
cat > "$ctx/Dockerfile" <<DOCKERFILE
FROM $base
RUN echo hello > /hello
COPY file /file
CMD ["cat", "/hello"]
DOCKERFILE

berth_nc="$B build -q --no-cache -t bench/ref:nc $ctx"
berth_c="$B build -q -t bench/ref:c $ctx"
buildah_nc="$BA bud --isolation chroot --pull=never --no-cache -q -t bench/ref:nc $ctx"
buildah_c="$BA bud --isolation chroot --pull=never --layers -q -t bench/ref:c $ctx"
# Prime the caches the "cached" runs use.
$berth_c >/dev/null
$buildah_c >/dev/null

hyperfine -N --warmup 2 --runs "$runs" --export-json "$tmp/bench.json" \
  -n "berth no-cache" "$berth_nc" \
  -n "berth cached" "$berth_c" \
  -n "buildah no-cache" "$buildah_nc" \
  -n "buildah cached" "$buildah_c"

med() { jq -r --arg n "$1" '.results[] | select(.command == $n) | .median * 1000' "$tmp/bench.json"; }
bnc=$(med "berth no-cache"); bc=$(med "berth cached")
hnc=$(med "buildah no-cache"); hc=$(med "buildah cached")
awk -v bnc="$bnc" -v bc="$bc" -v hnc="$hnc" -v hc="$hc" 'BEGIN {
  printf "median ms: berth no-cache %.1f, cached %.1f; buildah no-cache %.1f, cached %.1f\n", bnc, bc, hnc, hc
  printf "ratio no-cache berth/buildah = %.2f (target <= 0.25); berth cached %.1f ms (target <= 20)\n", bnc / hnc, bc
}'
