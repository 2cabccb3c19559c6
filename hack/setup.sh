#!/usr/bin/env bash
# Installs everything Berth's build and tests need on a fresh Debian machine that has the Rust
# toolchain, then builds the release binaries. Idempotent: run it as often as you like.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  # build
  libseccomp-dev pkg-config gcc
  # berth-init (init/build.rs) is linked statically against glibc's libc.a
  libc6-dev
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
  # the Docker API tests drive berthd's docker.sock with Debian's unmodified docker CLI
  # (/usr/bin/docker, 20.10); its dockerd is never started (see policy-rc.d below)
  docker.io
  # ... and docker-compose 1.29 (Python, docker-py) as the other Docker API client
  docker-compose
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # No package may start a daemon during the install (docker.io would start dockerd, and
  # containerd its own): invoke-rc.d asks /usr/sbin/policy-rc.d, and 101 means "not allowed".
  # A policy-rc.d that was there before is left alone.
  own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  rc=0
  apt-get install -y -qq --no-install-recommends "${missing[@]}" || rc=$?
  if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
  [ "$rc" -eq 0 ] || exit "$rc"
  if pgrep -x dockerd >/dev/null; then
    echo "setup: warning: a dockerd is running; the tests talk only to berthd's sockets" >&2
  fi
fi

cargo build --release --workspace --bins
echo "setup: binaries in $(pwd)/target/release"
