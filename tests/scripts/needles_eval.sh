#!/usr/bin/env bash
# `difftrain eval --task needles` end to end on the tiny config (README "Evaluation"):
#  (a) oracle: needles sets with C = 128 (N = 1 and N = 2, R = 1): 3 documents of each that the
#      tiny config is trained on (seq_len = C, 120 steps at lr 5e-3: some answers learnt, not all)
#      and 24 unseen ones of each, all four pairs in one call; eval with the hidden
#      --dump-queries FILE
#      (per query: set, doc, query, N, depth, answer, the 6 predicted ids, 0/1). An independent
#      Python check re-reads the answers files (json) and recomputes from the dumped predictions:
#      the query list (set, doc, N, depth, answer, in order), each query's correctness (all 6
#      predicted ids == the answer's digit bytes), and from those the counts and accuracies by N,
#      by depth bucket (min(4, floor(5 depth))) and overall, which must equal --out's exactly;
#      every predicted id must be a token id (0..256), and the queries must be neither all right
#      nor all wrong (else the check would be vacuous);
#  (b) a model that memorised one document (--samples 1, 100 steps at lr 3e-3 on it) scores
#      accuracy 1.0 on it; an untrained checkpoint (1 step at lr 1e-9) scores 0 on (a)'s sets
#      (6 digits right by chance: ~1e-6 per query);
#  (c) under mpirun: tp=2, dp=2 and tp=2 x dp=2 give exactly the dump of one rank (the same
#      predictions: the argmax is reduced over the vocabulary slices, the documents shared out);
#  (d) bad inputs exit 2 with a message: answers of another shard, seq_len < C, a malformed
#      answers line (named FILE:LINE), --answers without --task needles, unpaired files.
# usage: needles_eval.sh DIFFTRAIN_BIN CONFIG_DIR [MPIEXEC]
set -u
BIN=${1:?usage: needles_eval.sh DIFFTRAIN_BIN CONFIG_DIR [MPIEXEC]}
CONFIGS=${2:?usage: needles_eval.sh DIFFTRAIN_BIN CONFIG_DIR [MPIEXEC]}
MPIEXEC=${3:-mpirun}
PY=/usr/bin/python3
[ -x "$PY" ] || { echo "needles_eval: no $PY, skipped"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/difftrain-needles-eval-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "needles_eval: FAIL: $*" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
CFG="$CONFIGS/tiny.yaml"
C=128 # tiny.yaml's model.max_seq_len; N = 2 with R = 1 fits in 127 tokens
D="$tmp/d"
run() { # run NAME CMD...: stdout+stderr in $tmp/NAME.out, must succeed
  local name=$1
  shift
  "$@" >"$tmp/$name.out" 2>&1 || { cat "$tmp/$name.out"; fail "$name exited $?"; }
}
gen() { run "gen_$1" "$BIN" data needles --out "$D" --name "$1" --context $C "${@:2}"; }
gen n1 --samples 24 --needles 1 --queries 1 --seed 1
gen n2 --samples 24 --needles 2 --queries 1 --seed 2
gen m1 --samples 3 --needles 1 --queries 1 --seed 11
gen m2 --samples 3 --needles 2 --queries 1 --seed 12
gen one --samples 1 --needles 2 --queries 1 --seed 7
SETS=(--tokens "$D/n1_000000.bin" --answers "$D/n1_answers.jsonl"
      --tokens "$D/n2_000000.bin" --answers "$D/n2_answers.jsonl")
ALL=(--tokens "$D/m1_000000.bin" --answers "$D/m1_answers.jsonl"
     --tokens "$D/m2_000000.bin" --answers "$D/m2_answers.jsonl" "${SETS[@]}")
TR=(train.seq_len=$C train.val_every=0 "data.val=$D/n1_000000.bin" log.every=1000)

run train "$BIN" train "$CFG" "${TR[@]}" "data.train=$D/m*_000000.bin" train.steps=120 \
  optim.lr=5e-3 optim.min_lr=5e-4 optim.warmup_steps=5 "checkpoint.dir=$tmp/ck"
run train_mem "$BIN" train "$CFG" "${TR[@]}" "data.train=$D/one_000000.bin" train.steps=100 \
  optim.lr=3e-3 optim.min_lr=3e-4 optim.warmup_steps=5 "checkpoint.dir=$tmp/ckmem"
run train_fresh "$BIN" train "$CFG" "${TR[@]}" "data.train=$D/n*_000000.bin" train.steps=1 \
  optim.lr=1e-9 optim.min_lr=0 optim.warmup_steps=0 "checkpoint.dir=$tmp/ckfresh"

ev() { # ev NAME CKPT [args...]: eval alone, JSON in $tmp/NAME.json, dump in $tmp/NAME.tsv
  local name=$1 ck=$2
  shift 2
  run "$name" "$BIN" eval "$CFG" train.seq_len=$C --checkpoint "$ck" --task needles \
    --out "$tmp/$name.json" --dump-queries "$tmp/$name.tsv" "$@"
  grep -q "^needles: accuracy " "$tmp/$name.out" || fail "$name: no result line"
}

# ---- (a) the oracle ----
ev a "$tmp/ck" "${ALL[@]}"
"$PY" - "$tmp/a.json" "$tmp/a.tsv" "$D"/{m1,m2,n1,n2}_answers.jsonl <<'PY' ||
import json, math, sys
out, dump, files = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3:]
want = [] # (set, doc, query, N, depth, answer) from the answers files
for s, f in enumerate(files):
    for line in open(f):
        d = json.loads(line)
        for j, q in enumerate(d["query"]):
            want.append((s, d["doc"], j, d["needles"], q["depth"], q["answer"]))
rows = [l.rstrip("\n").split("\t") for l in open(dump)]
assert len(rows) == len(want) == 54, (len(rows), len(want))
by_n, by_d, allc = {}, {}, [0, 0]
for r, w in zip(rows, want):
    s, doc, j, n, depth, ans = int(r[0]), int(r[1]), int(r[2]), int(r[3]), float(r[4]), r[5]
    assert (s, doc, j, n, ans) == (w[0], w[1], w[2], w[3], w[5]) and abs(depth - w[4]) < 1e-9, (r, w)
    pred = [int(x) for x in r[6].split(",")]
    assert len(pred) == 6 and all(0 <= p <= 256 for p in pred), r
    ok = int(all(p == ord(ch) for p, ch in zip(pred, ans)))
    assert ok == int(r[7]), ("correctness", r)
    b = min(4, math.floor(w[4] * 5))
    for tab, k in ((by_n, str(n)), (by_d, "%.1f-%.1f" % (b / 5, (b + 1) / 5))):
        tab.setdefault(k, [0, 0])
        tab[k][0] += ok
        tab[k][1] += 1
    allc[0] += ok
    allc[1] += 1
assert out["task"] == "needles" and out["queries"] == allc[1] and out["correct"] == allc[0], out
assert out["accuracy"] == allc[0] / allc[1], out
assert 0 < allc[0] < allc[1], ("all right or all wrong: the oracle would check nothing", allc)
assert out["step"] == 120 and out["checkpoint"].endswith("step_00000120"), out
assert {k: v[1] for k, v in by_n.items()} == out["queries_by_needles"] == {"1": 27, "2": 27}, out
assert {k: v[0] / v[1] for k, v in by_n.items()} == out["by_needles"], out
keys = ["%.1f-%.1f" % (b / 5, (b + 1) / 5) for b in range(5)]
assert list(out["by_depth"]) == keys and list(out["queries_by_depth"]) == keys, out
for k in keys:
    c, t = by_d.get(k, [0, 0])
    assert out["queries_by_depth"][k] == t, (k, out)
    assert out["by_depth"][k] == (c / t if t else None), (k, out)
# the graded measures: answer digits right from the dumped predictions; the answer loss is a mean
# cross-entropy (between 0 and ln 257) whose per-N values average to the whole
hits = {"1": 0, "2": 0}
for r in rows:
    hits[r[3]] += sum(int(p) == ord(ch) for p, ch in zip(r[6].split(","), r[5]))
assert math.isclose(out["digit_accuracy"], sum(hits.values()) / (6 * allc[1]), rel_tol=1e-12), out
for k in hits:
    assert math.isclose(out["digit_accuracy_by_needles"][k], hits[k] / (6 * by_n[k][1]), rel_tol=1e-12), out
al, aln = out["answer_loss"], out["answer_loss_by_needles"]
assert 0 < al < math.log(257) and set(aln) == {"1", "2"}, out
assert math.isclose(al, sum(aln[k] * by_n[k][1] for k in aln) / allc[1], rel_tol=1e-9), out
print("oracle: %d queries, %d correct, %.3f of the digits right, answer loss %.3f"
      % (allc[1], allc[0], out["digit_accuracy"], al))
PY
  fail "(a) the oracle check"
grep -q "^  1  *27 " "$tmp/a.out" && grep -q "^  2  *27 " "$tmp/a.out" ||
  { cat "$tmp/a.out"; fail "(a) the table has no rows for N = 1 and 2 with 27 queries"; }

# ---- (b) a memorised document, and an untrained model ----
ev mem "$tmp/ckmem" --tokens "$D/one_000000.bin" --answers "$D/one_answers.jsonl"
ev fresh "$tmp/ckfresh" "${SETS[@]}"
"$PY" - "$tmp/mem.json" "$tmp/fresh.json" <<'PY' || { cat "$tmp/mem.out" "$tmp/fresh.out"; fail "(b)"; }
import json, sys
mem, fresh = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert mem["queries"] == 1 and mem["accuracy"] == 1.0, ("memorised", mem)
assert fresh["queries"] == 48 and fresh["correct"] == 0 and fresh["step"] == 1, ("untrained", fresh)
PY

# ---- (c) tp and dp ----
if command -v "$MPIEXEC" >/dev/null; then
  for lay in "2 parallel.tp=2" "2 parallel.dp=2" "4 parallel.tp=2 parallel.dp=2"; do
    set -- $lay
    np=$1
    shift
    run "mpi_$np$*" timeout 120 "$MPIEXEC" --oversubscribe --bind-to none -np "$np" "$BIN" eval \
      "$CFG" train.seq_len=$C "$@" --checkpoint "$tmp/ck" --task needles "${ALL[@]}" \
      --out "$tmp/mpi.json" --dump-queries "$tmp/mpi.tsv"
    # exact: the same argmax on every rank layout (no near-ties among these few hundred digits)
    cmp -s "$tmp/a.tsv" "$tmp/mpi.tsv" || { diff "$tmp/a.tsv" "$tmp/mpi.tsv" | head; fail "(c) $* predictions differ"; }
    # the counts exactly; the answer loss (a sum of fp32 cross-entropies, whose vocab-parallel
    # log-sum-exp adds in another order) to 1e-6 relative
    "$PY" - "$tmp/a.json" "$tmp/mpi.json" <<'PY' || fail "(c) $* --out differs"
import json, math, sys
a, b = (json.load(open(f)) for f in sys.argv[1:])
for d in (a, b):
    d.pop("data")
la, lb = a.pop("answer_loss"), b.pop("answer_loss")
na, nb = a.pop("answer_loss_by_needles"), b.pop("answer_loss_by_needles")
assert a == b, (a, b)
assert math.isclose(la, lb, rel_tol=1e-6), (la, lb)
assert na.keys() == nb.keys() and all(math.isclose(na[k], nb[k], rel_tol=1e-6) for k in na), (na, nb)
PY
  done
else
  echo "needles_eval: no $MPIEXEC: (c) skipped"
fi

# ---- (d) bad inputs ----
bad() { # bad WHAT PATTERN ARGS...: exit 2, the message matches PATTERN
  local what=$1 pat=$2
  shift 2
  "$BIN" eval "$CFG" --checkpoint "$tmp/ck" "$@" >"$tmp/bad.out" 2>&1
  local rc=$?
  [ $rc -eq 2 ] || { cat "$tmp/bad.out"; fail "(d) $what: exit $rc, expected 2"; }
  grep -q -- "$pat" "$tmp/bad.out" || { cat "$tmp/bad.out"; fail "(d) $what: no '$pat' in the message"; }
}
bad "another shard" "do not match" train.seq_len=$C --task needles --tokens "$D/n2_000000.bin" \
  --answers "$D/n1_answers.jsonl"
bad "another size" "are these the shard and answers" train.seq_len=$C --task needles \
  --tokens "$D/one_000000.bin" --answers "$D/n1_answers.jsonl"
bad "seq_len < C" "set train.seq_len=128" train.seq_len=64 --task needles \
  --tokens "$D/n1_000000.bin" --answers "$D/n1_answers.jsonl"
sed '3s/"needles": 1,/"needles":1,/' "$D/n1_answers.jsonl" >"$tmp/broken.jsonl"
bad "malformed line" "broken.jsonl:3:" train.seq_len=$C --task needles \
  --tokens "$D/n1_000000.bin" --answers "$tmp/broken.jsonl"
sed '5s/"depth": \([0-9.]*\)}]}$/"depth": 0.999999}]}/' "$D/n1_answers.jsonl" >"$tmp/broken.jsonl"
bad "query depth not its needle's" "broken.jsonl:5:" train.seq_len=$C --task needles \
  --tokens "$D/n1_000000.bin" --answers "$tmp/broken.jsonl"
bad "--answers without the task" "applies to --task needles" --tokens "$D/n1_000000.bin" \
  --answers "$D/n1_answers.jsonl"
bad "unpaired" "pairs of --tokens" train.seq_len=$C --task needles --tokens "$D/n1_000000.bin" \
  --tokens "$D/n2_000000.bin" --answers "$D/n1_answers.jsonl"
bad "unknown task" "expected loss or needles" --task mmlu
echo "needles_eval: OK"
