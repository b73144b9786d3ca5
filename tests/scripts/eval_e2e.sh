#!/usr/bin/env bash
# `difftrain eval` end to end on the tiny config (README "Evaluation"):
#  1. eval on a checkpoint reproduces the training loop's validation loss on the same samples:
#     train 6 steps with train.val_batches=NB (NB micro-batches cover the whole val shard, the last
#     one wrapping into the next epoch as validation reads it), then eval --max-batches NB: the
#     JSON Lines val_loss of step 6 and eval's loss agree to 1e-6 relative;
#  2. the same under mpirun at tp=2 (dp 1) and tp=2 x dp=2: 1e-5 relative;
#  3. default data (all of data.val, no wrap): tokens == samples * seq_len, samples computed here
#     from the shard's header;
#  4. --tokens: windows of seq_len+1 advancing by seq_len, every token but the first a target
#     once: tokens == n - 1 for n = 2T+1 and 2T+7; a shard of the first 4T+1 val tokens scores
#     exactly micro-batch 0 of data.val; and linearity: loss(first 2T+7 tokens) * (2T+6) ==
#     loss(first 2T+1) * 2T + loss(tokens 2T..2T+6) * 6 (the partial window, padded, counts only
#     its real targets and no padding leaks into them), and the same split of the whole val shard
#     into its full windows (default mode) plus its remainder;
#  5. bad inputs exit 2 with a message: no --checkpoint, a missing checkpoint, a checkpoint of
#     another shape or architecture, a missing --tokens file, a token outside the vocabulary.
# usage: eval_e2e.sh DIFFTRAIN_BIN CONFIG_DIR [MPIEXEC]
set -u
BIN=${1:?usage: eval_e2e.sh DIFFTRAIN_BIN CONFIG_DIR [MPIEXEC]}
CONFIGS=${2:?usage: eval_e2e.sh DIFFTRAIN_BIN CONFIG_DIR [MPIEXEC]}
MPIEXEC=${3:-mpirun}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
tmp=$(mktemp -d "${TMPDIR:-/tmp}/difftrain-eval-e2e-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "eval_e2e: FAIL: $*" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
CFG="$CONFIGS/tiny.yaml"
T=64 B=4 # tiny.yaml's train.seq_len and train.micro_batch

bash "$HERE/make_corpus.sh" >"$tmp/corpus.txt"
"$BIN" data prepare --out "$tmp/data" --name tiny --split-on % --val-fraction 0.1 "$tmp/corpus.txt" \
  >"$tmp/prepare.log" 2>&1 || { cat "$tmp/prepare.log"; fail "data prepare"; }
VAL="$tmp/data/tiny_val_000000.bin"
DATA=("data.train=$tmp/data/tiny_train_*.bin" "data.val=$VAL")

# the val shard's size from its llm.c header: samples N = (n-1)//T, micro-batches NB = ceil(N/B)
read -r NTOK NSAMP NB < <("$PY" - "$VAL" $T $B <<'PY'
import struct, sys
n = struct.unpack("<256i", open(sys.argv[1], "rb").read(1024))[2]
T, B = int(sys.argv[2]), int(sys.argv[3])
N = (n - 1) // T
print(n, N, -(-N // B))
PY
)
[ "${NB:-0}" -ge 2 ] || fail "the val shard is too small ($NTOK tokens)"

"$BIN" train "$CFG" "${DATA[@]}" train.steps=6 train.val_every=0 train.val_batches="$NB" \
  "checkpoint.dir=$tmp/ck" "log.metrics=$tmp/train.jsonl" >"$tmp/train.out" 2>&1 ||
  { cat "$tmp/train.out"; fail "train"; }

ev() { # ev NAME [args...]: eval alone, JSON in $tmp/NAME.json
  local name=$1
  shift
  "$BIN" eval "$CFG" "${DATA[@]}" --out "$tmp/$name.json" "$@" >"$tmp/$name.out" 2>&1 ||
    { cat "$tmp/$name.out"; fail "eval $name exited $?"; }
  grep -q "^eval: loss " "$tmp/$name.out" || { cat "$tmp/$name.out"; fail "eval $name: no result line"; }
}
evmpi() { # evmpi NAME NP [args...]
  local name=$1 np=$2
  shift 2
  timeout 120 "$MPIEXEC" --oversubscribe --bind-to none -np "$np" "$BIN" eval "$CFG" "${DATA[@]}" \
    --out "$tmp/$name.json" "$@" >"$tmp/$name.out" 2>&1 || { cat "$tmp/$name.out"; fail "mpirun eval $name"; }
}

# ---- 1, 2: the training loop's validation loss ----
ev same --checkpoint "$tmp/ck" --max-batches "$NB"
have_mpi=0
if command -v "$MPIEXEC" >/dev/null; then
  have_mpi=1
  evmpi tp2 2 --checkpoint "$tmp/ck" --max-batches "$NB" parallel.tp=2
  evmpi tp2dp2 4 --checkpoint "$tmp/ck/step_00000006" --max-batches "$NB" parallel.tp=2 parallel.dp=2
fi
"$PY" - "$tmp" "$NB" "$T" "$B" "$have_mpi" <<'PY' || fail "validation loss"
import json, sys
d, NB, T, B, have_mpi = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
rows = [json.loads(l) for l in open(f"{d}/train.jsonl")]
last = rows[-1]
assert last["step"] == 6 and "val_loss" in last, last
e = json.load(open(f"{d}/same.json"))
for k in ("loss", "perplexity", "tokens", "checkpoint", "step", "data"):
    assert k in e, (k, e)
assert e["step"] == 6 and e["checkpoint"].endswith("step_00000006"), e
assert e["tokens"] == NB * B * T, (e["tokens"], NB * B * T)
assert abs(e["perplexity"] - 2.718281828459045 ** e["loss"]) <= 1e-9 * e["perplexity"], e
# The same fp32 forward on the same samples in the same micro-batches: each micro-batch's mean is
# bit-identical; training averages the means, eval weights them by their (equal) target counts,
# both in double, and the JSON Lines value is printed with 9 significant digits: 1e-6 relative
# leaves room for that printing only.
ref = last["val_loss"]
assert abs(e["loss"] - ref) <= 1e-6 * abs(ref), (e["loss"], ref)
# Other layouts: vocab-parallel cross-entropy and TP all-reduces sum fp32 in another order; the
# tolerance parallel_layouts.sh uses for losses, 1e-5 relative.
if have_mpi:
    for name in ("tp2", "tp2dp2"):
        o = json.load(open(f"{d}/{name}.json"))
        assert o["tokens"] == e["tokens"], (name, o, e)
        assert abs(o["loss"] - ref) <= 1e-5 * abs(ref), (name, o["loss"], ref)
print(f"val_loss {ref:.9g}, eval {e['loss']:.9g} over {e['tokens']} tokens")
PY

# ---- 3: all of data.val, no wrap ----
ev all --checkpoint "$tmp/ck"
# ---- 4: --tokens ----
mkshard() { # mkshard OUT FIRST COUNT [TOKEN_OVERRIDE]: tokens [FIRST, FIRST+COUNT) of the val shard
  "$PY" - "$VAL" "$@" <<'PY' || fail "writing shard $1"
import struct, sys
src, out, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
raw = open(src, "rb").read()
n = struct.unpack("<256i", raw[:1024])[2]
toks = list(struct.unpack(f"<{n}H", raw[1024:1024 + 2 * n]))[first:first + count]
assert len(toks) == count
if len(sys.argv) > 5:
    toks[-1] = int(sys.argv[5])
hdr = [20240520, 1, count] + [0] * 253
open(out, "wb").write(struct.pack("<256i", *hdr) + struct.pack(f"<{count}H", *toks))
PY
}
mkshard "$tmp/w2.bin" 0 $((2 * T + 1))
mkshard "$tmp/w2r.bin" 0 $((2 * T + 7))
mkshard "$tmp/tail7.bin" $((2 * T)) 7
mkshard "$tmp/w4.bin" 0 $((4 * T + 1))
R=$((NTOK - 1 - NSAMP * T)) # targets of the val shard past its last full window
[ "$R" -ge 1 ] || fail "the val shard has no remainder to test ($NTOK tokens)"
mkshard "$tmp/valtail.bin" $((NSAMP * T)) $((R + 1))
for s in w2 w2r tail7 w4 valtail; do ev "$s" --checkpoint "$tmp/ck" --tokens "$tmp/$s.bin"; done
ev val --checkpoint "$tmp/ck" --tokens "$VAL"
ev mb0 --checkpoint "$tmp/ck" --max-batches 1
"$PY" - "$tmp" "$T" "$NSAMP" "$NTOK" <<'PY' || fail "--tokens"
import json, sys
d, T, N, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
j = {k: json.load(open(f"{d}/{k}.json")) for k in ("all", "w2", "w2r", "tail7", "w4", "valtail", "val", "mb0")}
assert j["all"]["tokens"] == N * T, (j["all"], N * T)           # every sample once, no wrap
assert j["w2"]["tokens"] == 2 * T and j["w2r"]["tokens"] == 2 * T + 6, (j["w2"], j["w2r"])
assert j["tail7"]["tokens"] == 6 and j["val"]["tokens"] == n - 1, (j["tail7"], j["val"])
assert j["w2"]["data"].endswith("w2.bin"), j["w2"]
# first 4T+1 tokens = the first 4 samples of data.val = its micro-batch 0: the same forward
assert j["w4"]["tokens"] == j["mb0"]["tokens"] == 4 * T
assert abs(j["w4"]["loss"] - j["mb0"]["loss"]) <= 1e-6 * j["mb0"]["loss"], (j["w4"], j["mb0"])
# Linearity: the per-target losses of a split add up (causal attention: padding after a target
# never changes it). Each micro-batch's fp32 mean rounds differently in another grouping: 1e-5.
def lin(whole, parts):
    s = sum(j[p]["loss"] * j[p]["tokens"] for p in parts)
    c = sum(j[p]["tokens"] for p in parts)
    assert c == j[whole]["tokens"], (whole, parts, c)
    assert abs(s / c - j[whole]["loss"]) <= 1e-5 * j[whole]["loss"], (whole, s / c, j[whole]["loss"])
lin("w2r", ["w2", "tail7"])
lin("val", ["all", "valtail"])
print(f"--tokens: {j['val']['tokens']} targets, loss {j['val']['loss']:.6f}")
PY

# ---- 5: bad inputs exit 2 with a message ----
bad() { # bad NAME PATTERN [args...]
  local name=$1 pat=$2
  shift 2
  "$BIN" eval "$CFG" "${DATA[@]}" "$@" >"$tmp/$name.out" 2>&1
  local rc=$?
  [ $rc -eq 2 ] || { cat "$tmp/$name.out"; fail "$name exited $rc, expected 2"; }
  grep -q -- "$pat" "$tmp/$name.out" || { cat "$tmp/$name.out"; fail "$name: no '$pat' in the message"; }
}
bad nockpt "--checkpoint DIR is required"
bad missing "not a checkpoint" --checkpoint "$tmp/nowhere"
bad shape "d_model\|shape" --checkpoint "$tmp/ck" model.d_model=32
bad arch "model.arch\|does not exist" --checkpoint "$tmp/ck" model.arch=transformer
bad notokens "$tmp/none.bin" --checkpoint "$tmp/ck" --tokens "$tmp/none.bin"
mkshard "$tmp/oov.bin" 0 20 300
bad oov "outside the vocabulary" --checkpoint "$tmp/ck" --tokens "$tmp/oov.bin"
bad noval "data.val" --checkpoint "$tmp/ck" data.val=[]
echo "eval_e2e: ok"
