#!/usr/bin/env bash
# Preemption and failure under mpirun (2 ranks, tp 2):
# - SIGUSR1 to mpirun (which forwards it to the ranks): the ranks stop after the same step, save
#   a checkpoint and the job exits 0; running again continues from it (resume: auto);
# - a rank killed with SIGKILL mid-training: the job ends within 60 s with a non-zero status and
#   the last committed checkpoint still verifies;
# - a rank stopped with SIGSTOP (alive but stuck, as behind a GPU kernel that never finishes):
#   the other rank's watchdog (DIFFTRAIN_WATCHDOG_S=5) ends the job within 60 s, naming the rank,
#   the phase and the limit, and the last committed checkpoint verifies; the same for a rank of
#   `difftrain eval` stopped mid-evaluation; a malformed limit is refused with one message and
#   exit 2.
# usage: mpirun_faults.sh DIFFTRAIN_BIN CONFIG_DIR MPIEXEC
set -u
BIN=$(readlink -f "${1:?usage}"); CONFIGS=${2:?usage}; MPIEXEC=${3:-mpirun}
HERE=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/difftrain-faults-XXXXXX")
trap 'pkill -9 -f "checkpoint.dir=$tmp/" 2>/dev/null; pkill -9 -f "checkpoint $tmp/" 2>/dev/null
  rm -rf "$tmp"' EXIT
fail() { echo "mpirun_faults: FAIL: $*" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
bash "$HERE/make_corpus.sh" 300 >"$tmp/corpus.txt"
"$BIN" data prepare --out "$tmp/data" --name f --split-on % "$tmp/corpus.txt" >/dev/null || fail "data prepare"
ranks2() { # ranks2 NAME COMMAND [args...]: difftrain COMMAND on 2 ranks (tp 2) in the background,
  # output in $tmp/NAME.out; its pid in $job
  local name=$1 cmd=$2
  shift 2
  "$MPIEXEC" --oversubscribe --bind-to none -np 2 "$BIN" "$cmd" "$CONFIGS/tiny.yaml" parallel.tp=2 \
    "data.val=$tmp/data/f_val_000000.bin" "$@" >"$tmp/$name.out" 2>&1 &
  job=$!
}
run() { # run NAME [overrides...]: training, in the background; its pid in $job
  ranks2 "$1" train "data.train=$tmp/data/f_train_000000.bin" train.val_every=0 \
    "checkpoint.dir=$tmp/$1" log.every=1 "${@:2}"
}
wait_for() { # wait_for FILE PATTERN SECS
  local end=$((SECONDS + $3))
  until grep -q "$2" "$1" 2>/dev/null; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.2
  done
}
end_within() { # end_within SECS: waits for $job, killed after SECS; sets rc and elapsed (seconds)
  local start=$SECONDS timer
  ( sleep "$1"; kill -9 $job ) >/dev/null 2>&1 &
  timer=$!
  wait $job
  rc=$?
  elapsed=$((SECONDS - start))
  pkill -P $timer 2>/dev/null; kill $timer 2>/dev/null
}

# ---- SIGUSR1: stop, save, exit 0; then continue
run pre train.steps=100000 checkpoint.every=0
wait_for "$tmp/pre.out" "^step " 60 || fail "no step logged"
kill -USR1 $job
wait $job
rc=$?
[ $rc -eq 0 ] || { tail "$tmp/pre.out"; fail "the preempted job exited $rc, expected 0"; }
saved=$(sed -n 's/^checkpoint: saved step \([0-9]*\) .*/\1/p' "$tmp/pre.out" | tail -1)
[ -n "$saved" ] && grep -q "^preempted: SIGUSR1" "$tmp/pre.out" || { tail "$tmp/pre.out"; fail "no preemption checkpoint"; }
"$BIN" ckpt verify "$tmp/pre" >/dev/null || fail "the preemption checkpoint does not verify"
run pre train.steps=$((saved + 2)) checkpoint.every=0
wait $job || { tail "$tmp/pre.out"; fail "the resumed job failed"; }
first=$(sed -n 's/^step *\([0-9]*\)\/.*/\1/p' "$tmp/pre.out" | head -1)
[ "$first" = $((saved + 1)) ] || fail "the resumed run started at step $first, expected $((saved + 1))"
echo "mpirun_faults: SIGUSR1 after step $saved: exit 0, checkpoint verifies, the next run starts at step $first"

# ---- SIGKILL of one rank
run kill train.steps=100000 checkpoint.every=5
wait_for "$tmp/kill.out" "^checkpoint: saved step" 60 || fail "no checkpoint saved"
victim=$(pgrep -f "difftrain train .*checkpoint.dir=$tmp/kill " | tail -1)
[ -n "$victim" ] || fail "no rank to kill"
kill -9 "$victim"
end_within 60
[ $rc -ne 0 ] || fail "the job exited 0 after a rank was killed"
[ $elapsed -lt 60 ] || fail "the job took ${elapsed}s to end"
grep -Eq "rank [0-9]+ .*on node $(uname -n)" "$tmp/kill.out" || { tail "$tmp/kill.out"; fail "no message names the failed rank and host"; }
"$BIN" ckpt verify "$tmp/kill" >/dev/null || fail "the last committed checkpoint does not verify"
echo "mpirun_faults: rank $victim killed: the job ended in ${elapsed}s with status $rc; the last checkpoint verifies"
# ---- a rank stopped (SIGSTOP): alive, so mpirun sees nothing; the watchdog of the rank left
# waiting in a collective (DIFFTRAIN_WATCHDOG_S) ends the job
stop_one() { # stop_one PGREP_PATTERN OUT PHASE_REGEX: stops the newest rank matching, checks the end
  victim=$(pgrep -f "$1" | tail -1)
  [ -n "$victim" ] || fail "no rank matches $1"
  kill -STOP "$victim"
  end_within 60
  kill -9 "$victim" 2>/dev/null
  [ $rc -ne 0 ] || fail "$2: the job exited 0 after a rank was stopped"
  [ $elapsed -lt 60 ] || fail "$2: the job took ${elapsed}s to end after a rank was stopped"
  grep -Eq "^\[rank [01]@.*\] difftrain: error: watchdog: no progress for [0-9]+ s: the $3.*DIFFTRAIN_WATCHDOG_S=5" "$2" ||
    { tail "$2"; fail "$2: no watchdog message names the rank, the phase and the limit"; }
}
DIFFTRAIN_WATCHDOG_S=5 run stop train.steps=100000 checkpoint.every=5
wait_for "$tmp/stop.out" "^checkpoint: saved step" 60 || fail "no checkpoint saved"
stop_one "difftrain train .*checkpoint.dir=$tmp/stop " "$tmp/stop.out" \
  "(step|checkpoint save) has not finished \(step [0-9]+\)"
"$BIN" ckpt verify "$tmp/stop" >/dev/null || fail "the last committed checkpoint does not verify"
echo "mpirun_faults: rank $victim stopped: the watchdog ended the job in ${elapsed}s with status $rc; the last checkpoint verifies"
# the same in `difftrain eval`: a rank stopped mid-evaluation (the preemption's checkpoint, scored
# on the validation stream wrapped for far longer than the test waits)
DIFFTRAIN_WATCHDOG_S=5 ranks2 evalstop eval --checkpoint "$tmp/pre" --max-batches 100000000
wait_for "$tmp/evalstop.out" "^eval: [0-9]* batches of" 60 || { cat "$tmp/evalstop.out"; fail "eval did not start"; }
sleep 1
stop_one "difftrain eval .*--checkpoint $tmp/pre " "$tmp/evalstop.out" \
  "evaluation has not finished \(batch [0-9]+\)"
echo "mpirun_faults: eval rank $victim stopped: the watchdog ended the job in ${elapsed}s with status $rc"

# ---- a limit that is not whole seconds: one message naming the variable, exit 2
DIFFTRAIN_WATCHDOG_S=5m run badlimit train.steps=2
wait $job
rc=$?
[ $rc -eq 2 ] || { tail "$tmp/badlimit.out"; fail "DIFFTRAIN_WATCHDOG_S=5m: exit $rc, expected 2"; }
[ "$(grep -c "DIFFTRAIN_WATCHDOG_S is '5m'" "$tmp/badlimit.out")" = 1 ] ||
  { cat "$tmp/badlimit.out"; fail "DIFFTRAIN_WATCHDOG_S=5m: not one message naming the variable"; }
echo "mpirun_faults: DIFFTRAIN_WATCHDOG_S=5m refused with one message, exit 2"
echo "mpirun_faults: ok"
