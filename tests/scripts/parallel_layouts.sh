#!/usr/bin/env bash
# Tensor and data parallelism with ZeRO give the single-rank run's numbers:
# for arch diff, diff_v2 and transformer (GQA, unequal vocab slices and ZeRO partitions), every
# layout with tp * dp <= 4 (tp in 1,2,4; dp in 1,2,4; zero 0,1,2) trains 5 steps under mpirun and
# its losses, its parameters after 5 steps, and its bytes moved (against the analytic count) are
# compared with the single-rank run (compare_dumps.py). The same for the ablation switches
# (model.subln: scalar, a per-head gain split over tp with the heads, and a frozen model.lambda,
# whose lambda vectors are absent) under tp 2 x dp 2 with ZeRO 1 and tp 4, and for activation
# recomputation (train.recompute) under tp 2 x dp 2 with ZeRO 1 (also bit-identical to that
# layout without it), and for parallel.overlap_grad_reduce off against on (bit-identical at dp 2
# under ZeRO 1, ZeRO 2 and tp 2 x dp 2). Also: a world size that does not match
# tp x dp and a tp that does not divide the heads end every rank with status 2 and one message;
# a rank killed with SIGKILL mid-step ends the job within 60 s with a non-zero status.
#
# usage: parallel_layouts.sh DIFFTRAIN_BIN CONFIG_DIR MPIEXEC
set -u
BIN=${1:?usage}; CONFIGS=${2:?usage}; MPIEXEC=${3:-mpirun}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
tmp=$(mktemp -d "${TMPDIR:-/tmp}/difftrain-parallel-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "parallel_layouts: FAIL: $*" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
MPI=("$MPIEXEC" --oversubscribe --bind-to none)

bash "$HERE/make_corpus.sh" 300 >"$tmp/corpus.txt"
"$BIN" data prepare --out "$tmp/data" --name p --split-on % --val-fraction 0.1 "$tmp/corpus.txt" \
  >/dev/null || fail "data prepare"
DATA=("data.train=$tmp/data/p_train_*.bin" "data.val=$tmp/data/p_val_000000.bin")

train() { # train NAME NP CONFIG [overrides...]
  local name=$1 np=$2 cfg=$3
  shift 3
  timeout 120 "${MPI[@]}" -np "$np" "$BIN" train "$cfg" "${DATA[@]}" "log.metrics=$tmp/$name.jsonl" \
    --dump-params "$tmp/$name" "$@" >"$tmp/$name.out" 2>&1
  local rc=$?
  [ $rc -eq 0 ] || { tail -20 "$tmp/$name.out"; fail "$name exited $rc"; }
}

for arch in diff diff_v2 transformer; do
  cfg="$CONFIGS/parallel/$arch.yaml"
  train "$arch-ref" 1 "$cfg"
  for layout in "1 1" "1 2" "1 4" "2 1" "2 2" "4 1"; do
    set -- $layout
    tp=$1 dp=$2
    zeros="0 1 2"
    [ "$tp" -eq 1 ] && [ "$dp" -eq 1 ] && zeros="1 2" # zero 0 on one rank is the reference
    for zero in $zeros; do
      name="$arch-tp$tp-dp$dp-zero$zero"
      train "$name" $((tp * dp)) "$cfg" parallel.tp=$tp parallel.dp=$dp parallel.zero=$zero
      "$PY" "$HERE/compare_dumps.py" "$tmp/$arch-ref" "$tmp/$name" "$tmp/$arch-ref.jsonl" \
        "$tmp/$name.jsonl" "$name" || fail "$name does not match the single-rank run"
      # the AdamW state is this rank's balanced share: ceil(P / dp) on rank 0 with ZeRO
      if [ "$zero" -gt 0 ]; then
        grep -Eq "AdamW state of [0-9]+ elements per rank" "$tmp/$name.out" || fail "$name: no state size"
        state=$(grep -Eo "AdamW state of [0-9]+" "$tmp/$name.out" | awk '{print $4}')
        total=$(grep -Eo "[0-9]+ parameters on rank 0" "$tmp/$name.out" | awk '{print $1}')
        want=$(( (total + dp - 1) / dp ))
        [ "$state" -eq "$want" ] || fail "$name: AdamW state of $state elements on rank 0, expected $want of $total"
      fi
    done
  done
done

# ablation switches: the per-head gain is split by heads (not summed over tp), lambda is frozen
ABL=(model.subln=scalar model.lambda=0.5)
train abl-ref 1 "$CONFIGS/parallel/diff.yaml" "${ABL[@]}"
grep -q "^layers.0.attn.subln.scale " "$tmp/abl-ref/layout.txt" || fail "abl-ref: no subln.scale"
grep -q "lambda_q1" "$tmp/abl-ref/layout.txt" && fail "abl-ref: a frozen lambda has lambda vectors"
for layout in "2 2 1" "4 1 0"; do
  set -- $layout
  name="abl-tp$1-dp$2-zero$3"
  train "$name" $(($1 * $2)) "$CONFIGS/parallel/diff.yaml" "${ABL[@]}" parallel.tp=$1 \
    parallel.dp=$2 parallel.zero=$3
  "$PY" "$HERE/compare_dumps.py" "$tmp/abl-ref" "$tmp/$name" "$tmp/abl-ref.jsonl" \
    "$tmp/$name.jsonl" "$name" || fail "$name does not match the single-rank run"
done

# activation recomputation (train.recompute): the backward re-runs each layer's forward with its
# TP all-reduces; under tp 2 x dp 2 with ZeRO 1 the parameters after 5 steps are bit-identical to
# the same layout without it, and the bytes moved match the analytic count (which adds the
# re-run layers' all-reduces)
name=diff-recompute-tp2-dp2-zero1
train "$name" 4 "$CONFIGS/parallel/diff.yaml" parallel.tp=2 parallel.dp=2 parallel.zero=1 \
  train.recompute=true
"$PY" "$HERE/compare_dumps.py" "$tmp/diff-ref" "$tmp/$name" "$tmp/diff-ref.jsonl" \
  "$tmp/$name.jsonl" "$name" || fail "$name does not match the single-rank run"
cmp -s "$tmp/diff-tp2-dp2-zero1/params.bin" "$tmp/$name/params.bin" ||
  fail "$name: parameters differ from the same layout without recomputation"

# parallel.overlap_grad_reduce (default true, so every run above reduces each layer's gradients
# as the backward finishes it, the dp 4 ones included): off reduces the whole buffer after the
# backward. At dp 2 each element is a sum of two whatever the buckets, so the parameters after
# 5 steps must be bit-identical between on and off, at ZeRO 1 (the last micro-batch reduces),
# ZeRO 2 (every micro-batch does) and under tp 2 x dp 2 (the TP-partial gradients summed per
# range first)
grep -q "overlap_grad_reduce: true" "$tmp/diff-tp1-dp4-zero2.out" ||
  fail "diff-tp1-dp4-zero2: the resolved config does not show overlap_grad_reduce: true"
for layout in "1 2 1" "1 2 2" "2 2 2"; do
  set -- $layout
  on="diff-tp$1-dp$2-zero$3"
  name="$on-no-overlap"
  train "$name" $(($1 * $2)) "$CONFIGS/parallel/diff.yaml" parallel.tp=$1 parallel.dp=$2 \
    parallel.zero=$3 parallel.overlap_grad_reduce=false
  grep -q "overlap_grad_reduce: false" "$tmp/$name.out" || fail "$name: the override is not shown"
  "$PY" "$HERE/compare_dumps.py" "$tmp/diff-ref" "$tmp/$name" "$tmp/diff-ref.jsonl" \
    "$tmp/$name.jsonl" "$name" || fail "$name does not match the single-rank run"
  cmp -s "$tmp/$on/params.bin" "$tmp/$name/params.bin" ||
    fail "$name: parameters differ from the same layout with overlap_grad_reduce on"
done

# bad layouts: exit 2 on every rank, one message
expect_refusal() { # NAME NP [overrides...]
  local name=$1 np=$2
  shift 2
  timeout 60 "${MPI[@]}" -np "$np" "$BIN" train "$CONFIGS/parallel/diff.yaml" "${DATA[@]}" "$@" \
    >"$tmp/$name.out" 2>&1
  local rc=$?
  [ $rc -eq 2 ] || { cat "$tmp/$name.out"; fail "$name exited $rc, expected 2"; }
  local n
  n=$(grep -c "error:" "$tmp/$name.out")
  [ "$n" -eq 1 ] || { cat "$tmp/$name.out"; fail "$name printed $n error messages, expected 1"; }
}
expect_refusal world-mismatch 3 parallel.tp=2 parallel.dp=2
expect_refusal heads-indivisible 3 parallel.tp=3

# a rank killed mid-training: the job ends within 60 s, non-zero
"${MPI[@]}" -np 2 "$BIN" train "$CONFIGS/parallel/diff.yaml" "${DATA[@]}" parallel.tp=2 \
  train.steps=100000 >"$tmp/kill.out" 2>&1 &
job=$!
for _ in $(seq 1 100); do grep -q "^step" "$tmp/kill.out" && break; sleep 0.2; done
victim=$(pgrep -P "$job" -f "difftrain train" | tail -1)
[ -n "$victim" ] || victim=$(pgrep -f "difftrain train $CONFIGS/parallel/diff.yaml" | tail -1)
[ -n "$victim" ] || { kill $job; fail "no rank to kill"; }
kill -9 "$victim"
start=$(date +%s)
( sleep 60; kill -9 $job ) >/dev/null 2>&1 &
watchdog=$!
wait $job
rc=$?
elapsed=$(( $(date +%s) - start ))
pkill -P $watchdog 2>/dev/null; kill $watchdog 2>/dev/null
[ $rc -ne 0 ] || fail "the job survived a killed rank with status 0"
[ $elapsed -lt 60 ] || fail "the job took ${elapsed}s to end after a rank was killed"
echo "killed rank $victim: the job ended in ${elapsed}s with status $rc"
echo "parallel_layouts: ok"
