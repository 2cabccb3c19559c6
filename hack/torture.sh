#!/usr/bin/env bash
# Crash torture: berthd on temp dirs, a local docker-registry on 127.0.0.1 serving a 3-layer
# image. Each trial starts work in the background (pull, import, `run -d`, removal of an older
# container, image removal and its GC; every fourth trial a `berth build` with a RUN and a
# COPY too), then at a random moment SIGKILLs berthd (BERTH_TORTURE_SUPERVISOR_KILLS=25
# percent of the trials: the supervisor of a running container instead;
# BERTH_TORTURE_RUNTIME_KILLS=20 percent: the runtime's `create` of the trial's `run -d`, a
# random 0-10 ms after it starts), restarts it, finishes or retries the work and runs `berth check`.
# Counts:
#   trials, berthd kills, supervisor kills, runtime kills (and misses: the create was over
#   before its kill came);
#   corrupt blobs   (`corrupt-blob` findings);
#   lost containers (confirmed running before the kill — `run -d` had returned — and not
#                    running after it; the container whose supervisor was killed is not
#                    counted: it is expected to lose its supervisor, and is removed);
#   leaked pieces   (any other check finding after the work is finished, a killed
#                    supervisor's container that cannot be removed, and, at the end, with
#                    everything removed and berthd stopped: supervisors, mounts and cgroups
#                    left, and the findings of the offline `berthd check`).
#   work failed     (a pull, `run -d` or build that still fails, three tries, after the
#                    restart).
# Prints a summary; exits 1 when any of the last four counts is not 0.
#
#   hack/torture.sh     (as root; BERTH_TORTURE_TRIALS [50], BERTH_TORTURE_SECONDS [600]: no
#                        trial starts after that, BERTH_TORTURE_SUPERVISOR_KILLS [25]: the
#                        percentage of trials that kill a supervisor,
#                        BERTH_TORTURE_RUNTIME_KILLS [20]: of trials that kill the runtime's
#                        create; BERTHD/BERTH override the binaries)
# Cleans up on any exit: processes by pid, mounts and cgroups it made, the temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib.sh
. hack/lib.sh
trials=${BERTH_TORTURE_TRIALS:-50}
cap=${BERTH_TORTURE_SECONDS:-600}
sup=${BERTH_TORTURE_SUPERVISOR_KILLS:-25}
rtk=${BERTH_TORTURE_RUNTIME_KILLS:-20}
for v in "$trials" "$cap" "$sup" "$rtk"; do
  [[ $v =~ ^[0-9]+$ ]] || { echo "torture: BERTH_TORTURE_TRIALS, _SECONDS, _SUPERVISOR_KILLS and _RUNTIME_KILLS take a number, not '$v'" >&2; exit 2; }
done
(( sup + rtk <= 100 )) || { echo "torture: BERTH_TORTURE_SUPERVISOR_KILLS + BERTH_TORTURE_RUNTIME_KILLS is over 100 ($sup + $rtk)" >&2; exit 2; }
bench_binaries
bench_need_tools docker-registry python3 jq sha256sum gzip tar
bench_tmpdir berth-torture
ns=torture-$$
# The containers' cgroups are /<ns>/<id>: removed at exit whatever happens.
bench_cgroup_ns "$ns"
log=$tmp/torture.log
sock=$tmp/berthd.sock
root=$tmp/root
state=$tmp/state
B() { "$BERTH" -a "$sock" -n "$ns" "$@"; }
containers() { { B --format json containers ls 2>/dev/null || echo '[]'; } | jq -r '.[].id'; }
say() { echo "torture: $*"; }

berthd_pid=""
# berthd's runtime: berth-runc, except that the first create after $tmp/kill-create appears
# (the file is taken) is SIGKILLed $(cat $tmp/kill-delay) seconds after it starts; a create
# killed before it finished leaves $tmp/create-killed. (pgrep on the create's command line,
# the first way, saw 3 of 8 creates, and the container's init more often than the runtime.)
runc="$(dirname "$BERTHD")/berth-runc"
cat >"$tmp/runtime" <<SH
#!/bin/sh
case " \$* " in
*" create "*)
  if rm "$tmp/kill-create" 2>/dev/null; then
    "$runc" "\$@" &
    pid=\$!
    sleep "\$(cat "$tmp/kill-delay")"
    kill -9 "\$pid" 2>/dev/null
    wait "\$pid"
    rc=\$?
    [ "\$rc" = 137 ] && : >"$tmp/create-killed"
    exit "\$rc"
  fi ;;
esac
exec "$runc" "\$@"
SH
chmod 755 "$tmp/runtime"

start_daemon() {
  "$BERTHD" --root "$root" --state "$state" --address "$sock" --docker-address "" \
    --runtime "$tmp/runtime" \
    --log-level warn >>"$tmp/berthd.log" 2>&1 &
  berthd_pid=$!
  bench_track_pid "$berthd_pid"
  # The socket file of a killed berthd stays: wait for an answer, not for the file.
  for _ in $(seq 500); do
    "$BERTH" -a "$sock" version >/dev/null 2>&1 && return 0
    kill -0 "$berthd_pid" 2>/dev/null || break
    sleep 0.02
  done
  say "berthd did not start; its log:" >&2
  tail -n 30 "$tmp/berthd.log" >&2
  exit 2
}

# Containers left at exit (berthd up or not): their tasks are killed through the runtime too,
# before bench_cleanup kills supervisors and unmounts.
remove_containers() {
  local id
  [ -n "$berthd_pid" ] && kill -0 "$berthd_pid" 2>/dev/null || return 0
  for id in $(containers); do
    B tasks kill -s KILL "$id" >/dev/null 2>&1 || true
    B tasks rm "$id" >/dev/null 2>&1 || true
    B containers rm "$id" >/dev/null 2>&1 || true
  done
}
runtime_delete_all() {
  local d
  for d in "$state/runtime/$ns"/*/; do
    [ -d "$d" ] || continue
    "$(dirname "$BERTHD")/berth-runc" --root "$state/runtime/$ns" delete --force "$(basename "$d")" >/dev/null 2>&1 || true
  done
}
bench_on_cleanup remove_containers
bench_on_cleanup runtime_delete_all

# ---- the image: busybox, zoneinfo and perl's library (3 layers, ~25 MB) ----
hack/mkbundle.sh "$tmp/bb" >/dev/null
oci_begin "$tmp/layout"
tar -C "$tmp/bb/rootfs" --numeric-owner --owner=0 --group=0 -cf "$tmp/layer.tar" .
oci_add_layer "$tmp/layout" "$tmp/layer.tar"
for src in usr/share/zoneinfo usr/share/perl; do
  tar -C / --numeric-owner -cf "$tmp/layer.tar" "$src" 2>/dev/null || true
  oci_add_layer "$tmp/layout" "$tmp/layer.tar"
done
rm -rf "$tmp/bb"
oci_finish "$tmp/layout" docker.io/berth/torture:latest latest \
  '{"Env":["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]}' "$tmp/image.tar"
bench_busybox_image docker.io/berth/tiny:latest
tiny=docker.io/berth/tiny:latest

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
bench_track_pid $!
for _ in $(seq 200); do
  python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/v2/')" 2>/dev/null && break
  sleep 0.05
done

start_daemon
remote=127.0.0.1:$port/berth/torture:latest
B images import "$tmp/image.tar" >/dev/null
B images tag docker.io/berth/torture:latest "$remote" >/dev/null
B images push --plain-http "$remote" >/dev/null
B images rm docker.io/berth/torture:latest "$remote" >/dev/null
rm -f "$tmp/image.tar"
say "registry on 127.0.0.1:$port serves $remote; $trials trials, at most ${cap} s"
# The build some trials run: a RUN (a container through the runtime) and a COPY, no cache.
mkdir -p "$tmp/ctx"
printf 'FROM %s\nRUN echo built > /built\nCOPY f /f\n' "$remote" >"$tmp/ctx/Dockerfile"
head -c 200000 /dev/urandom >"$tmp/ctx/f"
build() { # TRIAL
  # (--network none: this berthd is on the host's network, where the default bridge and its
  # rules would outlive the run.)
  B build --no-cache -q --network none -t "berth.test/built:$1" "$tmp/ctx" && B images rm "berth.test/built:$1"
}

# ---- the trials ----
started=$tmp/started    # containers whose `run -d` returned, oldest first
victims=$tmp/victims    # containers whose supervisor a trial killed
: >"$started"
: >"$victims"
running() { { B --format json tasks ls 2>/dev/null || echo '[]'; } | jq -r '.[] | select(.status == "RUNNING") | .id'; }
shim_of() { # ID -> the pid of the berth-shim serving its bundle
  local p argv
  for p in /proc/[0-9]*; do
    argv=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
    case "$argv" in *berth-shim" $state/tasks/$ns/$1 "*) echo "${p#/proc/}"; return 0 ;; esac
  done
  return 1
}
drop_started() { grep -vx -- "$1" "$started" >"$started.tmp" || true; mv "$started.tmp" "$started"; }
remove() { # ID: kill, delete the task, remove the container; fails if the record stays
  # (the errors of the last try are in $tmp/remove.err)
  # `tasks wait` fails at once when the supervisor is dead (nothing records the exit), and
  # the runtime may still see the init alive for a moment after the SIGKILL: retry the rm.
  local i
  {
    B tasks kill -s KILL "$1" || true
    B tasks wait "$1" || true
    for i in $(seq 25); do
      B tasks rm "$1" && break
      { B --format json tasks ls 2>/dev/null || echo '[]'; } | jq -e --arg id "$1" 'any(.[]; .id == $id)' >/dev/null || break
      sleep 0.2
    done
    B containers rm "$1" || true
  } >/dev/null 2>"$tmp/remove.err"
  ! containers | grep -qx -- "$1"
}

retry() { # CMD...: three tries, a second apart; the last error in $tmp/retry.err
  local i
  for i in 1 2 3; do
    "$@" >/dev/null 2>"$tmp/retry.err" && return 0
    [ "$i" = 3 ] || sleep 1
  done
  return 1
}

work() { # ID: one trial's work; every step may fail when berthd dies under it
  local id=$1 t=$2 old
  set +e
  if (( t % 3 == 0 )); then B images rm "$remote" >/dev/null 2>&1; fi
  B images pull --plain-http "$remote" >/dev/null 2>&1
  B images import "$busybox_archive" >/dev/null 2>&1
  B run -d "$remote" "$id" sleep 100000 >/dev/null 2>&1 && echo "$id" >>"$started"
  if (( t % 4 == 2 )); then build "$t" >/dev/null 2>&1; fi
  if [ "$(wc -l <"$started")" -gt 3 ]; then
    old=$(head -n1 "$started")
    drop_started "$old"
    remove "$old"
  fi
  B images rm "$tiny" >/dev/null 2>&1
  return 0
}

# Arms the runtime's kill of the next create (the trial's `run -d`: builds use `run`) after a
# random 0-10 ms (the create takes about that long).
arm_kill_create() {
  rm -f "$tmp/create-killed"
  awk -v r=$RANDOM 'BEGIN{printf "%.3f", r % 11 / 1000}' >"$tmp/kill-delay"
  : >"$tmp/kill-create"
}

kills=0 shim_kills=0 rt_kills=0 rt_missed=0 corrupt=0 lost=0 leaked=0 failed=0 done_trials=0
t0=$SECONDS
for t in $(seq 1 "$trials"); do
  if (( SECONDS - t0 >= cap )); then
    say "time cap of ${cap} s reached after $done_trials trials"
    break
  fi
  done_trials=$((done_trials + 1))
  id=c$t
  victim="" kind=$((RANDOM % 100)) runtime_killed=""
  if (( kind >= sup && kind < sup + rtk )); then arm_kill_create; fi
  work "$id" "$t" &
  work_pid=$!
  bench_track_pid "$work_pid"
  delay=$(awk -v r=$RANDOM 'BEGIN{printf "%.3f", r % 1500 / 1000}')
  if (( kind >= sup && kind < sup + rtk )); then
    wait "$work_pid" || true
    delay=$(cat "$tmp/kill-delay")
    rm -f "$tmp/kill-create"
    if [ -e "$tmp/create-killed" ]; then runtime_killed=yes; rt_kills=$((rt_kills + 1)); else rt_missed=$((rt_missed + 1)); fi
  else
    sleep "$delay"
  fi
  if (( kind >= sup && kind < sup + rtk )); then
    :
  elif (( kind < sup )); then
    for v in $(tac "$started"); do
      if p=$(shim_of "$v"); then victim=$v; kill -9 "$p" 2>/dev/null || true; break; fi
    done
  fi
  if (( kind >= sup && kind < sup + rtk )); then
    :
  elif [ -n "$victim" ]; then
    shim_kills=$((shim_kills + 1))
    echo "$victim" >>"$victims"
    wait "$work_pid" || true
  else
    kill -9 "$berthd_pid"
    wait "$berthd_pid" 2>/dev/null || true
    kills=$((kills + 1))
    wait "$work_pid" || true
    start_daemon
  fi

  # Lost: confirmed running before the kill, not running now.
  run_now=$(running)
  while read -r c; do
    [ -n "$c" ] || continue
    grep -qx -- "$c" "$victims" && continue
    if ! grep -qx -- "$c" <<<"$run_now"; then
      lost=$((lost + 1))
      say "trial $t: container $c was running before the kill and is not now" | tee -a "$log"
    fi
  done <"$started"

  # Finish or retry the work.
  if ! retry B images pull --plain-http "$remote"; then
    failed=$((failed + 1))
    say "trial $t: the pull fails after the restart: $(tail -n1 "$tmp/retry.err")" | tee -a "$log"
  fi
  if (( t % 4 == 2 )) && ! retry build "$t"; then
    failed=$((failed + 1))
    say "trial $t: the build fails after the restart: $(tail -n1 "$tmp/retry.err")" | tee -a "$log"
  fi
  if [ -n "$victim" ]; then
    drop_started "$victim"
    if ! remove "$victim"; then
      leaked=$((leaked + 1))
      say "trial $t: $victim, whose supervisor was killed, cannot be removed: $(tr '\n' ' ' <"$tmp/remove.err")" | tee -a "$log"
    fi
  fi
  if ! grep -qx -- "$id" "$started"; then
    # The kill came before `run -d` answered: keep what runs, else remove and run again.
    if grep -qx -- "$id" <<<"$(running)"; then
      echo "$id" >>"$started"
    else
      remove "$id" || true
      if retry B run -d "$remote" "$id" sleep 100000; then
        echo "$id" >>"$started"
      else
        failed=$((failed + 1))
        say "trial $t: run -d fails after the restart: $(tail -n1 "$tmp/retry.err")" | tee -a "$log"
      fi
    fi
  fi
  while [ "$(wc -l <"$started")" -gt 3 ]; do
    old=$(head -n1 "$started")
    drop_started "$old"
    remove "$old" || { leaked=$((leaked + 1)); say "trial $t: cannot remove $old" | tee -a "$log"; }
  done
  # A removal the kill interrupted: finish it.
  for c in $(containers); do
    grep -qx -- "$c" "$started" && continue
    remove "$c" || { leaked=$((leaked + 1)); say "trial $t: cannot remove $c" | tee -a "$log"; }
  done

  if (( kind >= sup && kind < sup + rtk )); then
    what=$( [ -n "$runtime_killed" ] && echo "the runtime's create of $id" || echo "nothing (the create of $id was over first)")
  elif [ -n "$victim" ]; then
    what="the supervisor of $victim"
  else
    what=berthd
  fi
  say "trial $t: killed $what after ${delay} s; running now: $(running | tr '\n' ' ')"

  # Check; repair what it found so that the next trial starts clean.
  set +e
  out=$(B check 2>&1)
  rc=$?
  set -e
  if [ "$rc" -ne 0 ]; then
    c=$(grep -c '^corrupt-blob ' <<<"$out" || true)
    all=$(( $(wc -l <<<"$out") - 1 ))
    corrupt=$((corrupt + c))
    leaked=$((leaked + all - c))
    { echo "trial $t: berth check exited $rc:"; echo "$out"; } >>"$log"
    say "trial $t: check found $all problem(s):"
    head -n 20 <<<"$out"
    B check --repair >>"$log" 2>&1 || true
  fi
done

# ---- the end: remove everything, stop berthd, look for what is left ----
for c in $(containers); do remove "$c" || { leaked=$((leaked + 1)); say "cannot remove $c"; }; done
B images rm "$remote" "$tiny" >/dev/null 2>&1 || true
kill -TERM "$berthd_pid"
wait "$berthd_pid" 2>/dev/null || true
left() { # WHAT COUNT
  if [ "$2" -gt 0 ]; then
    leaked=$((leaked + $2))
    say "left at the end: $2 $1" | tee -a "$log"
  fi
}
left supervisors "$(bench_shim_pids berth-shim | wc -l)"
left "mounts under the state dir" "$(awk -v d="$state" '$5 ~ "^"d && $5 !~ "^"d"/netns" {n++} END {print n+0}' /proc/self/mountinfo)"
cgroups_left=$(for m in "${_bench_cgroups[@]}"; do [ -d "$m" ] && find "$m" -mindepth 1 -type d; done || true)
left cgroups "$(grep -c . <<<"$cgroups_left" || true)"
[ -z "$cgroups_left" ] || echo "$cgroups_left" >>"$log"
# Snapshot dirs and blobs without a record are `berthd check`'s to find (content a crashed
# pull's resumable lease holds is kept on purpose until the lease expires).
set +e
out=$("$BERTHD" check --root "$root" --state "$state" 2>&1)
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
  left "findings of berthd check" "$(( $(wc -l <<<"$out") - 1 ))"
  echo "$out"
fi

elapsed=$((SECONDS - t0))
echo
echo "torture: trials $done_trials, berthd kills $kills, supervisor kills $shim_kills," \
  "runtime kills $rt_kills (missed $rt_missed)," \
  "corrupt blobs $corrupt, lost containers $lost, leaked pieces $leaked," \
  "work failed after restart $failed ($elapsed s)"
if (( corrupt + lost + leaked + failed > 0 )); then
  echo "torture: details in $log:"
  cat "$log"
  exit 1
fi
