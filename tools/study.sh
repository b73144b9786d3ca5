#!/usr/bin/env bash
# The small CPU study of issue 8: DIFF, its baselines and the ablations trained on the same data
# (English text from Debian's `fortunes` mixed with multi-needle retrieval documents whose
# haystack is fortune text), then validation loss on held-out text and needle accuracy by number
# of needles on held-out documents. Writes docs/study/ (metrics, eval JSON, plots) and prints a
# Markdown table. Meant to run on a 2-core CPU in well under an hour.
#
#   bash tools/study.sh [OUTDIR (default docs/study)]
# Environment: STUDY_STEPS (default 500), STUDY_THREADS (default nproc).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DT=${DIFFTRAIN_BIN:-$ROOT/build/difftrain}
OUT=$(mkdir -p "${1:-$ROOT/docs/study}" && cd "${1:-$ROOT/docs/study}" && pwd)
STEPS=${STUDY_STEPS:-500}
export OMP_NUM_THREADS=${STUDY_THREADS:-$(nproc)}
PY=/usr/bin/python3
work=$(mktemp -d "${TMPDIR:-/tmp}/difftrain-study-XXXXXX")
trap 'rm -rf "$work"' EXIT
C=256 # context of a needle document = the training sequence length

# ---- data: fortune text (train/val) and needle documents with fortune haystacks
corpus=()
for f in /usr/share/games/fortunes/*; do
  case "$f" in *.dat|*.u8) continue ;; esac
  [ -f "$f" ] && [ ! -L "$f" ] && corpus+=("$f")
done
"$DT" data prepare --out "$work/text" --name text --split-on % --val-fraction 0.05 "${corpus[@]}" >/dev/null
hay=/usr/share/games/fortunes/literature
for n in 1 2 4; do
  "$DT" data needles --out "$work/needles" --name train_n$n --samples 2000 --needles $n --queries 1 \
    --context $C --seed $((100 + n)) --haystack "$hay" >/dev/null
  "$DT" data needles --out "$work/needles" --name eval_n$n --samples 100 --needles $n --queries 1 \
    --context $C --seed $((200 + n)) --haystack "$hay" >/dev/null
done

# ---- the models: same width, depth, FFN, data, schedule and seed
declare -A RUNS=(
  [diff]="model.arch=diff model.n_heads=3 model.n_kv_heads=3"
  [transformer_2x]="model.arch=transformer model.n_heads=6 model.n_kv_heads=6"
  [transformer_1x]="model.arch=transformer model.n_heads=3 model.n_kv_heads=3"
  [diff_lambda_1]="model.arch=diff model.n_heads=3 model.n_kv_heads=3 model.lambda=1.0"
  [diff_lambda_init_0.8]="model.arch=diff model.n_heads=3 model.n_kv_heads=3 model.lambda_init=0.8"
  [diff_no_subln]="model.arch=diff model.n_heads=3 model.n_kv_heads=3 model.subln=false"
  [diff_subln_scalar]="model.arch=diff model.n_heads=3 model.n_kv_heads=3 model.subln=scalar"
)
ORDER=(diff transformer_2x transformer_1x diff_lambda_1 diff_lambda_init_0.8 diff_no_subln diff_subln_scalar)
common=(model.vocab_size=257 model.d_model=192 model.n_layers=4 model.ffn_dim=512 model.max_seq_len=$C
        train.seq_len=$C train.micro_batch=8 train.global_batch=8 train.steps=$STEPS train.seed=1337
        train.val_every=0 optim.lr=2e-3 optim.min_lr=2e-4 optim.warmup_steps=30 optim.decay=cosine
        "data.train=[$work/text/text_train_000000.bin, $work/needles/train_n1_000000.bin, $work/needles/train_n2_000000.bin, $work/needles/train_n4_000000.bin]"
        "data.val=$work/text/text_val_000000.bin" log.every=50)
for name in "${ORDER[@]}"; do
  read -r -a over <<<"${RUNS[$name]}"
  echo "study: training $name (${RUNS[$name]})"
  "$DT" train "$ROOT/configs/demo.yaml" "${common[@]}" "${over[@]}" "checkpoint.dir=$work/ck_$name" \
    "log.metrics=$OUT/$name.jsonl" >"$OUT/$name.train.log" 2>&1
  "$DT" eval "$ROOT/configs/demo.yaml" "${common[@]}" "${over[@]}" --checkpoint "$work/ck_$name" \
    --max-batches 64 --out "$OUT/$name.val.json" >/dev/null
  "$DT" eval "$ROOT/configs/demo.yaml" "${common[@]}" "${over[@]}" --checkpoint "$work/ck_$name" \
    --task needles --tokens "$work/needles/eval_n1_000000.bin" --answers "$work/needles/eval_n1_answers.jsonl" \
    --tokens "$work/needles/eval_n2_000000.bin" --answers "$work/needles/eval_n2_answers.jsonl" \
    --tokens "$work/needles/eval_n4_000000.bin" --answers "$work/needles/eval_n4_answers.jsonl" \
    --out "$OUT/$name.needles.json" >/dev/null
done

labels=$(IFS=,; echo "${ORDER[*]}")
"$PY" "$ROOT/tools/plot_loss.py" $(for n in "${ORDER[@]}"; do echo "$OUT/$n.jsonl"; done) --labels "$labels" --out "$OUT/loss.png" >/dev/null
"$PY" "$ROOT/tools/plot_needles.py" $(for n in "${ORDER[@]}"; do echo "$OUT/$n.needles.json"; done) --labels "$labels" --out "$OUT/needles.png" >/dev/null
"$PY" - "$OUT" "${ORDER[@]}" <<'PY'
import json, sys
out, names = sys.argv[1], sys.argv[2:]
print("| run | parameters | val loss (nats/byte) | needles N=1 | N=2 | N=4 | all |")
print("|---|---|---|---|---|---|---|")
for n in names:
    v = json.load(open(f"{out}/{n}.val.json"))
    nd = json.load(open(f"{out}/{n}.needles.json"))
    params = next(l for l in open(f"{out}/{n}.train.log") if l.startswith("difftrain: ")).split()[2]
    by = nd["by_needles"]
    print(f"| {n} | {int(params):,} | {v['loss']:.4f} | {by.get('1', 0):.2f} | {by.get('2', 0):.2f} | "
          f"{by.get('4', 0):.2f} | {nd['accuracy']:.2f} ({nd['correct']}/{nd['queries']}) |")
PY
