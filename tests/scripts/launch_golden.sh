#!/usr/bin/env bash
# Golden tests of `difftrain launch --dry-run` for the three schedulers: the printed command or
# sbatch script must equal tests/golden/launch_*.txt, with @DIFFTRAIN@, @CONFIG@ and @ROOT_ENV@
# standing for the binary, the config's absolute path and Open MPI's root variables (printed
# only when run as root). Also: a real local launch trains 2 ranks; a world that is not tp x dp is refused with status 2, and the
# mpirun scheduler without a hostfile names launch.hostfile.
# usage: launch_golden.sh DIFFTRAIN_BIN TESTS_DIR
set -u
BIN=$(realpath "${1:?usage}"); TESTS=$(realpath "${2:?usage}")
CONFIG="$TESTS/configs/launch.yaml"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/difftrain-launch-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "launch_golden: FAIL: $*" >&2; exit 1; }
root_env=""
[ "$(id -u)" -eq 0 ] && root_env="OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "

# a fixed environment: one forwarded NCCL variable, nothing else that could be forwarded
run() { env -i PATH="$PATH" HOME="${HOME:-/root}" NCCL_DEBUG=WARN NCCL_IB_HCA=mlx5 "$BIN" launch "$CONFIG" "$@"; }

for sched in local mpirun slurm; do
  over=("launch.scheduler=$sched")
  # local runs on one host: 1 node of 8 ranks
  [ "$sched" = local ] && over+=(launch.nodes=1 launch.procs_per_node=8)
  run "${over[@]}" --dry-run >"$tmp/$sched.out" 2>"$tmp/$sched.err" \
    || { cat "$tmp/$sched.err"; fail "$sched --dry-run exited $?"; }
  sed -e "s|@DIFFTRAIN@|$BIN|g" -e "s|@CONFIG@|$CONFIG|g" -e "s|@ROOT_ENV@|$root_env|g" \
    "$TESTS/golden/launch_$sched.txt" >"$tmp/$sched.want"
  diff -u "$tmp/$sched.want" "$tmp/$sched.out" || fail "$sched: the dry run differs from tests/golden/launch_$sched.txt"
  [ -e runs/golden ] && fail "$sched: --dry-run created files"
done

run launch.scheduler=local launch.nodes=1 launch.procs_per_node=3 --dry-run >"$tmp/bad.out" 2>&1
rc=$?
[ $rc -eq 2 ] || fail "a world of 3 ranks for tp 2 exited $rc, expected 2"
grep -q "launch.procs_per_node (3)" "$tmp/bad.out" || { cat "$tmp/bad.out"; fail "the refusal does not name the sizes"; }
run launch.scheduler=mpirun launch.hostfile= --dry-run >"$tmp/nohost.out" 2>&1
rc=$?
[ $rc -eq 2 ] && grep -q "launch.hostfile" "$tmp/nohost.out" || { cat "$tmp/nohost.out"; fail "mpirun without a hostfile: exit $rc"; }
# a real local launch: 2 ranks (tp 2) through mpirun, trained to the last step
bash "$(dirname "$0")/make_corpus.sh" 100 >"$tmp/corpus.txt"
"$BIN" data prepare --out "$tmp/data" --name l --split-on % "$tmp/corpus.txt" >/dev/null || fail "data prepare"
"$BIN" launch "$(dirname "$TESTS")/configs/tiny.yaml" launch.procs_per_node=2 parallel.tp=2 \
  "data.train=$tmp/data/l_train_000000.bin" "data.val=$tmp/data/l_val_000000.bin" train.steps=3 \
  >"$tmp/local.out" 2>&1 || { cat "$tmp/local.out"; fail "launch local exited $?"; }
grep -q "^step 3/3 .*comm tp" "$tmp/local.out" || { cat "$tmp/local.out"; fail "launch local did not train 2 ranks to step 3"; }
echo "launch_golden: ok"
