#!/usr/bin/env bash
# `difftrain analyze` end to end on the tiny config (README "Analysis"): needle documents with
# C = 128 (N = 1, R = 1), the tiny config trained 6 steps on them for arch diff (without and with
# GQA), diff_v2 (GQA) and transformer (the matched baseline: 4 heads, without and with GQA), then
# analyze on 3 of the 4 documents, and an
# independent Python check (/usr/bin/python3 with numpy and h5py; skipped without them) of:
#  - the JSON: every layer and head with every statistic (branch ones for diff kinds only), the
#    document, query, logit and hidden-state counts;
#  - consistency: span + signed rest mass == the sum of the effective map (1 - lambda for diff,
#    1 - the head's mean lambda for diff_v2 (linear, so the mean over queries commutes), 1 for
#    the baseline); |rest| >= signed rest; top1 >= top100 >= median >= 0; ranges: entropy in
#    [0, log C], Gini in [0, 1], cosine in [-1, 1], KL >= 0;
#  - lambda of diff V1 per layer == exp(lq1.lk1) - exp(lq2.lk2) + lambda_init(l) from the
#    checkpoint's index.h5 (tolerance 1e-6: an fp32 computation of O(1) values);
#  - an oracle for layer 0, recomputed in numpy (float64) from the checkpoint's weights and the
#    shard's tokens alone: x = embedding rows, RMSNorm, q/k projections, GPT-J RoPE, causal
#    softmax with scale 1/sqrt(d) and SPEC's GQA pairing, then every per-head statistic, the
#    logit magnitudes and the hidden-state magnitudes (tolerance in the Python below);
#  - bad inputs exit 2 with a message.
# usage: analyze_e2e.sh DIFFTRAIN_BIN CONFIG_DIR
set -u
BIN=${1:?usage: analyze_e2e.sh DIFFTRAIN_BIN CONFIG_DIR}
CONFIGS=${2:?usage: analyze_e2e.sh DIFFTRAIN_BIN CONFIG_DIR}
PY=/usr/bin/python3
[ -x "$PY" ] && "$PY" -c 'import numpy, h5py' 2>/dev/null ||
  { echo "analyze_e2e: no $PY with numpy and h5py, skipped"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/difftrain-analyze-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "analyze_e2e: FAIL: $*" >&2; exit 1; }
export OMP_NUM_THREADS=1
CFG="$CONFIGS/tiny.yaml"
C=128
D="$tmp/d"
run() { # run NAME CMD...: stdout+stderr in $tmp/NAME.out, must succeed
  local name=$1
  shift
  "$@" >"$tmp/$name.out" 2>&1 || { local rc=$?; cat "$tmp/$name.out"; fail "$name exited $rc"; }
}
run gen "$BIN" data needles --out "$D" --name p --context $C --samples 4 --needles 1 \
  --queries 1 --seed 5
DATA=(--tokens "$D/p_000000.bin" --answers "$D/p_answers.jsonl")
# tag:arch:n_heads:n_kv_heads; the gqa ones pair 2 DIFF heads (or 4 heads) with fewer kv heads
for spec in diff:diff:2:2 gqa:diff:2:1 v2:diff_v2:2:1 base:transformer:4:4 basegqa:transformer:4:2; do
  IFS=: read -r tag arch nh nkv <<<"$spec"
  A=(model.arch=$arch model.n_heads=$nh model.n_kv_heads=$nkv)
  run "train_$tag" "$BIN" train "$CFG" "${A[@]}" train.seq_len=$C train.val_every=0 \
    "data.val=$D/p_000000.bin" "data.train=$D/p_000000.bin" log.every=1000 train.steps=6 \
    optim.lr=3e-3 optim.warmup_steps=2 "checkpoint.dir=$tmp/ck_$tag"
  run "an_$tag" "$BIN" analyze "$CFG" "${A[@]}" --checkpoint "$tmp/ck_$tag" "${DATA[@]}" \
    --max-docs 3 --out "$tmp/$tag.json"
  grep -q "^analyze: 3 documents, 3 queries" "$tmp/an_$tag.out" ||
    { cat "$tmp/an_$tag.out"; fail "$tag: no summary line"; }
  "$PY" - "$tmp/$tag.json" "$tmp/ck_$tag/step_00000006" "$D/p_000000.bin" \
    "$D/p_answers.jsonl" <<'PY' || fail "$tag: the check of the JSON"
import json, math, struct, sys
import h5py
import numpy as np
out, ck, shard, answers = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4]
arch, C, L, DM = out["arch"], 128, 2, 64
H = out["n_heads"]
Hq = H if arch == "transformer" else 2 * H
d = DM // Hq
diffk = arch != "transformer"
assert out["docs"] == 3 and out["queries"] == 3 and out["step"] == 6, out
assert H == (4 if arch == "transformer" else 2), out
assert out["context"] == C and len(out["layers"]) == L, out
keys = ["span_mass", "rest_abs_mass", "rest_signed_mass", "entropy", "gini", "sink_mass"]
if diffk:
    keys += ["lambda", "cos_relevant", "cos_irrelevant", "kl_relevant", "kl_irrelevant"]
f = h5py.File(ck + "/index.h5", "r")
W = lambda n: np.asarray(f["model/" + n][...], dtype=np.float64)
for l, lay in enumerate(out["layers"]):
    assert lay["layer"] == l and [h["head"] for h in lay["heads"]] == list(range(H)), lay
    for h in lay["heads"]:
        assert sorted(h) == sorted(keys + ["head"]), h
        if arch == "diff":
            total = 1 - lay["lambda"]
        elif arch == "diff_v2":
            assert h["lambda"] == lay["lambda"][h["head"]] and 0 < h["lambda"] < 1, (h, lay)
            total = 1 - h["lambda"]
        else:
            total = 1
        # the map's sum: rounding of a few hundred double terms, ~1e-15
        assert abs(h["span_mass"] + h["rest_signed_mass"] - total) < 1e-9, (l, h, total)
        assert h["rest_abs_mass"] >= abs(h["rest_signed_mass"]) - 1e-12, h
        if not diffk:
            assert abs(h["rest_abs_mass"] - h["rest_signed_mass"]) < 1e-12, h
        assert 0 <= h["entropy"] <= math.log(C) and 0 <= h["gini"] <= 1, h
        if diffk:
            assert -1 <= h["cos_relevant"] <= 1 and -1 <= h["cos_irrelevant"] <= 1, h
            assert h["kl_relevant"] >= 0 and h["kl_irrelevant"] >= 0, h
    for k, n in (("logits", 3 * Hq * C * (C + 1) // 2), ("hidden", 3 * C * DM)):
        m = lay[k]
        assert m["count"] == n and m["top1"] >= m["top100"] >= m["median"] >= 0, (k, m)
    if arch == "diff":
        p = "layers.%d.attn." % l
        lam = (math.exp(W(p + "lambda_q1") @ W(p + "lambda_k1")) -
               math.exp(W(p + "lambda_q2") @ W(p + "lambda_k2")) + 0.8 - 0.6 * math.exp(-0.3 * l))
        assert abs(lay["lambda"] - lam) < 1e-6, ("lambda", l, lay["lambda"], lam)
    else:
        assert (lay["lambda"] is None) == (arch == "transformer"), lay["lambda"]

# ---- the layer-0 oracle, from the weights and the tokens alone ----
raw = open(shard, "rb").read()
hdr = struct.unpack("<256i", raw[:1024])
toks = np.frombuffer(raw[1024:], dtype=np.uint16 if hdr[0] == 20240520 else np.uint32)
E = W("tok_embeddings.weight")
p = "layers.0.attn."
Wq, Wk, g = W(p + "q_proj.weight"), W(p + "k_proj.weight"), W("layers.0.attention_norm.weight")
Hk = Wk.shape[0] // d
inv = 10000.0 ** (-2.0 * np.arange(d // 2) / d)
def rope(x):  # (C, heads, d), GPT-J interleaved pairs
    a = np.arange(C)[:, None, None] * inv[None, None, :]
    c, s, e, o = np.cos(a), np.sin(a), x[..., 0::2], x[..., 1::2]
    y = np.empty_like(x)
    y[..., 0::2], y[..., 1::2] = e * c - o * s, o * c + e * s
    return y
def kv(j):  # SPEC 2, 4, 5
    if arch == "diff": return 2 * ((j // 2) // (H // (Hk // 2))) + j % 2
    return j // (Hq // Hk)
def gini(a):
    c = np.sort(np.abs(a)); n = len(c)
    return 1 - 2 * np.sum(c / c.sum() * (n - np.arange(1, n + 1) + 0.5) / n)
def ent(a):
    q = np.abs(a) / np.abs(a).sum(); q = q[q > 0]
    return -np.sum(q * np.log(q))
def kl(a, b):
    a, b = a / a.sum(), b / b.sum()
    return np.sum(a * np.log(a / b))
cos = lambda a, b: a @ b / math.sqrt((a @ a) * (b @ b))
acc, scores, hid = {}, [], []
for line in list(open(answers))[:3]:
    doc = json.loads(line)
    t = toks[doc["offset"]:doc["offset"] + C].astype(np.int64)
    x = E[t]
    hid.append(np.abs(x).ravel())
    xn = x / np.sqrt(np.mean(x * x, axis=1, keepdims=True) + 1e-5) * g
    q, k = rope((xn @ Wq.T).reshape(C, Hq, d)), rope((xn @ Wk.T).reshape(C, Hk, d))
    S = np.stack([q[:, j] @ k[:, kv(j)].T / math.sqrt(d) for j in range(Hq)])  # (Hq, C, C)
    scores.append(np.abs(S[:, np.tril_indices(C)[0], np.tril_indices(C)[1]]).ravel())
    for qr in doc["query"]:
        nd = doc["needle"][qr["needle"]]
        # the answers file's offsets count from the shard's start
        lo = nd["offset"] - doc["offset"] + len("The magic number of ") + len(nd["key"]) + len(" is ")
        assert bytes(int(v) for v in t[lo:lo + 6]).decode() == nd["value"], "value span"
        qp = qr["offset"] - doc["offset"] - 1
        n = qp + 1
        P = np.exp(S[:, qp, :n] - S[:, qp, :n].max(axis=1, keepdims=True))
        P /= P.sum(axis=1, keepdims=True)
        span = np.zeros(n, bool); span[lo:lo + 6] = True
        for h in range(H):
            if arch == "transformer":
                A, lam = P[h], None
            else:
                lam = (float(out["layers"][0]["lambda"]) if arch == "diff" else
                       1 / (1 + math.exp(-(xn[qp] @ W(p + "lambda_proj.weight")[h]))))
                A = P[2 * h] - lam * P[2 * h + 1]
            st = {"span_mass": A[span].sum(), "rest_abs_mass": np.abs(A[~span]).sum(),
                  "rest_signed_mass": A[~span].sum(), "entropy": ent(A), "gini": gini(A),
                  "sink_mass": A[0]}
            if diffk:
                p1, p2 = P[2 * h], P[2 * h + 1]
                st.update(lam=lam, cos_relevant=cos(p1[span], p2[span]),
                          cos_irrelevant=cos(p1[~span], p2[~span]),
                          kl_relevant=kl(p1[span], p2[span]), kl_irrelevant=kl(p1[~span], p2[~span]))
                st["lambda"] = st.pop("lam")
            for kk, v in st.items():
                acc.setdefault((h, kk), []).append(v)
# Tolerance: the C side computes q and k in fp32 (relative error ~1e-6 on O(1) values after
# the norm, projection and RoPE), so scores differ by ~1e-6 and the maps' entries relatively by
# ~1e-6; 2e-5 absolute + 1e-4 relative covers that with margin. A wrong pairing, scale, mask,
# span or formula changes these statistics by 1e-2 or more even at 6 steps of training.
close = lambda a, b: abs(a - b) <= 2e-5 + 1e-4 * abs(b)
bad = 0
for (h, kk), v in sorted(acc.items()):
    got, ref = out["layers"][0]["heads"][h][kk], float(np.mean(v))
    if not close(got, ref):
        print("layer 0 head %d %s: got %.10g, numpy %.10g" % (h, kk, got, ref)); bad += 1
for kk, allv in (("logits", np.concatenate(scores)), ("hidden", np.concatenate(hid))):
    s = np.sort(allv)[::-1]
    ref = {"top1": s[0], "top100": s[99], "median": float(np.median(s))}
    for key, r in ref.items():
        if not close(out["layers"][0][kk][key], r):
            print("layer 0 %s %s: got %.10g, numpy %.10g" % (kk, key, out["layers"][0][kk][key], r))
            bad += 1
assert bad == 0, "%d statistics differ from the numpy oracle" % bad
print("%s (%d kv heads): %d layers x %d heads consistent; layer 0 matches the numpy oracle"
      % (arch, Hk if diffk and arch == "diff_v2" or not diffk else Hk // 2, L, H))
PY
done

# ---- bad inputs ----
bad() { # bad WHAT PATTERN ARGS...: exit 2, the message matches PATTERN
  local what=$1 pat=$2
  shift 2
  "$BIN" analyze "$CFG" "$@" >"$tmp/bad.out" 2>&1
  local rc=$?
  [ $rc -eq 2 ] || { cat "$tmp/bad.out"; fail "$what: exit $rc, expected 2"; }
  grep -q -- "$pat" "$tmp/bad.out" || { cat "$tmp/bad.out"; fail "$what: no '$pat' in the message"; }
}
bad "no --out" "--out FILE.json is required" --checkpoint "$tmp/ck_diff" "${DATA[@]}"
bad "no --answers" "--answers FILE.jsonl is required" --checkpoint "$tmp/ck_diff" \
  --tokens "$D/p_000000.bin" --out "$tmp/x.json"
bad "unknown option" "unknown option '--task'" --task needles
bad "--max-docs 0" "expected a number >= 1" --checkpoint "$tmp/ck_diff" "${DATA[@]}" \
  --max-docs 0 --out "$tmp/x.json"
bad "C > max_seq_len" "model.max_seq_len is 64" model.max_seq_len=64 train.seq_len=64 \
  --checkpoint "$tmp/ck_diff" "${DATA[@]}" --out "$tmp/x.json"
bad "another arch's checkpoint" "" model.arch=transformer model.n_heads=4 model.n_kv_heads=4 \
  --checkpoint "$tmp/ck_diff" "${DATA[@]}" --out "$tmp/x.json"
bad "missing checkpoint" "" --checkpoint "$tmp/nope" "${DATA[@]}" --out "$tmp/x.json"
sed '2s/"needles": 1,/"needles":1,/' "$D/p_answers.jsonl" >"$tmp/broken.jsonl"
bad "malformed answers" "broken.jsonl:2:" --checkpoint "$tmp/ck_diff" --tokens "$D/p_000000.bin" \
  --answers "$tmp/broken.jsonl" --out "$tmp/x.json"
[ ! -e "$tmp/x.json" ] || fail "a failed run wrote --out"

# tools/plot_attention.py reads analyze's real output (all five runs on one figure)
if "$PY" -c 'import matplotlib' 2>/dev/null; then
  "$PY" "$(dirname "$0")/../../tools/plot_attention.py" "$tmp"/{diff,gqa,v2,base,basegqa}.json \
    --out "$tmp/attn.png" >"$tmp/plot.out" 2>&1 || { cat "$tmp/plot.out"; fail "plot_attention.py on the analyze output"; }
  [ "$(head -c 8 "$tmp/attn.png" | od -An -tx1 | tr -d ' ')" = 89504e470d0a1a0a ] || fail "attn.png is not a PNG"
fi
echo "analyze_e2e: OK"
