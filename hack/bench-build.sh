#!/usr/bin/env bash
# Benchmarks `berth build` against Debian's `buildah bud --isolation chroot`, same machine, same
# run: the reference build (FROM busybox, RUN echo hello > /hello, COPY a file, CMD) without
# cache and fully cached. Both start from the same busybox-static rootfs (hack/mkbundle.sh):
# an OCI archive imported into berthd (namespace bench), and a buildah image committed from it
# in buildah's private vfs storage (an imported archive without history breaks buildah's layer
# cache). Nothing comes from the network; berthd runs on a temp root with berth-runc, its state
# dir on a tmpfs as its default /run/berth is.
# Targets: berth no-cache <= 0.25 x buildah no-cache; berth fully cached <= 20 ms.
# Then RUN's network: five RUN steps without cache on the default bridge (each its own netns,
# veth, address and CNI ADD/DEL) against --network none and host; the bridge's cost per step
# is (bridge - none) / 5.
# Then two contexts sent whole (COPY . /ctx): 10,000 small files, and one 200 MB file, each
# without cache and fully cached, for both; reported as context MB/s (target for berth's
# big context: >= 300 MB/s sent and cached).
#
#   hack/bench-build.sh [runs] [context-runs]   (as root; default 10 and 3 runs, 2/1 warm-ups;
#                                                context-runs 0 skips the big contexts)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib.sh
. hack/lib.sh
runs=${1:-10}
cruns=${2:-3}
bench_binaries
bench_need_tools hyperfine buildah jq
bench_tmpdir berth-bench-build
bench_cgroup_ns berth-build

base=docker.io/library/busybox:latest
bench_busybox_image "$base"
# In a network namespace of its own: RUN steps join the default bridge.
bench_berthd_netns=1 bench_state_tmpfs=1 start_berthd
B="$BERTH --address $berth_sock -n bench"
$B images import "$busybox_archive" >/dev/null

# buildah on private storage (vfs: no overlay mounts to leave behind), the same base.
BA="buildah --root $tmp/buildah/root --runroot $tmp/buildah/run --storage-driver vfs"
# (made with buildah from the same busybox rootfs: the archive's config has no history,
# which buildah's layer cache refuses)
hack/mkbundle.sh "$tmp/bb" >/dev/null
wc=$($BA from scratch)
$BA copy -q "$wc" "$tmp/bb/rootfs/" / >/dev/null
$BA config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd sh "$wc"
$BA commit -q "$wc" "$base" >/dev/null
$BA rm "$wc" >/dev/null
rm -rf "$tmp/bb"
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

# ---- big contexts ----
if [ "$cruns" -gt 0 ]; then
  mkctx() { # DIR: a Dockerfile copying the whole context
    mkdir -p "$1"
    printf 'FROM %s\nCOPY . /ctx\n' "$base" > "$1/Dockerfile"
  }
  many=$tmp/ctx-many
  mkctx "$many"
  python3 - "$many" <<'PY'
import os, sys
root = sys.argv[1]
for d in range(100):
    os.makedirs(f"{root}/d{d:03}")
    for f in range(100):
        with open(f"{root}/d{d:03}/f{f:03}", "wb") as fh:
            fh.write(os.urandom(64) + f"file {d}/{f}\n".encode() * 4)
PY
  big=$tmp/ctx-big
  mkctx "$big"
  head -c 200M /dev/urandom > "$big/big"
  ctx_mb() { du -sm --apparent-size "$1" | cut -f1; }
  many_mb=$(ctx_mb "$many"); big_mb=$(ctx_mb "$big")
  echo "bench: contexts: 10,000 files ($many_mb MB), one big file ($big_mb MB)"
  for c in many big; do
    d=$tmp/ctx-$c
    $B build -q -t "bench/$c:c" "$d" >/dev/null
    $BA bud --isolation chroot --pull=never --layers -q -t "bench/$c:c" "$d" >/dev/null
  done
  hyperfine -N --warmup 1 --runs "$cruns" --export-json "$tmp/bench-ctx.json" \
    -n "berth many no-cache" "$B build -q --no-cache -t bench/many:nc $many" \
    -n "berth many cached" "$B build -q -t bench/many:c $many" \
    -n "buildah many no-cache" "$BA bud --isolation chroot --pull=never --no-cache -q -t bench/many:nc $many" \
    -n "buildah many cached" "$BA bud --isolation chroot --pull=never --layers -q -t bench/many:c $many" \
    -n "berth big no-cache" "$B build -q --no-cache -t bench/big:nc $big" \
    -n "berth big cached" "$B build -q -t bench/big:c $big" \
    -n "buildah big no-cache" "$BA bud --isolation chroot --pull=never --no-cache -q -t bench/big:nc $big" \
    -n "buildah big cached" "$BA bud --isolation chroot --pull=never --layers -q -t bench/big:c $big"
  cmed() { jq -r --arg n "$1" '.results[] | select(.command == $n) | .median' "$tmp/bench-ctx.json"; }
  printf '\n%-24s %10s %10s\n' "context (median)" "ms" "MB/s"
  for c in many big; do
    mb=$many_mb; [ "$c" = big ] && mb=$big_mb
    for who in berth buildah; do
      for mode in no-cache cached; do
        s=$(cmed "$who $c $mode")
        awk -v n="$who $c $mode" -v s="$s" -v mb="$mb" 'BEGIN { printf "%-24s %10.1f %10.1f\n", n, s * 1000, mb / s }'
      done
    done
  done
fi

# ---- RUN's network ----
netctx=$tmp/ctx-net
mkdir -p "$netctx"
printf 'FROM %s\nRUN true\nRUN true\nRUN true\nRUN true\nRUN true\n' "$base" > "$netctx/Dockerfile"
for n in default none host; do $B build -q --no-cache --network "$n" -t bench/net:$n "$netctx" >/dev/null; done
hyperfine -N --warmup 1 --runs "$runs" --export-json "$tmp/bench-net.json" \
  -n "bridge" "$B build -q --no-cache -t bench/net:default $netctx" \
  -n "none" "$B build -q --no-cache --network none -t bench/net:none $netctx" \
  -n "host" "$B build -q --no-cache --network host -t bench/net:host $netctx"
nmed() { jq -r --arg n "$1" '.results[] | select(.command == $n) | .median * 1000' "$tmp/bench-net.json"; }
nb=$(nmed bridge); nn=$(nmed none); nh=$(nmed host)
awk -v b="$nb" -v n="$nn" -v h="$nh" 'BEGIN {
  printf "\n5 RUN steps, no cache, median ms: bridge %.1f, none %.1f, host %.1f\n", b, n, h
  printf "bridge per RUN step: +%.1f ms over none (ratio bridge/none %.2f)\n", (b - n) / 5, b / n
}'
