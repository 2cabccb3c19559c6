#!/usr/bin/env bash
# Builds an OCI bundle whose rootfs is Debian's busybox-static: hack/mkbundle.sh DIR
# The config.json is the runtime's default spec (berth-runc's, or runc's while berth-runc is not
# built; BERTH_RUNC picks another) with args set to `sh`.
set -euo pipefail
dir=${1:?usage: hack/mkbundle.sh DIR}
top=$(cd "$(dirname "$0")/.." && pwd)
runc_bin=${BERTH_RUNC:-${CARGO_TARGET_DIR:-$top/target}/release/berth-runc}
if ! "$runc_bin" --version 2>/dev/null | head -n1 | grep -q '^runc version '; then
  echo "mkbundle: $runc_bin is missing or not runc-compatible; using runc's spec" >&2
  runc_bin=$(command -v runc) || { echo "mkbundle: no runc either" >&2; exit 1; }
fi
[ -x /bin/busybox ] || { echo "mkbundle: /bin/busybox missing (apt-get install busybox-static)" >&2; exit 1; }
mkdir -p "$dir/rootfs"/{bin,dev,proc,sys,tmp,etc,root}
cp /bin/busybox "$dir/rootfs/bin/busybox"
for applet in $("$dir/rootfs/bin/busybox" --list); do
  [ -e "$dir/rootfs/bin/$applet" ] || ln -s busybox "$dir/rootfs/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$dir/rootfs/etc/passwd"
echo 'root:x:0:' > "$dir/rootfs/etc/group"
rm -f "$dir/config.json"
"$runc_bin" spec --bundle "$dir"
echo "bundle ready in $dir"
