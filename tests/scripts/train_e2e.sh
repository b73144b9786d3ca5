#!/usr/bin/env bash
# End-to-end runs of `difftrain train` on generated text:
# - the tiny config trains, logs the metrics DESIGN names (JSON Lines, 1-based steps, val_loss on
#   validation steps) and its loss falls;
# - the same seed gives bit-identical losses, another seed different ones;
# - gradient accumulation: 2 micro-batches of 4 give the losses of 1 micro-batch of 8;
# - the run also works under `mpirun -np 1`;
# - a config without data.train exits 2 naming the key.
#
# usage: train_e2e.sh DIFFTRAIN_BIN CONFIG_DIR
set -u
BIN=${1:?usage: train_e2e.sh DIFFTRAIN_BIN CONFIG_DIR}
CONFIGS=${2:?usage: train_e2e.sh DIFFTRAIN_BIN CONFIG_DIR}
PY=/usr/bin/python3
tmp=$(mktemp -d "${TMPDIR:-/tmp}/difftrain-train-e2e-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "train_e2e: FAIL: $*" >&2; exit 1; }

bash "$(dirname "$0")/make_corpus.sh" >"$tmp/corpus.txt"
"$BIN" data prepare --out "$tmp/data" --name tiny --split-on % --val-fraction 0.1 "$tmp/corpus.txt" \
  >"$tmp/prepare.log" 2>&1 || { cat "$tmp/prepare.log"; fail "data prepare"; }

run() { # run NAME [overrides...]: trains the tiny config, metrics in $tmp/NAME.jsonl
  local name=$1
  shift
  "$BIN" train "$CONFIGS/tiny.yaml" "data.train=$tmp/data/tiny_train_*.bin" \
    "data.val=$tmp/data/tiny_val_000000.bin" "log.metrics=$tmp/$name.jsonl" "$@" \
    >"$tmp/$name.out" 2>"$tmp/$name.err"
  local rc=$?
  [ $rc -eq 0 ] || { cat "$tmp/$name.out" "$tmp/$name.err"; fail "train $name exited $rc"; }
}

run base train.steps=30 log.every=1 train.val_every=10
"$PY" - "$tmp/base.jsonl" <<'PY' || fail "metrics of the base run"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["step"] for r in rows] == list(range(1, 31)), [r["step"] for r in rows]
for r in rows:
    for k in ("loss", "lr", "grad_norm", "tokens_per_s"):
        assert isinstance(r[k], float) and r[k] == r[k], (k, r)
val = [r["step"] for r in rows if "val_loss" in r]
assert val == [10, 20, 30], val
first, last = rows[0]["loss"], rows[-1]["loss"]
assert last < first - 1.0, (first, last)  # ln(257) = 5.55 at the start; the text is very regular
print(f"loss {first:.3f} -> {last:.3f}, val loss {rows[-1]['val_loss']:.3f}")
PY
grep -q "^step 30/30 | loss" "$tmp/base.out" || fail "no log line for step 30"
grep -q "arch: diff" "$tmp/base.out" || fail "the resolved config is not printed"

losses() { "$PY" -c 'import json,sys; print(" ".join(repr(json.loads(l)["loss"]) for l in open(sys.argv[1])))' "$1"; }
run again train.steps=30 log.every=1 train.val_every=10
[ "$(losses "$tmp/base.jsonl")" = "$(losses "$tmp/again.jsonl")" ] || fail "same seed, different losses"
run seed2 train.steps=30 log.every=1 train.val_every=10 train.seed=7
[ "$(losses "$tmp/base.jsonl")" != "$(losses "$tmp/seed2.jsonl")" ] || fail "another seed, same losses"

# gradient accumulation: the same 8 sequences per step as 2 x 4 or 1 x 8
run accum train.steps=5 log.every=1 train.micro_batch=4 train.global_batch=8
run whole train.steps=5 log.every=1 train.micro_batch=8 train.global_batch=8
"$PY" - "$tmp/accum.jsonl" "$tmp/whole.jsonl" <<'PY' || fail "gradient accumulation changes the losses"
import json, sys
a = [json.loads(l)["loss"] for l in open(sys.argv[1])]
b = [json.loads(l)["loss"] for l in open(sys.argv[2])]
# the same math in another summation order: fp32 rounding only, 1e-5 relative
assert len(a) == len(b) == 5 and all(abs(x - y) <= 1e-5 * abs(y) for x, y in zip(a, b)), (a, b)
PY

# one rank under mpirun
if command -v mpirun >/dev/null; then
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    mpirun --oversubscribe -np 1 "$BIN" train "$CONFIGS/tiny.yaml" "data.train=$tmp/data/tiny_train_*.bin" \
    "data.val=$tmp/data/tiny_val_000000.bin" train.steps=3 >"$tmp/mpirun.out" 2>&1 \
    || { cat "$tmp/mpirun.out"; fail "mpirun -np 1"; }
  grep -q "^step 3/3 | loss" "$tmp/mpirun.out" || fail "mpirun -np 1 printed no last step"
fi

# no training data: exit 2 naming the key
"$BIN" train "$CONFIGS/tiny.yaml" data.train=[] >"$tmp/nodata.out" 2>&1
rc=$?
[ $rc -eq 2 ] || { cat "$tmp/nodata.out"; fail "no data.train exited $rc, expected 2"; }
grep -q "data.train" "$tmp/nodata.out" || { cat "$tmp/nodata.out"; fail "the error does not name data.train"; }
echo "train_e2e: ok"
