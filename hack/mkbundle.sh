#!/usr/bin/env bash
# Builds an OCI bundle whose rootfs is Debian's busybox-static: hack/mkbundle.sh DIR
# The config.json is berth-runc's default spec with args set to `sh`.
set -euo pipefail
dir=${1:?usage: hack/mkbundle.sh DIR}
top=$(cd "$(dirname "$0")/.." && pwd)
runc_bin=${BERTH_RUNC:-$top/target/release/berth-runc}
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
