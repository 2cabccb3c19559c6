#!/usr/bin/env bash
# Runs every fuzz target (fuzz/tests/fuzz.rs) for longer than CI does, one after the other,
# and prints a table: target, executions, failures.
#
#   hack/fuzz.sh            # 30 s per target
#   hack/fuzz.sh 300        # 5 minutes per target
#   hack/fuzz.sh 60 layer_apply archive_import   # some targets only
#
# Failing inputs are written to fuzz/corpus/<target>/crash-* (hang-* for a timeout): commit
# them with the fix, and every later run (CI's included) replays them. BERTH_FUZZ_SEED replays
# a run; BERTH_FUZZ_RSS_MB and BERTH_FUZZ_TIMEOUT change the memory and time bounds.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
shift || true
case $secs in
'' | *[!0-9.]*)
	echo "usage: $0 [seconds per target] [target...]" >&2
	exit 2
	;;
esac
log=$(mktemp /tmp/berth-fuzz.XXXXXX)
trap 'rm -f "$log"' EXIT
cargo test --release -p berth-fuzz --test fuzz --no-run
set +e
BERTH_FUZZ_SECONDS=$secs cargo test --release -p berth-fuzz --test fuzz -- \
	--test-threads=1 "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
echo
# The engine prints one line per target (after "test <name> ... " with one test thread):
# "fuzz <target>: <n> execs in <s> s, <f> failures, <c> corpus files replayed, ..."
awk '
	BEGIN { printf "%-16s %12s %10s %8s\n", "target", "executions", "failures", "seconds" }
	match($0, /fuzz [a-z_]+: [0-9]+ execs in [0-9.]+ s, [0-9]+ failures/) {
		split(substr($0, RSTART, RLENGTH), f, " ")
		t = f[2]; sub(":", "", t)
		printf "%-16s %12s %10s %8s\n", t, f[3], f[8], f[6]
		n++
	}
	END { if (n == 0) { print "no fuzz target ran" > "/dev/stderr"; exit 1 } }
' "$log"
exit "$rc"
