#!/usr/bin/env bash
# Installs everything Berth's build and tests need on a fresh Debian machine that has the Rust
# toolchain, then builds the release binaries. Idempotent: run it as often as you like.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  # build
  libseccomp-dev pkg-config gcc
  # tests: the busybox rootfs, peers and tools
  busybox-static runc crun containerd docker-registry skopeo umoci jq iproute2 util-linux
  # the terminal tests give berth and ctr a real terminal with script(1)
  bsdutils
  # the HTTPS registry test makes its CA and certificate with the openssl CLI
  openssl
  # `berth-runc ps` and the task tests call ps(1)
  procps
  # container networks: the CNI plugins (bridge, host-local, portmap) and the iptables they
  # and berth-network's per-network rules drive
  containernetworking-plugins iptables
  # names on user-defined networks: aardvark-dns (podman's resolver) on each gateway
  aardvark-dns
  # the registry auth test writes its bcrypt htpasswd line with Python's crypt module
  python3
  # benchmarks (GNU time reports peak RSS); buildah is bench-build.sh's peer
  hyperfine time buildah
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cargo build --release --workspace --bins
echo "setup: binaries in $(pwd)/target/release"
