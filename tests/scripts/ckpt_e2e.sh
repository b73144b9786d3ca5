#!/usr/bin/env bash
# Sharded HDF5 checkpoints end to end (README "Checkpoints"), on tests/configs/parallel/diff.yaml
# (GQA, sizes that split over tp = 4, unequal vocab slices and ZeRO partitions):
#  1. bit-exact resume: 20 steps straight vs 10 + save + resume 10 at tp=2 dp=2 zero=1: the
#     JSON Lines (step, loss, lr, grad_norm, printed %.9g) and --dump-params are byte-identical;
#  2. resharding: that step-10 checkpoint loads at (tp1 dp1 zero0), (tp4 dp1), (tp1 dp4 zero2),
#     (tp2 dp1 zero1): the next 3 losses match the run that stays on tp=2 dp=2 to 1e-5 relative
#     (fp32 reductions in another order: compare_dumps.py's tolerance for losses);
#  3. faults: a rank SIGKILLed while paused inside a save (DIFFTRAIN_TEST_SAVE_PAUSE) leaves the
#     previous checkpoint as `latest`, verified and loadable, the .tmp is refused as a resume path,
#     ignored by resume auto and removed by the next save; a flipped byte in a shard fails verify
#     and load naming the tensor; a deleted shard fails naming the file; a checkpoint of another
#     model shape fails naming the first mismatching tensor; an unknown format version fails;
#  4. init_from: weights equal the checkpoint's bit for bit, fresh schedule; a long-context
#     extension (new seq_len, max_seq_len, rope_theta) trains; keep_last rotation; inspect;
#  5. h5py reads every tensor of the tp=2 dp=2 checkpoint from index.h5 in its global shape
#     (ckpt_h5py.py compare). Parts 3 (flip, version) and 5 need h5py: without it the script ends
#     with 77 (skipped) after everything else passed.
# usage: ckpt_e2e.sh DIFFTRAIN_BIN CONFIG_DIR MPIEXEC
set -u
BIN=${1:?usage}; CONFIGS=${2:?usage}; MPIEXEC=${3:-mpirun}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
tmp=$(mktemp -d "${TMPDIR:-/tmp}/difftrain-ckpt-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "ckpt_e2e: FAIL: $*" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
MPI=("$MPIEXEC" --oversubscribe --bind-to none)
CFG="$CONFIGS/parallel/diff.yaml"
have_h5py=1
"$PY" -c "import h5py, numpy" 2>/dev/null || have_h5py=0

bash "$HERE/make_corpus.sh" 300 >"$tmp/corpus.txt"
"$BIN" data prepare --out "$tmp/data" --name p --split-on % --val-fraction 0.1 "$tmp/corpus.txt" \
  >/dev/null || fail "data prepare"
DATA=("data.train=$tmp/data/p_train_*.bin" "data.val=$tmp/data/p_val_000000.bin")
L22=(parallel.tp=2 parallel.dp=2 parallel.zero=1)

run() { # run NAME NP EXPECTED_RC [args...]: train, output in $tmp/NAME.out
  local name=$1 np=$2 want=$3
  shift 3
  timeout 120 "${MPI[@]}" -np "$np" "$BIN" train "$CFG" "${DATA[@]}" train.steps=20 \
    "log.metrics=$tmp/$name.jsonl" "$@" >"$tmp/$name.out" 2>&1
  local rc=$?
  [ "$rc" -eq "$want" ] || { tail -20 "$tmp/$name.out"; fail "$name exited $rc, expected $want"; }
}
expect() { grep -q -- "$2" "$tmp/$1.out" || { tail -20 "$tmp/$1.out"; fail "$1: no '$2' in the output"; }; }
fields() { sed 's/,"tokens_per_s".*//' "$@"; } # step, loss, lr, grad_norm as printed

# ---- 1. bit-exact resume at tp=2 dp=2 zero=1 ----
run ref 4 0 "${L22[@]}" --dump-params "$tmp/ref"
CK="$tmp/ck"
run first 4 0 "${L22[@]}" checkpoint.dir="$CK" checkpoint.every=10 --stop-after 10 \
  --dump-params "$tmp/first"
expect first "checkpoint: saved step 10 to $CK/step_00000010"
[ "$(cat "$CK/latest")" = step_00000010 ] || fail "latest is not step_00000010"
run second 4 0 "${L22[@]}" checkpoint.dir="$CK" checkpoint.every=10 --dump-params "$tmp/second"
expect second "checkpoint: resumed from $CK/step_00000010 at step 10"
[ "$(wc -l <"$tmp/first.jsonl")" -eq 10 ] && [ "$(wc -l <"$tmp/second.jsonl")" -eq 10 ] ||
  fail "expected 10 + 10 metric lines"
cmp -s <(fields "$tmp/first.jsonl" "$tmp/second.jsonl") <(fields "$tmp/ref.jsonl") || {
  diff <(fields "$tmp/first.jsonl" "$tmp/second.jsonl") <(fields "$tmp/ref.jsonl") | head
  fail "10 + resume 10 does not reproduce the 20-step run's metrics bit for bit"
}
cmp -s "$tmp/ref/params.bin" "$tmp/second/params.bin" || fail "final weights differ after resume"
cmp -s "$tmp/ref/layout.txt" "$tmp/second/layout.txt" || fail "final layouts differ after resume"
echo "bit-exact resume: 20 losses and the final weights identical"

# ---- 2. resharding into other layouts ----
for layout in "1 1 0" "4 1 0" "1 4 2" "2 1 1"; do
  set -- $layout
  name="reshard-tp$1-dp$2-zero$3"
  run "$name" $(($1 * $2)) 0 parallel.tp=$1 parallel.dp=$2 parallel.zero=$3 \
    checkpoint.resume="$CK/step_00000010" --stop-after 13
  expect "$name" "resumed from $CK/step_00000010 at step 10 (saved at tp 2 x dp 2, zero 1"
  "$PY" - "$tmp/second.jsonl" "$tmp/$name.jsonl" "$name" <<'PYEOF' || fail "$name: losses differ"
import json, sys
ref = [json.loads(l) for l in open(sys.argv[1])][:3]
run = [json.loads(l) for l in open(sys.argv[2])]
assert [r["step"] for r in run] == [11, 12, 13], f"steps {[r['step'] for r in run]}"
for a, b in zip(ref, run):
    for k in ("loss", "grad_norm"):
        if abs(a[k] - b[k]) > 1e-5 * abs(a[k]):
            sys.exit(f"{sys.argv[3]}: step {a['step']} {k} {b[k]} vs {a[k]} on tp=2 dp=2")
    assert a["lr"] == b["lr"], "the schedule did not continue"
PYEOF
done
echo "resharding: 4 layouts continue with the same losses"

# ---- 3a. a rank killed inside a save ----
K="$tmp/kill"
run kill-first 2 0 parallel.dp=2 parallel.zero=1 checkpoint.dir="$K" checkpoint.every=5 --stop-after 5
DIFFTRAIN_TEST_SAVE_PAUSE=60 "${MPI[@]}" -x DIFFTRAIN_TEST_SAVE_PAUSE -np 2 "$BIN" \
  train "$CFG" "${DATA[@]}" train.steps=20 parallel.dp=2 parallel.zero=1 checkpoint.dir="$K" \
  checkpoint.every=5 >"$tmp/kill.out" 2>&1 &
job=$!
for _ in $(seq 1 300); do [ "$(grep -c "checkpoint: pausing" "$tmp/kill.out")" -ge 2 ] && break; sleep 0.1; done
grep -q "checkpoint: pausing" "$tmp/kill.out" || { kill $job; fail "the save never paused"; }
victim=$(pgrep -P "$job" -f "difftrain train" | tail -1) # a rank: mpirun's child
[ -n "$victim" ] || { kill $job; fail "no rank to kill"; }
kill -9 "$victim"
( sleep 60; kill -9 $job ) >/dev/null 2>&1 &
watchdog=$!
wait $job
rc=$?
pkill -P $watchdog 2>/dev/null; kill $watchdog 2>/dev/null
[ $rc -ne 0 ] || fail "the job survived a rank killed mid-save"
[ "$(cat "$K/latest")" = step_00000005 ] || fail "latest moved off step_00000005: $(cat "$K/latest")"
[ -d "$K/step_00000010.tmp" ] || fail "the interrupted save left no step_00000010.tmp"
[ ! -e "$K/step_00000010" ] || fail "the interrupted save committed step_00000010"
"$BIN" ckpt verify "$K" >"$tmp/kill-verify.out" || { cat "$tmp/kill-verify.out"; fail "step 5 does not verify"; }
run kill-tmp 2 2 parallel.dp=2 checkpoint.resume="$K/step_00000010.tmp"
expect kill-tmp "never loaded"
run kill-resume 2 0 parallel.dp=2 parallel.zero=1 checkpoint.dir="$K" checkpoint.every=5 --stop-after 10
expect kill-resume "resumed from $K/step_00000005 at step 5"
expect kill-resume "removed 1 leftover partial checkpoint"
[ ! -e "$K/step_00000010.tmp" ] || fail "the leftover .tmp was not cleaned up"
[ "$(cat "$K/latest")" = step_00000010 ] || fail "latest is not step_00000010 after the resumed save"
run kill-ref 2 0 parallel.dp=2 parallel.zero=1 --stop-after 10
cmp -s <(fields "$tmp/kill-resume.jsonl") <(fields "$tmp/kill-ref.jsonl" | sed -n 6,10p) ||
  fail "the run resumed after the kill does not continue bit for bit"
echo "killed mid-save (rc $rc): latest stayed at step 5, loadable; the .tmp was ignored and removed"

# ---- 3b. a deleted shard ----
cp -r "$CK/step_00000010" "$tmp/noshard"
rm "$tmp/noshard/shard_00003.h5"
"$BIN" ckpt verify "$tmp/noshard" >"$tmp/noshard-verify.out" 2>&1
rc=$?
[ $rc -eq 1 ] && grep -q "shard_00003.h5: the shard file is missing" "$tmp/noshard-verify.out" ||
  { cat "$tmp/noshard-verify.out"; fail "verify of a deleted shard: rc $rc"; }
run noshard 4 2 "${L22[@]}" checkpoint.resume="$tmp/noshard"
expect noshard "shard file $tmp/noshard/shard_00003.h5 named by the index is missing"
[ "$(grep -c "error:" "$tmp/noshard.out")" -eq 1 ] || fail "noshard: expected one error message"

# ---- 3c. another model shape ----
run shape 1 2 model.ffn_dim=120 checkpoint.init_from="$CK/step_00000010"
expect shape "tensor layers.0.ffn.w_gate.weight has global shape \[100, 64\] in the checkpoint, but the model's is \[120, 64\]"
run shape-resume 1 2 model.norm_eps=1e-6 checkpoint.resume="$CK/step_00000010"
expect shape-resume "model.norm_eps is"

# ---- 4. init_from, long context, rotation, inspect ----
run init 4 0 "${L22[@]}" train.steps=0 checkpoint.init_from="$CK" --dump-params "$tmp/init"
expect init "initialised the weights from $CK/step_00000020 at step 20"
cmp -s "$tmp/init/params.bin" "$tmp/second/params.bin" || fail "init_from weights differ from the checkpoint's"
run init-long 2 0 parallel.tp=2 model.max_seq_len=64 train.seq_len=64 model.rope_theta=50000 \
  train.steps=2 checkpoint.init_from="$CK/step_00000010"
expect init-long "fresh optimizer and schedule"
[ "$(fields "$tmp/init-long.jsonl" | head -1 | grep -o '"lr":[^,]*')" = "$(fields "$tmp/ref.jsonl" | head -1 | grep -o '"lr":[^,]*')" ] ||
  fail "init_from did not start a fresh schedule"
run rotate 1 0 train.steps=5 checkpoint.dir="$tmp/rot" checkpoint.every=1 checkpoint.keep_last=2
[ "$(ls "$tmp/rot" | tr '\n' ' ')" = "latest step_00000004 step_00000005 " ] ||
  fail "keep_last=2 left: $(ls "$tmp/rot" | tr '\n' ' ')"
"$BIN" ckpt inspect "$CK" >"$tmp/inspect.out" || fail "inspect exited non-zero"
for want in "step: 20" "samples consumed: 160" "tokens consumed: 5120" \
  "layout: 4 ranks = tp 2 x dp 2, zero 1; 4 shard files" "  ffn_dim: 100" \
  "optim/v/layers.1.ffn.w_down.weight  *\[64, 100\] *float32 *25600 *2"; do
  grep -q -- "$want" "$tmp/inspect.out" || { cat "$tmp/inspect.out"; fail "inspect: no '$want'"; }
done
"$BIN" ckpt verify "$CK" >"$tmp/verify.out" || { cat "$tmp/verify.out"; fail "verify of a sound checkpoint"; }
"$BIN" ckpt verify "$tmp/nothing" >/dev/null 2>&1
[ $? -eq 2 ] || fail "verify of a missing directory should exit 2"

# ---- 3d, 3e and 5: need h5py ----
if [ $have_h5py -eq 0 ]; then
  echo "ckpt_e2e: h5py is missing: the byte-flip, format-version and h5py checks were skipped"
  exit 77
fi
cp -r "$CK/step_00000010" "$tmp/flip"
"$PY" "$HERE/ckpt_h5py.py" flip "$tmp/flip" model/layers.1.ffn.w_up.weight || fail "flip"
"$BIN" ckpt verify "$tmp/flip" >"$tmp/flip-verify.out" 2>&1
rc=$?
[ $rc -eq 1 ] && grep -q "checksum mismatch in tensor model/layers.1.ffn.w_up.weight" "$tmp/flip-verify.out" ||
  { cat "$tmp/flip-verify.out"; fail "verify of a flipped byte: rc $rc"; }
run flip 4 2 "${L22[@]}" checkpoint.resume="$tmp/flip"
expect flip "checksum mismatch in tensor model/layers.1.ffn.w_up.weight (file $tmp/flip/shard_0000"
cp -r "$CK/step_00000010" "$tmp/v2"
"$PY" "$HERE/ckpt_h5py.py" set-version "$tmp/v2" 2 || fail "set-version"
run v2 1 2 checkpoint.resume="$tmp/v2"
expect v2 "checkpoint format version 2 is not known"
"$BIN" ckpt verify "$tmp/v2" >/dev/null 2>&1 && fail "verify accepted format version 2"
run tp1 1 0 checkpoint.dir="$tmp/ck1" --stop-after 10
"$PY" "$HERE/ckpt_h5py.py" compare "$CK/step_00000010" "$tmp/ck1/step_00000010" "$tmp/first" ||
  fail "h5py: the tp=2 dp=2 checkpoint read through index.h5 does not match"
echo "ckpt_e2e: ok"
