#!/usr/bin/env bash
# The paper's configs (configs/paper): `difftrain plan` counts each scaling-study model within
# 0.5% of the size SPEC states and the 3B within 1% of SPEC's ~3.2B without embeddings; each
# transformer twin has exactly 6 d per layer fewer parameters (lambda vectors and subln gain)
# and twice the heads; every config fits 80 GiB GPUs at its layout; the 64K continuation fits
# only with activation recomputation (train.recompute, which its config sets): plan refuses it
# with exit 2 when recompute is turned off, and names train.recompute as the way out.
# usage: paper_configs.sh DIFFTRAIN_BIN CONFIG_DIR
set -u
BIN=${1:?usage}; CONFIGS=${2:?usage}
PY=/usr/bin/python3
tmp_err=$(mktemp)
trap 'rm -f "$tmp_err"' EXIT
fail() { echo "paper_configs: FAIL: $*" >&2; exit 1; }
plan() { "$BIN" plan "$CONFIGS/paper/$1.yaml" --device-mem 80GiB --json 2>/dev/null; }

for size in 830m:0.834e9 1.4b:1.413e9 2.8b:2.773e9 6.8b:6.853e9 13.1b:13.097e9 3b:3.2e9; do
  name=${size%%:*} stated=${size#*:}
  d=$(plan "diff-$name") || fail "diff-$name does not fit 80 GiB or does not plan"
  t=$(plan "transformer-$name") || fail "transformer-$name does not fit 80 GiB or does not plan"
  "$PY" - "$name" "$stated" "$d" "$t" <<'PY' || exit 1
import json, sys
name, stated, d, t = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
count = d["params_non_embedding"] if name == "3b" else d["params_total"]
bound = 0.01 if name == "3b" else 0.005
err = count / stated - 1
assert abs(err) <= bound, f"diff-{name}: {count} parameters, {err:+.2%} from {stated:.4g}"
assert d["fits"] is True and t["fits"] is True, (d["fits"], t["fits"])
print(f"diff-{name}: {count:,} parameters ({err:+.2%} from {stated:.4g}); "
      f"{d['memory_per_rank_bytes']['total'] / 2**30:.1f} GiB per GPU; twin {t['params_total']:,}")
PY
done

# the twin differs by 6 d per layer: lambda_q1/k1/q2/k2 (4 d) and the subln gain (2 d)
for pair in 830m:24:96 1.4b:24:128 2.8b:32:128 6.8b:32:128 13.1b:40:128 3b:28:128; do
  IFS=: read -r name L hd <<<"$pair"
  dd=$(plan "diff-$name" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["params_total"])')
  tt=$(plan "transformer-$name" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["params_total"])')
  [ $((dd - tt)) -eq $((6 * hd * L)) ] || fail "$name: diff - transformer = $((dd - tt)), expected $((6 * hd * L))"
done

"$BIN" plan "$CONFIGS/paper/diff-3b-64k.yaml" --device-mem 80GiB >/dev/null 2>&1 \
  || fail "diff-3b-64k: plan says it does not fit 80 GiB with train.recompute"
"$BIN" plan "$CONFIGS/paper/diff-3b-64k.yaml" --device-mem 80GiB train.recompute=false >/dev/null 2>"$tmp_err"
rc=$?
[ $rc -eq 2 ] || fail "diff-3b-64k: plan exited $rc without recompute, expected 2 (does not fit)"
grep -q "set train.recompute: true" "$tmp_err" || fail "diff-3b-64k: the refusal does not name train.recompute"
echo "paper_configs: ok"
