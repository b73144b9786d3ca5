#!/usr/bin/env bash
# `difftrain launch` with scheduler slurm on a real one-machine Slurm (slurm_cluster.sh):
# - the tiny config trains on 2 tasks (tp 2) to completion and commits a checkpoint that verifies;
# - `scancel --signal=USR1` on a running job: the ranks agree to stop after a step, save a
#   checkpoint and exit 0 (job COMPLETED 0:0); launching again continues from it (resume: auto)
#   with the step count carried over;
# - the time limit near (the batch script gets SIGUSR1, here from scancel --batch): the ranks stop
#   and save, the job requeues itself and resumes from that checkpoint to the last step;
# - a rank killed with SIGKILL mid-training: srun --kill-on-bad-exit=1 ends the job within 60 s,
#   not COMPLETED, and the last committed checkpoint still verifies.
# Skipped (77) where Slurm is not installed or the user is not root.
# usage: slurm_e2e.sh DIFFTRAIN_BIN
set -uo pipefail
BIN=$(readlink -f "${1:?usage: slurm_e2e.sh DIFFTRAIN_BIN}")
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export PATH=$PATH:/usr/sbin
command -v slurmctld >/dev/null 2>&1 || { echo "slurm_e2e: slurmctld is not installed"; exit 77; }
[ "$(id -u)" -eq 0 ] || { echo "slurm_e2e: slurmd needs root"; exit 77; }
export OMP_NUM_THREADS=1
tmp=$(mktemp -d /tmp/dt-se-XXXXXX) # short: slurmstepd's socket paths must fit 107 bytes
source "$HERE/slurm_cluster.sh"
cleanup() { slurm_stop; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "slurm_e2e: FAIL: $*" >&2; _slurm_log_tails; exit 1; }
step() { echo "slurm_e2e: [$SECONDS s] $*"; }
cd "$tmp"
rc=0
slurm_start "$tmp/cluster" || rc=$?
[ $rc -eq 77 ] && exit 77
[ $rc -eq 0 ] || fail "slurm_start"

bash "$HERE/make_corpus.sh" 300 >corpus.txt
"$BIN" data prepare --out data --name s --split-on % corpus.txt >/dev/null || fail "data prepare"
common=(launch.scheduler=slurm launch.procs_per_node=2 parallel.tp=2 "data.train=$tmp/data/s_train_000000.bin"
        "data.val=$tmp/data/s_val_000000.bin" train.val_every=0)

launch() { # launch NAME [overrides...]: submits, prints the job id
  local name=$1
  shift
  "$BIN" launch "$ROOT/configs/tiny.yaml" "${common[@]}" "checkpoint.dir=$tmp/$name" \
    "launch.slurm.job_name=$name" "launch.slurm.output=$tmp/$name-%j.out" "$@" >"$tmp/$name.launch" 2>&1 \
    || { cat "$tmp/$name.launch" >&2; fail "launch $name"; }
  sed -n 's/.* as job \([0-9]*\)$/\1/p' "$tmp/$name.launch"
}
wait_for() { # wait_for FILE PATTERN SECS
  local end=$((SECONDS + $3))
  until grep -q "$2" "$1" 2>/dev/null; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.2
  done
}

# ---- to completion, with a committed checkpoint
job=$(launch full train.steps=12 checkpoint.every=5)
[ -n "$job" ] || fail "launch printed no job id: $(cat "$tmp/full.launch")"
state=$(slurm_wait_job "$job" 180) || fail "job $job did not end"
[ "$state" = "COMPLETED 0:0" ] || { cat "$tmp"/full-*.out; fail "job $job ended $state"; }
grep -q "^step 12/12" "$tmp"/full-"$job".out || fail "job $job did not train 12 steps"
grep -q "layout: 2 ranks = tp 2" "$tmp"/full-"$job".out || fail "job $job did not run 2 ranks"
[ "$(cat "$tmp/full/latest")" = step_00000012 ] || fail "latest is '$(cat "$tmp/full/latest")', expected step_00000012"
"$BIN" ckpt verify "$tmp/full" >/dev/null || fail "the committed checkpoint does not verify"
step "job $job: 12 steps on 2 tasks, checkpoint step 12 verifies"

# ---- preemption: scancel --signal=USR1, then a resubmission continues
job=$(launch pre train.steps=100000 checkpoint.every=0 log.every=1)
out="$tmp/pre-$job.out"
wait_for "$out" "^step " 120 || fail "job $job never logged a step"
scancel --signal=USR1 "$job"
state=$(slurm_wait_job "$job" 120) || fail "job $job did not end after SIGUSR1"
[ "$state" = "COMPLETED 0:0" ] || { cat "$out"; fail "job $job ended $state after SIGUSR1, expected COMPLETED 0:0"; }
grep -q "^preempted: SIGUSR1 received" "$out" || { cat "$out"; fail "no preemption message"; }
saved=$(sed -n 's/^checkpoint: saved step \([0-9]*\) .*/\1/p' "$out" | tail -1)
[ -n "$saved" ] || fail "job $job saved no checkpoint when preempted"
[ "$(cat "$tmp/pre/latest")" = "$(printf step_%08d "$saved")" ] || fail "latest is not the preemption checkpoint"
"$BIN" ckpt verify "$tmp/pre" >/dev/null || fail "the preemption checkpoint does not verify"
total=$((saved + 3))
job2=$(launch pre train.steps=$total checkpoint.every=0 log.every=1)
state=$(slurm_wait_job "$job2" 180) || fail "job $job2 did not end"
out2="$tmp/pre-$job2.out"
[ "$state" = "COMPLETED 0:0" ] || { cat "$out2"; fail "resubmitted job $job2 ended $state"; }
grep -q "^checkpoint: resumed from .*step_$(printf %08d "$saved")" "$out2" || { cat "$out2"; fail "job $job2 did not resume from step $saved"; }
first=$(sed -n 's/^step *\([0-9]*\)\/.*/\1/p' "$out2" | head -1)
[ "$first" = $((saved + 1)) ] || fail "the resumed job's first step is $first, expected $((saved + 1))"
grep -q "^step $total/$total" "$out2" || fail "the resumed job did not reach step $total"
step "job $job preempted after step $saved (exit 0, checkpoint verifies); job $job2 resumed at step $first and finished step $total"

# ---- the time limit near (--signal=B:USR1@120; here scancel --batch --signal=USR1): the batch
# script passes the signal to the ranks, they stop and save, and the job requeues itself and
# resumes from that checkpoint to the end, under the same job id
job=$(launch tl train.steps=40 checkpoint.every=0 log.every=1)
out="$tmp/tl-$job.out"
wait_for "$out" "^step " 120 || fail "job $job never logged a step"
scancel --batch --signal=USR1 "$job"
wait_for "$out" "^checkpoint: resumed from" 180 || { cat "$out"; fail "job $job was not requeued and resumed"; }
state=$(slurm_wait_job "$job" 180) || fail "requeued job $job did not end"
[ "$state" = "COMPLETED 0:0" ] || { cat "$out"; fail "requeued job $job ended $state"; }
grep -q "^difftrain: SIGUSR1 (time limit near): stopping the ranks, then requeueing job $job" "$out" \
  || { cat "$out"; fail "the batch script did not report the requeue"; }
saved=$(sed -n 's/^checkpoint: saved step \([0-9]*\) .*/\1/p' "$out" | head -1)
[ -n "$saved" ] && [ "$saved" -lt 40 ] || { cat "$out"; fail "no checkpoint saved before the requeue"; }
grep -q "^checkpoint: resumed from .*step_$(printf %08d "$saved")" "$out" || { cat "$out"; fail "the requeued job did not resume from step $saved"; }
grep -q "^step 40/40" "$out" || fail "the requeued job did not reach step 40"
[ "$(cat "$tmp/tl/latest")" = step_00000040 ] || fail "latest is '$(cat "$tmp/tl/latest")' after the requeued run"
step "job $job: time limit near after step $saved: saved, requeued itself, resumed and finished step 40"

# ---- a rank killed mid-training
job=$(launch kill train.steps=100000 checkpoint.every=5 log.every=1)
out="$tmp/kill-$job.out"
wait_for "$out" "^checkpoint: saved step" 120 || fail "job $job never saved a checkpoint"
victim=$(pgrep -f "difftrain train .*checkpoint.dir=$tmp/kill " | tail -1)
[ -n "$victim" ] || fail "no rank of job $job to kill"
kill -9 "$victim"
start=$SECONDS
state=$(slurm_wait_job "$job" 60) || fail "job $job still running 60 s after a rank was killed"
elapsed=$((SECONDS - start))
case $state in COMPLETED*) fail "job $job ended $state after a rank was killed" ;; esac
grep -Eq "srun: error: $(uname -n): task [0-9]+" "$out" || { tail "$out"; fail "no message names the failed task and host"; }
"$BIN" ckpt verify "$tmp/kill" >/dev/null || fail "the last committed checkpoint does not verify after the kill"
step "job $job: rank $victim killed, the job ended in ${elapsed}s ($state); the last checkpoint verifies"
echo "slurm_e2e: ok"
