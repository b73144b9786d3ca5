#!/usr/bin/env bash
# Self-test of the one-machine Slurm cluster of slurm_cluster.sh, and of the Slurm behaviour the
# trainer's Slurm support relies on:
# - srun starts tasks (srun -n 2 hostname; 4 tasks fit on the 8-CPU node of a 2-core machine);
# - srun --mpi=pmix starts a 2-rank MPI job of difftrain (Debian's Open MPI through Slurm's PMIx
#   plugin): the ranks see one world of 2 (layout "2 ranks = tp 2") and train 3 steps;
# - the same under sbatch ends COMPLETED with exit code 0:0;
# - sbatch --requeue + scontrol requeue: the job runs again with SLURM_RESTART_COUNT=1;
# - which scancel --signal=USR1 form reaches what, on a batch job whose srun step traps USR1:
#   plain `scancel --signal=USR1 JOB` signals the step's tasks and not the batch shell,
#   `--batch` only the batch shell, `--full` the batch shell and the tasks;
# - srun --kill-on-bad-exit=1: one task killed with SIGKILL ends the step, srun exits non-zero
#   within seconds;
# - slurm_stop leaves no process of the cluster behind.
# Skipped (77) where Slurm is not installed or the user is not root.
#
# usage: slurm_selftest.sh DIFFTRAIN_BIN
set -euo pipefail
BIN=${1:?usage: slurm_selftest.sh DIFFTRAIN_BIN}
BIN=$(readlink -f "$BIN")
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export PATH=$PATH:/usr/sbin
if ! command -v slurmctld >/dev/null 2>&1; then
  echo "slurm_selftest: slurmctld is not installed"
  exit 77
fi
[ "$(id -u)" -eq 0 ] || { echo "slurm_selftest: slurmd needs root"; exit 77; }
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

tmp=$(mktemp -d /tmp/dt-slurm-XXXXXX) # short: slurmstepd's socket paths must fit 107 bytes
source "$HERE/slurm_cluster.sh"
cleanup() { slurm_stop; rm -rf "$tmp"; }
trap cleanup EXIT
fail() {
  echo "slurm_selftest: FAIL: $*" >&2
  _slurm_log_tails
  exit 1
}
fail_with() { cat "$1" >&2; fail "$2"; } # fail_with OUTPUT_FILE MESSAGE
step() { echo "slurm_selftest: [$SECONDS s] $*"; }
cd "$tmp"

rc=0
slurm_start "$tmp/cluster" || rc=$?
[ $rc -eq 77 ] && exit 77
[ $rc -eq 0 ] || fail "slurm_start"
node=$SLURM_CLUSTER_NODE
step "cluster up: node $node, SLURM_CONF=$SLURM_CONF"

# ---- srun
out=$(srun -n 2 hostname) || fail "srun -n 2 hostname"
[ "$(sort <<<"$out" | uniq -c | awk '{print $1, $2}')" = "2 $(uname -n)" ] \
  || fail "srun -n 2 hostname printed '$out'"
[ "$(srun -n 4 hostname | wc -l)" = 4 ] || fail "srun -n 4 (more tasks than cores) did not run 4 tasks"
srun --mpi=list 2>&1 | grep -qx '[[:space:]]*pmix' || fail "srun has no pmix MPI plugin"
step "srun -n 2 hostname, srun -n 4"

# ---- a 2-rank MPI training run under srun --mpi=pmix
bash "$HERE/make_corpus.sh" 200 >corpus.txt
"$BIN" data prepare --out data --name t --split-on % corpus.txt >prepare.log 2>&1 \
  || { cat prepare.log; fail "data prepare"; }
train=("$BIN" train "$ROOT/configs/tiny.yaml" "data.train=$tmp/data/t_train_*.bin"
       "data.val=$tmp/data/t_val_000000.bin" parallel.tp=2 train.steps=3)
srun --mpi=pmix -n 2 "${train[@]}" >srun_train.out 2>&1 || fail_with srun_train.out "srun train"
grep -q "^layout: 2 ranks = tp 2" srun_train.out \
  || fail_with srun_train.out "the ranks are not one MPI world of 2"
grep -q "^step 3/3 | loss" srun_train.out || fail_with srun_train.out "srun train: no step 3/3"
step "srun --mpi=pmix -n 2 difftrain train"

# ---- the same as a batch job
{
  echo '#!/bin/bash'
  printf 'srun --mpi=pmix'
  printf ' %q' "${train[@]}"
  echo
} >train.sbatch
id=$(sbatch --parsable -n 2 -o "$tmp/sbatch_train.out" train.sbatch) || fail "sbatch"
final=$(slurm_wait_job "$id" 60) || fail_with sbatch_train.out "the batch job did not end"
[ "$final" = "COMPLETED 0:0" ] || fail_with sbatch_train.out "batch job $id ended '$final'"
grep -q "^step 3/3 | loss" sbatch_train.out || fail_with sbatch_train.out "sbatch train: no step 3/3"
step "sbatch of srun --mpi=pmix difftrain train: $final"

# ---- sbatch --requeue + scontrol requeue: the second run sees SLURM_RESTART_COUNT=1 and exits 0
cat >requeue.sbatch <<EOF
#!/bin/bash
echo "run \${SLURM_RESTART_COUNT:-0}" >>"$tmp/requeue.trace"
[ "\${SLURM_RESTART_COUNT:-0}" -ge 1 ] && exit 0
srun sleep 60
EOF
id=$(sbatch --parsable --requeue -n 1 -o "$tmp/requeue.out" requeue.sbatch) \
  || fail "sbatch --requeue"
for ((i = 0; i < 100; i++)); do [ -s requeue.trace ] && break; sleep 0.1; done
[ "$(squeue -h -j "$id" -o %T)" = RUNNING ] || fail "the requeue job is not running"
scontrol requeue "$id" || fail "scontrol requeue $id"
final=$(slurm_wait_job "$id" 60) || fail "the requeued job did not end"
[ "$final" = "COMPLETED 0:0" ] || fail "requeued job $id ended '$final'"
[ "$(cat requeue.trace)" = "$(printf 'run 0\nrun 1')" ] || fail "requeue runs: $(cat requeue.trace)"
scontrol -o show job "$id" | grep -q '\bRestarts=1\b' || fail "scontrol shows no Restarts=1"
step "sbatch --requeue + scontrol requeue: ran twice, $final"

# ---- scancel --signal=USR1: which form reaches the batch shell, which the srun tasks
cat >task.sh <<'EOF'
#!/bin/bash
# a task of the step: appends a line to $1.task<rank> per SIGUSR1
trap 'echo usr1 >>"$1.task$SLURM_PROCID"' USR1
touch "$1.ready$SLURM_PROCID"
for ((i = 0; i < 600; i++)); do sleep 0.1 & wait $!; done
EOF
cat >signal.sbatch <<'EOF'
#!/bin/bash
# the batch shell: appends a line to $1.batch per SIGUSR1; waits on srun so that it can trap
trap 'echo usr1 >>"$1.batch"' USR1
srun bash "$(dirname "$1")/task.sh" "$1" &
while kill -0 $! 2>/dev/null; do wait $! || true; done
EOF
id=$(sbatch --parsable -n 2 -o "$tmp/signal.out" signal.sbatch "$tmp/sig") \
  || fail "sbatch signal job"
for ((i = 0; i < 200; i++)); do [ -e sig.ready0 ] && [ -e sig.ready1 ] && break; sleep 0.1; done
[ -e sig.ready0 ] && [ -e sig.ready1 ] || fail_with signal.out "the signal job's tasks did not start"
lines() { cat "$1" 2>/dev/null | wc -l; }
counts() { echo "$(lines sig.batch) $(lines sig.task0) $(lines sig.task1)"; }
expect_counts() { # expect_counts "BATCH TASK0 TASK1" FORM: within 5 s, then stable for 1 s
  for ((i = 0; i < 50; i++)); do [ "$(counts)" = "$1" ] && break; sleep 0.1; done
  sleep 1
  [ "$(counts)" = "$1" ] \
    || fail "after $2: USR1 counts (batch task0 task1) '$(counts)', expected '$1'"
}
scancel --signal=USR1 "$id"
expect_counts "0 1 1" "scancel --signal=USR1 (the tasks only)"
scancel --signal=USR1 --batch "$id"
expect_counts "1 1 1" "scancel --signal=USR1 --batch (the batch shell only)"
scancel --signal=USR1 --full "$id"
expect_counts "2 2 2" "scancel --signal=USR1 --full (the batch shell and the tasks)"
scancel "$id"
final=$(slurm_wait_job "$id" 30) || fail "the signal job did not end after scancel"
step "scancel --signal=USR1: plain -> tasks, --batch -> batch shell, --full -> both; then $final"

# ---- srun --kill-on-bad-exit=1: a task killed by SIGKILL ends the whole step
srun --kill-on-bad-exit=1 -n 2 bash -c "echo \$\$ >$tmp/kobe.\$SLURM_PROCID; exec sleep 60" \
  >kobe.out 2>&1 &
srun_pid=$!
for ((i = 0; i < 100; i++)); do [ -s kobe.0 ] && [ -s kobe.1 ] && break; sleep 0.1; done
[ -s kobe.0 ] && [ -s kobe.1 ] || fail_with kobe.out "the kill-on-bad-exit tasks did not start"
t0=$SECONDS
kill -KILL "$(cat kobe.1)"
rc=0
for ((i = 0; i < 150; i++)); do kill -0 $srun_pid 2>/dev/null || break; sleep 0.1; done
if kill -0 $srun_pid 2>/dev/null; then
  kill -KILL $srun_pid
  fail "srun still runs 15 s after a task was killed"
fi
wait $srun_pid || rc=$?
[ $rc -ne 0 ] || fail_with kobe.out "srun exited 0 after a task was killed"
kill -0 "$(cat kobe.0)" 2>/dev/null && fail "task 0 still runs after task 1 was killed"
step "srun --kill-on-bad-exit=1: task 1 killed, srun exited $rc within $((SECONDS - t0)) s"

# ---- slurm_stop leaves nothing behind
daemons=$SLURM_CLUSTER_PIDS
[ -n "$(slurm_own_pids)" ] || fail "slurm_own_pids finds no process of the running cluster"
slurm_stop
slurm_stop # a second call does nothing
for p in $daemons; do kill -0 "$p" 2>/dev/null && fail "daemon $p still runs after slurm_stop"; done
left=$(slurm_own_pids)
[ -z "$left" ] || fail "processes of the cluster left after slurm_stop: $(echo $left)"
left=$(ps -e -o pid=,args= | C="$tmp/cluster/slurm.conf" awk 'index($0, ENVIRON["C"])')
[ -z "$left" ] || fail "processes naming the cluster's slurm.conf left: $left"
step "slurm_stop: no process of the cluster left"
echo "slurm_selftest: OK"
