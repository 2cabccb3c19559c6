#!/usr/bin/env bash
# Times `run` of /bin/true from a busybox bundle with berth-runc, runc and crun in ONE hyperfine
# run, and prints medians, ratios and each runtime's peak RSS for one `run`.
#
#   hack/bench-runtime.sh [OUT_DIR]      (default OUT_DIR: target/bench)
#   RUNS=50 WARMUP=5 BERTH_RUNC=path     (overrides)
#
# crun 1.8 refuses this host's cgroup v1 hybrid layout, so it runs inside a private mount
# namespace whose /sys/fs/cgroup/unified is covered by a tmpfs (nothing changes on the host). That
# wrapper is timed on its own (exec'ing /bin/true) and crun's figure is also shown corrected:
#   crun (corrected) = crun in wrapper - wrapper + /bin/true
# The floor is the kernel work of the same namespaces without any runtime:
#   unshare -fpmnui --mount-proc chroot ROOTFS /bin/true
#
# Each runtime has its own --root and its own container id. `run` deletes the container when it
# exits, so the runs reuse the id one after another; a --prepare step (untimed) deletes a leftover
# so that one failed run cannot fail all the next ones, and the script reports leftovers at the end.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out_dir=${1:-$top/target/bench}
runs=${RUNS:-50}
warmup=${WARMUP:-5}
berth=${BERTH_RUNC:-$top/target/release/berth-runc}

for tool in hyperfine jq runc crun unshare chroot; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (hack/setup.sh installs it)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "bench: run as root (containers need it)" >&2; exit 1; }
runc_bin=$(command -v runc)
crun_bin=$(command -v crun)

work=$(mktemp -d /tmp/berth-bench.XXXXXX)
bundle=$work/bundle
ids=()
cleanup() {
  # Only what this script made: its containers in its own roots, then its temp dir.
  for entry in "${ids[@]}"; do
    IFS='|' read -r bin root id <<<"$entry"
    "$bin" --root "$root" delete --force "$id" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

BERTH_RUNC=$runc_bin "$top/hack/mkbundle.sh" "$bundle" >/dev/null
jq '.process.terminal = false | .process.args = ["/bin/true"] | .root.readonly = false' \
  "$bundle/config.json" >"$bundle/config.tmp" && mv "$bundle/config.tmp" "$bundle/config.json"
# The same container granted CAP_SYS_PTRACE: berth-runc then runs from a sealed memfd copy of
# itself (the CVE-2019-5736 guard non-dumpable cannot give); this measures what that costs.
ptrace_bundle=$work/bundle-ptrace
mkdir -p "$ptrace_bundle"
jq --arg root "$bundle/rootfs" '.root.path = $root
   | .process.capabilities |= with_entries(.value += ["CAP_SYS_PTRACE"])' \
  "$bundle/config.json" >"$ptrace_bundle/config.json"

# berth-runc is measured only if it exists and can run the bundle.
have_berth=0
if [ ! -x "$berth" ]; then
  echo "bench: $berth does not exist yet: measuring runc and crun only"
elif ! "$berth" --version 2>/dev/null | head -n1 | grep -q '^runc version '; then
  echo "bench: $berth --version does not start with 'runc version': skipping it"
elif ! "$berth" --root "$work/root-berth" run --bundle "$bundle" bench-trial >/dev/null 2>"$work/berth-trial.err" </dev/null; then
  echo "bench: $berth cannot run the bundle yet, skipping it: $(tail -n1 "$work/berth-trial.err")"
  "$berth" --root "$work/root-berth" delete --force bench-trial >/dev/null 2>&1 || true
else
  have_berth=1
fi

wrap() { # the private mount namespace crun needs, around a command
  printf "unshare -m sh -c 'mount -t tmpfs tmpfs /sys/fs/cgroup/unified && exec %s'" "$*"
}

names=() cmds=() preps=()
add() { names+=("$1"); cmds+=("$2"); preps+=("$3"); }
# A runtime's timed command, and its untimed --prepare script (a file: no nested quoting).
runtime() { # NAME BIN ROOT ID [wrapped] [BUNDLE]
  local name=$1 bin=$2 root=$3 id=$4 wrapped=${5:-} b=${6:-$bundle}
  ids+=("$bin|$root|$id")
  local run="$bin --root $root run --bundle $b $id"
  local prep=$work/prep-$name.sh
  if [ -n "$wrapped" ]; then
    echo "mount -t tmpfs tmpfs /sys/fs/cgroup/unified && $bin --root $root delete --force $id" >"$prep.inner"
    echo "unshare -m sh $prep.inner >/dev/null 2>&1 || true" >"$prep"
    add "$name" "$(wrap "$run")" "sh $prep"
  else
    echo "$bin --root $root delete --force $id >/dev/null 2>&1 || true" >"$prep"
    add "$name" "$run" "sh $prep"
  fi
}

if [ "$have_berth" = 1 ]; then
  runtime berth-runc "$berth" "$work/root-berth" bench-berth
  runtime berth-runc-ptrace "$berth" "$work/root-berth" bench-berth-ptrace "" "$ptrace_bundle"
fi
runtime runc "$runc_bin" "$work/root-runc" bench-runc
runtime crun-in-wrapper "$crun_bin" "$work/root-crun" bench-crun wrapped
add wrapper "$(wrap /bin/true)" true
add true /bin/true true
add floor "unshare -fpmnui --mount-proc chroot $bundle/rootfs /bin/true" true

mkdir -p "$out_dir"
json=$out_dir/runtime-$(date +%Y%m%d-%H%M%S).json
args=(--warmup "$warmup" --runs "$runs" -N --export-json "$json")
for i in "${!names[@]}"; do
  args+=(--prepare "${preps[$i]}")
done
for i in "${!names[@]}"; do
  args+=(--command-name "${names[$i]}" "${cmds[$i]}")
done
hyperfine "${args[@]}"

median() { jq -r --arg n "$1" '.results[] | select(.command == $n) | .median * 1000' "$json"; }
declare -A ms
for n in "${names[@]}"; do ms[$n]=$(median "$n"); done
ms[crun]=$(awk -v c="${ms[crun-in-wrapper]}" -v w="${ms[wrapper]}" -v t="${ms[true]}" 'BEGIN { printf "%.3f", c - w + t }')

# Peak RSS (largest single process, GNU time's %M) of one `run` per runtime.
declare -A rss
if [ -x /usr/bin/time ]; then
  rss_of() { # NAME COMMAND...
    local name=$1; shift
    if /usr/bin/time -f %M -o "$work/rss" "$@" >/dev/null 2>&1 </dev/null; then
      rss[$name]="$(tail -n1 "$work/rss") KiB"
    else
      rss[$name]="(run failed)"
    fi
  }
  [ "$have_berth" = 1 ] && rss_of berth-runc "$berth" --root "$work/root-berth" run --bundle "$bundle" bench-rss
  rss_of runc "$runc_bin" --root "$work/root-runc" run --bundle "$bundle" bench-rss
  rss_of crun-in-wrapper unshare -m sh -c "mount -t tmpfs tmpfs /sys/fs/cgroup/unified && exec $crun_bin --root $work/root-crun run --bundle $bundle bench-rss"
  rss_of wrapper unshare -m sh -c "mount -t tmpfs tmpfs /sys/fs/cgroup/unified && exec /bin/true"
  ids+=("$runc_bin|$work/root-runc|bench-rss")
  [ "$have_berth" = 1 ] && ids+=("$berth|$work/root-berth|bench-rss")
else
  echo "bench: /usr/bin/time (Debian package 'time') is missing: add it to hack/setup.sh; no RSS figures"
fi

echo
echo "## run of /bin/true: medians over $runs runs (ms), peak RSS of one run"
printf '%-24s %10s %14s\n' what median_ms peak_rss
for n in "${names[@]}"; do
  printf '%-24s %10.2f %14s\n' "$n" "${ms[$n]}" "${rss[$n]:--}"
done
printf '%-24s %10.2f %14s\n' "crun (corrected)" "${ms[crun]}" "-"
echo
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
if [ "$have_berth" = 1 ]; then
  echo "berth-runc / runc             = $(ratio "${ms[berth-runc]}" "${ms[runc]}")"
  echo "berth-runc / crun (raw)       = $(ratio "${ms[berth-runc]}" "${ms[crun-in-wrapper]}")"
  echo "berth-runc / crun (corrected) = $(ratio "${ms[berth-runc]}" "${ms[crun]}")"
  echo "berth-runc / floor            = $(ratio "${ms[berth-runc]}" "${ms[floor]}")"
  echo "sealed copy (CAP_SYS_PTRACE)  = +$(awk -v a="${ms[berth-runc-ptrace]}" -v b="${ms[berth-runc]}" 'BEGIN { printf "%.2f", a - b }') ms"
else
  echo "berth-runc: not measured (see above)"
fi
echo "runc / crun (corrected)       = $(ratio "${ms[runc]}" "${ms[crun]}")"
echo "runc / floor                  = $(ratio "${ms[runc]}" "${ms[floor]}")"
echo "hyperfine JSON: $json"

# exec latency and run with seccomp + hooks: a second hyperfine run, same runtimes.
if [ "${SKIP_EXEC:-0}" != 1 ]; then
  sleeper=$work/sleeper
  cp -a "$bundle" "$sleeper"
  jq '.process.args = ["sleep", "3600"]' "$sleeper/config.json" >"$sleeper/c" && mv "$sleeper/c" "$sleeper/config.json"
  hardened=$work/hardened
  cp -a "$bundle" "$hardened"
  jq --slurpfile prof "$top/runtime/tests/seccomp-fixtures/docker-default.json" \
    '.linux.seccomp = $prof[0] | .hooks = {"createRuntime": [{"path": "/bin/true"}], "poststart": [{"path": "/bin/true"}]}' \
    "$hardened/config.json" >"$hardened/c" && mv "$hardened/c" "$hardened/config.json"
  enames=() ecmds=()
  start_sleeper() { # NAME BIN ROOT ID [wrapped]
    local name=$1 bin=$2 root=$3 id=$4 wrapped=${5:-}
    ids+=("$bin|$root|$id")
    local create="$bin --root $root run -d --bundle $sleeper $id"
    local exec="$bin --root $root exec $id /bin/true"
    if [ -n "$wrapped" ]; then
      sh -c "$(wrap "$create")" >/dev/null 2>&1 </dev/null
      enames+=("exec-$name"); ecmds+=("$(wrap "$exec")")
    else
      $create >/dev/null 2>&1 </dev/null
      enames+=("exec-$name"); ecmds+=("$exec")
    fi
  }
  [ "$have_berth" = 1 ] && start_sleeper berth-runc "$berth" "$work/root-berth-x" bench-sleep-berth
  start_sleeper runc "$runc_bin" "$work/root-runc-x" bench-sleep-runc
  start_sleeper crun-in-wrapper "$crun_bin" "$work/root-crun-x" bench-sleep-crun wrapped
  if [ "$have_berth" = 1 ]; then
    echo "$berth --root $work/root-berth-h delete --force bench-h >/dev/null 2>&1 || true" >"$work/prep-h-berth.sh"
  fi
  ejson=$out_dir/exec-$(date +%Y%m%d-%H%M%S).json
  # Runs with seccomp (Docker's default profile) and hooks.
  hnames=() hcmds=() hpreps=()
  if [ "$have_berth" = 1 ]; then
    hnames+=(run-seccomp-hooks-berth-runc); hcmds+=("$berth --root $work/root-berth-h run --bundle $hardened bench-h")
    hpreps+=("sh $work/prep-h-berth.sh"); ids+=("$berth|$work/root-berth-h|bench-h")
  fi
  echo "$runc_bin --root $work/root-runc-h delete --force bench-h >/dev/null 2>&1 || true" >"$work/prep-h-runc.sh"
  hnames+=(run-seccomp-hooks-runc); hcmds+=("$runc_bin --root $work/root-runc-h run --bundle $hardened bench-h")
  hpreps+=("sh $work/prep-h-runc.sh"); ids+=("$runc_bin|$work/root-runc-h|bench-h")
  hargs=(--warmup "$warmup" --runs "$runs" -N --export-json "$ejson")
  for i in "${!enames[@]}"; do hargs+=(--prepare true); done
  for i in "${!hnames[@]}"; do hargs+=(--prepare "${hpreps[$i]}"); done
  for i in "${!enames[@]}"; do hargs+=(--command-name "${enames[$i]}" "${ecmds[$i]}"); done
  for i in "${!hnames[@]}"; do hargs+=(--command-name "${hnames[$i]}" "${hcmds[$i]}"); done
  hyperfine "${hargs[@]}"
  emedian() { jq -r --arg n "$1" '.results[] | select(.command == $n) | .median * 1000' "$ejson"; }
  declare -A ems
  for n in "${enames[@]}" "${hnames[@]}"; do ems[$n]=$(emedian "$n"); done
  ems[exec-crun]=$(awk -v c="${ems[exec-crun-in-wrapper]}" -v w="${ms[wrapper]}" -v t="${ms[true]}" 'BEGIN { printf "%.3f", c - w + t }')
  echo
  echo "## exec of /bin/true into a running container, and run with seccomp + hooks: medians (ms)"
  for n in "${enames[@]}" exec-crun "${hnames[@]}"; do printf '%-32s %10.2f\n' "$n" "${ems[$n]}"; done
  if [ "$have_berth" = 1 ]; then
    echo "exec: berth-runc / runc             = $(ratio "${ems[exec-berth-runc]}" "${ems[exec-runc]}")"
    echo "exec: berth-runc / crun (corrected) = $(ratio "${ems[exec-berth-runc]}" "${ems[exec-crun]}")"
    echo "run with seccomp+hooks: berth-runc / runc = $(ratio "${ems[run-seccomp-hooks-berth-runc]}" "${ems[run-seccomp-hooks-runc]}")"
    echo "seccomp+hooks cost for berth-runc: $(awk -v a="${ems[run-seccomp-hooks-berth-runc]}" -v b="${ms[berth-runc]}" 'BEGIN { printf "%.2f", a - b }') ms"
  fi
  [ "$have_berth" = 1 ] && "$berth" --root "$work/root-berth-x" delete --force bench-sleep-berth >/dev/null 2>&1
  "$runc_bin" --root "$work/root-runc-x" delete --force bench-sleep-runc >/dev/null 2>&1
  sh -c "$(wrap "$crun_bin --root $work/root-crun-x delete --force bench-sleep-crun")" >/dev/null 2>&1 || true
fi

# Leftovers: every run must have deleted its container.
left=0
for entry in "${ids[@]}"; do
  IFS='|' read -r bin root id <<<"$entry"
  case $bin in
    "$crun_bin") continue ;; # its state lives in the private namespace's view; checked below
  esac
  if "$bin" --root "$root" list -q 2>/dev/null | grep -qx "$id"; then
    echo "bench: LEFTOVER container $id in $root ($bin)"; left=1
  fi
done
if [ -d "$work/root-crun" ] && [ -n "$(ls -A "$work/root-crun" 2>/dev/null)" ]; then
  echo "bench: LEFTOVER crun state: $(ls -A "$work/root-crun")"; left=1
fi
exit "$left"
