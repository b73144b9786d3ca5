#!/usr/bin/env bash
# The small CPU study of issue 8: DIFF, its baselines and the ablations trained on the same data
# (English text from Debian's `fortunes` mixed with multi-needle retrieval documents whose
# haystack is fortune text), each with several seeds, then validation loss on held-out text and,
# on held-out needle documents, exact-match accuracy, the fraction of answer digits right and the
# answer loss (cross-entropy of the answer digits), by number of needles. Writes docs/study/
# (metrics, eval JSON, plots) and prints a Markdown table of the mean and spread over seeds.
# About 3 minutes per run on a 2-core CPU: the default two seeds (14 runs) take about 45 minutes;
# docs/study.md used three (STUDY_SEEDS="1337 1338 1339", about 67 minutes).
#
#   bash tools/study.sh [OUTDIR (default docs/study)]
# Environment: STUDY_STEPS (default 400), STUDY_SEEDS (default "1337 1338"),
# STUDY_THREADS (default nproc).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DT=${DIFFTRAIN_BIN:-$ROOT/build/difftrain}
OUT=$(mkdir -p "${1:-$ROOT/docs/study}" && cd "${1:-$ROOT/docs/study}" && pwd)
STEPS=${STUDY_STEPS:-400}
read -r -a SEEDS <<<"${STUDY_SEEDS:-1337 1338}"
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
        train.seq_len=$C train.micro_batch=8 train.global_batch=8 train.steps=$STEPS
        train.val_every=0 optim.lr=2e-3 optim.min_lr=2e-4 optim.warmup_steps=30 optim.decay=cosine
        "data.train=[$work/text/text_train_000000.bin, $work/needles/train_n1_000000.bin, $work/needles/train_n2_000000.bin, $work/needles/train_n4_000000.bin]"
        "data.val=$work/text/text_val_000000.bin" log.every=50)
for name in "${ORDER[@]}"; do
  read -r -a over <<<"${RUNS[$name]}"
  for seed in "${SEEDS[@]}"; do
    run=${name}_s$seed
    echo "study: training $name, seed $seed (${RUNS[$name]})"
    "$DT" train "$ROOT/configs/demo.yaml" "${common[@]}" "${over[@]}" train.seed=$seed \
      "checkpoint.dir=$work/ck_$run" "log.metrics=$OUT/$run.jsonl" >"$OUT/$run.train.log" 2>&1
    "$DT" eval "$ROOT/configs/demo.yaml" "${common[@]}" "${over[@]}" --checkpoint "$work/ck_$run" \
      --max-batches 32 --out "$OUT/$run.val.json" >/dev/null
    "$DT" eval "$ROOT/configs/demo.yaml" "${common[@]}" "${over[@]}" --checkpoint "$work/ck_$run" \
      --task needles --tokens "$work/needles/eval_n1_000000.bin" --answers "$work/needles/eval_n1_answers.jsonl" \
      --tokens "$work/needles/eval_n2_000000.bin" --answers "$work/needles/eval_n2_answers.jsonl" \
      --tokens "$work/needles/eval_n4_000000.bin" --answers "$work/needles/eval_n4_answers.jsonl" \
      --out "$OUT/$run.needles.json" >/dev/null
    rm -rf "$work/ck_$run"
  done
done

# plots of the first seed of every row (the table has all seeds)
s0=${SEEDS[0]}
labels=$(IFS=,; echo "${ORDER[*]}")
"$PY" "$ROOT/tools/plot_loss.py" $(for n in "${ORDER[@]}"; do echo "$OUT/${n}_s$s0.jsonl"; done) --labels "$labels" --out "$OUT/loss.png" >/dev/null
"$PY" "$ROOT/tools/plot_needles.py" $(for n in "${ORDER[@]}"; do echo "$OUT/${n}_s$s0.needles.json"; done) --labels "$labels" --out "$OUT/needles.png" >/dev/null
"$PY" - "$OUT" "${SEEDS[*]}" "${ORDER[@]}" <<'PY'
import json, statistics, sys
out, seeds, names = sys.argv[1], sys.argv[2].split(), sys.argv[3:]

def ms(xs, fmt):
    """mean, with the sample standard deviation over seeds when there are several"""
    m = statistics.mean(xs)
    return f"{m:{fmt}} ± {statistics.stdev(xs):{fmt}}" if len(xs) > 1 else f"{m:{fmt}}"

print(f"Mean ± standard deviation over {len(seeds)} seed(s) ({', '.join(seeds)}).")
print()
print("| run | parameters | val loss (nats/byte) | needles exact (all N) | answer digits right | "
      "answer loss (nats/digit) | answer loss N=1 / 2 / 4 |")
print("|---|---|---|---|---|---|---|")
for n in names:
    val, acc, dig, al, by = [], [], [], [], {"1": [], "2": [], "4": []}
    for s in seeds:
        v = json.load(open(f"{out}/{n}_s{s}.val.json"))
        nd = json.load(open(f"{out}/{n}_s{s}.needles.json"))
        val.append(v["loss"]); acc.append(nd["accuracy"]); dig.append(nd["digit_accuracy"])
        al.append(nd["answer_loss"])
        for k in by:
            by[k].append(nd["answer_loss_by_needles"][k])
    params = next(l for l in open(f"{out}/{n}_s{seeds[0]}.train.log")
                  if l.startswith("difftrain: ")).split()[2]
    per_n = " / ".join(f"{statistics.mean(by[k]):.3f}" for k in ("1", "2", "4"))
    print(f"| {n} | {int(params):,} | {ms(val, '.4f')} | {ms(acc, '.3f')} | {ms(dig, '.3f')} | "
          f"{ms(al, '.3f')} | {per_n} |")
PY
