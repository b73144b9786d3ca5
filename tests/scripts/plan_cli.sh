#!/usr/bin/env bash
# End-to-end test of `difftrain plan`: the table and the JSON object for configs/tiny.yaml, the
# JSON's keys and its internal consistency, checked in Python against an independent count of
# the tiny model's parameters (DESIGN's tensor table) and the memory formulas of model/plan.h,
# the fit against --device-mem (exit 0 / 2 with a message), and the refusals: sizes that do not
# divide, bad sizes and bad usage (exit 2).
#
# usage: plan_cli.sh DIFFTRAIN_BIN CONFIG_DIR
set -u
BIN=${1:?usage: plan_cli.sh DIFFTRAIN_BIN CONFIG_DIR}
CONFIGS=${2:?usage: plan_cli.sh DIFFTRAIN_BIN CONFIG_DIR}
CFG=$CONFIGS/tiny.yaml
PY=/usr/bin/python3
tmp=$(mktemp -d "${TMPDIR:-/tmp}/difftrain-plan-cli-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

TEST_NAME=plan_cli
. "$(dirname "$0")/cli_lib.sh"

# ---- help, table ----
expect_rc 0 "$BIN" plan --help
grep -q -- "--device-mem" "$tmp/out" || fail "plan --help does not describe --device-mem"
expect_rc 0 "$BIN" plan "$CFG"
for word in "total" "embedding" "weights" "gradients" "optimizer" "activations" "FLOPs per token"; do
    grep -q "$word" "$tmp/out" || fail "the table has no '$word' line"
done
grep -q "not given" "$tmp/out" || fail "the table does not say that no device memory was given"

# ---- JSON: keys and values (python3 parses it: invalid JSON fails the test) ----
check_json() { # check_json FILE TP DP ZERO PRECISION DEVICE_BYTES|null FITS(true|false|null)
    [ -x "$PY" ] || { echo "plan_cli: $PY missing: JSON not checked" >&2; return 0; }
    "$PY" - "$@" <<'EOF' || fail "JSON check failed for $1"
import json, math, sys
path, tp, dp, zero, prec, dev, fits = sys.argv[1:8]
tp, dp, zero = int(tp), int(dp), int(zero)
text = open(path).read()
assert text.count("\n") == 1, "expected one JSON object on one line"
j = json.loads(text)
for k in ("params_total", "params_embedding", "params_non_embedding", "params_per_rank",
          "flops_per_token", "memory_per_rank_bytes", "layout", "device_mem_bytes", "fits"):
    assert k in j, "missing key " + k
m = j["memory_per_rank_bytes"]
for k in ("weights", "gradients", "optimizer", "activations", "total"):
    assert isinstance(m[k], int) and m[k] > 0, "memory_per_rank_bytes." + k
L = j["layout"]
for k in ("tp", "dp", "zero", "precision", "micro_batch", "seq_len"):
    assert k in L, "missing layout." + k
assert (L["tp"], L["dp"], L["zero"], L["precision"]) == (tp, dp, zero, prec), L
assert (L["micro_batch"], L["seq_len"]) == (4, 64), L

# configs/tiny.yaml: diff, vocab 257, D 64, 2 layers, 2 heads (d 16), 2 kv heads, ffn 176,
# untied, subln on (the default). DESIGN's tensor table, counted here independently:
V, D, Lyr, H, Hkv, F = 257, 64, 2, 2, 2, 176
d = D // (2 * H)
attn = 2*H*d*D + 2*Hkv*d*D + 2*Hkv*d*D + D*2*H*d
small = 2*D + 4*d + 2*d
total = Lyr * (attn + 3*D*F + small) + D + 2*V*D
assert j["params_total"] == total, (j["params_total"], total)
assert j["params_embedding"] == 2*V*D
assert j["params_non_embedding"] == total - 2*V*D
# the largest tp rank: heads and FFN divide, norms/lambdas/subln replicated, ceil(V/tp) rows
P = Lyr * (attn + 3*D*F) // tp + Lyr*small + D + 2 * (-(-V // tp)) * D
assert j["params_per_rank"] == P, (j["params_per_rank"], P)
S = -(-P // dp) if zero >= 1 else P
bf16 = prec == "bf16"
# bf16 adds the products' bf16 copies of the weight matrices (the projections and the untied
# output matrix, not the embedding table), each 2 bytes an element rounded up to 256 bytes
def pad(n): return -(-2 * n // 256) * 256
mats = [2*H*d*D, 2*Hkv*d*D, 2*Hkv*d*D, D*2*H*d, F*D, F*D, D*F]
copies = Lyr * sum(pad(x // tp) for x in mats) + pad(-(-V // tp) * D)
assert m["weights"] == 4*P + (copies if bf16 else 0), (m, copies)  # fp32 masters
assert m["gradients"] == 4*P + (4*S if zero == 2 else 0), m
assert m["optimizer"] == 8*S, m
assert m["total"] == m["weights"] + m["gradients"] + m["optimizer"] + m["activations"], m
assert j["flops_per_token"] > 6 * (total - 2*V*D), "FLOPs/token below 6 x non-embedding"
assert math.isclose(j["flops_per_step"], j["flops_per_token"] * 8 * 64, rel_tol=1e-12)
if dev == "null":
    assert j["device_mem_bytes"] is None and j["fits"] is None, j
else:
    assert j["device_mem_bytes"] == int(dev), j
    assert j["fits"] == (fits == "true"), j
    assert j["fits"] == (m["total"] <= int(dev)), j
EOF
}

expect_rc 0 "$BIN" plan "$CFG" --json
cp "$tmp/out" "$tmp/base.json"
check_json "$tmp/base.json" 1 1 0 fp32 null null

# a layout: tp 2 (vocab 257 splits 129 + 128), dp from the world, zero 1 and 2, bf16
expect_rc 0 "$BIN" plan "$CFG" parallel.tp=2 parallel.zero=1 --world 4 --json
check_json "$tmp/out" 2 2 1 fp32 null null
expect_rc 0 "$BIN" plan "$CFG" parallel.dp=2 parallel.zero=2 train.precision=bf16 --json
check_json "$tmp/out" 1 2 2 bf16 null null
# bf16 keeps the operands (norm outputs, q, k, v, attention output, gate, up, SwiGLU output) in 2
# bytes: the same tp 1 micro-batch needs fewer activation bytes than in fp32 (dp and zero do not
# change them)
if [ -x "$PY" ]; then
    "$PY" - "$tmp/base.json" "$tmp/out" <<'EOF2' || fail "bf16 activations are not below fp32's"
import json, sys
f, b = (json.load(open(p))["memory_per_rank_bytes"]["activations"] for p in sys.argv[1:3])
assert 0.5 * f < b < f, (f, b)
EOF2
fi

# ---- the fit ----
expect_rc 0 "$BIN" plan "$CFG" --json --device-mem 80GiB
check_json "$tmp/out" 1 1 0 fp32 85899345920 true
expect_rc 0 "$BIN" plan "$CFG" --device-mem=24G
grep -q "fits" "$tmp/out" || fail "the table does not say that the plan fits"
expect_rc 2 "$BIN" plan "$CFG" --device-mem 1KiB
grep -q "needs .* per rank, the device has" "$tmp/err" || fail "no 'does not fit' message"
expect_rc 2 "$BIN" plan "$CFG" --device-mem 1KiB --json
check_json "$tmp/out" 1 1 0 fp32 1024 false
# the exact boundary: total bytes fit, one byte less does not
if [ -x "$PY" ]; then
    need=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["memory_per_rank_bytes"]["total"])' "$tmp/base.json")
    expect_rc 0 "$BIN" plan "$CFG" --device-mem "$need"
    expect_rc 2 "$BIN" plan "$CFG" --device-mem "$((need - 1))"
fi

# ---- refusals ----
expect_rc 2 "$BIN" plan "$CFG" parallel.tp=3                       # heads 2, kv 2
grep -q "parallel.tp" "$tmp/err" || fail "tp=3 refusal does not name parallel.tp"
expect_rc 2 "$BIN" plan "$CFG" --world 4                           # dp 4: 8 % (4 x 4)
grep -q "train.global_batch" "$tmp/err" || fail "batch refusal does not name train.global_batch"
expect_rc 2 "$BIN" plan "$CFG" parallel.tp=2 --world 3             # 3 ranks over tp 2
expect_rc 2 "$BIN" plan "$CFG" parallel.dp=2 --world 4             # tp 1 x dp 2 != 4
expect_rc 2 "$BIN" plan "$CFG" train.global_batch=12 parallel.dp=2 # 12 % (4 x 2)
expect_rc 2 "$BIN" plan "$CFG" --device-mem 80XB
grep -q "80XB" "$tmp/err" || fail "a bad size is not named in the message"
expect_rc 2 "$BIN" plan "$CFG" --device-mem -1GiB
expect_rc 2 "$BIN" plan "$CFG" --device-mem
expect_rc 2 "$BIN" plan "$CFG" --world 0
expect_rc 2 "$BIN" plan "$CFG" --no-such-option
expect_rc 2 "$BIN" plan "$CFG" stray
expect_rc 2 "$BIN" plan "$CFG" model.no_such_key=1
expect_rc 2 "$BIN" plan "$tmp/missing.yaml"
expect_rc 2 "$BIN" plan

echo "plan_cli: ok"
