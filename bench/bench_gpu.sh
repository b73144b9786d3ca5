#!/usr/bin/env bash
# Training throughput on one GPU: a paper config's DIFF model and its matched Transformer, run one
# after the other in the same invocation on the same GPU, each for BENCH_STEPS steps of
# BENCH_ACCUM micro-batches of micro_batch x seq_len tokens (tp 1 x dp 1, no checkpoints). Prints
# tokens/s and MFU (the trainer's: model FLOPs per token x tokens/s over the device's datasheet
# peak) per model and precision, and the DIFF/baseline throughput ratio measured in this run.
# With one micro-batch a step (the default) every forward and backward is followed by the
# optimizer's update of all parameters, which a run that accumulates gradients, or shards the
# optimizer over data-parallel ranks (ZeRO), spreads over several micro-batches or ranks.
#
#   bench/bench_gpu.sh [DIFFTRAIN_BIN] [SIZE ...]        SIZE: 830m (default), 1.4b, 3b, ...
# Environment: BENCH_STEPS (default 30; the median over the steps after the first 10 counts),
# BENCH_PRECISIONS (default "bf16 fp32"), BENCH_SEQ (default: the config's seq_len),
# BENCH_MICRO (default: the config's micro_batch), BENCH_ACCUM (micro-batches a step, gradient
# accumulation; default 1), BENCH_RECOMPUTE (default false), BENCH_RUN_LIMIT (seconds one
# training run may take before it is stopped and counted as failed; default 0, none).
# Exit 0 when every run worked, 1 when one failed, 77 without a usable GPU.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${1:-$HERE/../build/difftrain}
shift || true
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(830m)
STEPS=${BENCH_STEPS:-30}
PY=${DT_PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/difftrain-bench-gpu-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# data: byte-level text is as good as any for throughput (token ids < vocab)
for f in /usr/share/games/fortunes/*; do case "$f" in *.dat|*.u8) ;; *) [ -f "$f" ] && cat "$f";; esac; done \
  >"$tmp/text.txt" 2>/dev/null
[ -s "$tmp/text.txt" ] || bash "$HERE/../tests/scripts/make_corpus.sh" >"$tmp/text.txt"
"$BIN" data prepare --out "$tmp/data" --name bench --val-fraction 0 "$tmp/text.txt" >/dev/null \
  || { echo "bench_gpu: data prepare failed" >&2; exit 1; }

probe=$("$BIN" train "$HERE/../configs/tiny.yaml" "data.train=$tmp/data/bench_train_*.bin" data.val= \
  train.steps=1 train.val_every=0 train.device=cuda 2>&1)
if [ $? -ne 0 ]; then
  if grep -q "train.device: cuda, but" <<<"$probe"; then
    echo "bench_gpu: no usable GPU: skipped ($(grep -m1 error <<<"$probe"))"
    exit 77
  fi
  echo "$probe" | tail -5 >&2
  exit 1
fi
gpu=$(grep -m1 "^difftrain:" <<<"$probe" | sed -E 's/.*\((cuda:[^)]*\))\)$/\1/')
echo "bench_gpu: $gpu, $(date -u +%Y-%m-%d), $STEPS steps per run of ${BENCH_ACCUM:-1}" \
  "micro-batch(es) each"

run() { # run NAME CONFIG PRECISION
  local over=(parallel.tp=1 parallel.dp=1 parallel.zero=0 train.device=cuda "train.precision=$3"
              "train.steps=$STEPS" log.every=1 train.val_every=0 checkpoint.dir= checkpoint.every=0
              "data.train=$tmp/data/bench_train_*.bin" data.val= "log.metrics=$tmp/$1.jsonl"
              "train.recompute=${BENCH_RECOMPUTE:-false}")
  [ -n "${BENCH_SEQ:-}" ] && over+=("train.seq_len=$BENCH_SEQ" "model.max_seq_len=$BENCH_SEQ")
  local micro=${BENCH_MICRO:-$(sed -nE 's/^  micro_batch: *([0-9]+).*/\1/p' "$2")}
  over+=("train.micro_batch=$micro" "train.global_batch=$((micro * ${BENCH_ACCUM:-1}))")
  timeout "${BENCH_RUN_LIMIT:-0}" "$BIN" train "$2" "${over[@]}" >"$tmp/$1.out" 2>&1
  local rc=$?
  [ $rc = 124 ] && echo "bench_gpu: $1 ran past ${BENCH_RUN_LIMIT:-0} s: stopped" >&2
  [ $rc = 0 ] || { tail -5 "$tmp/$1.out"; return 1; }
}

status=0
printf "%-18s %-5s %12s %8s %14s\n" model prec tokens/s MFU memory
for size in "${SIZES[@]}"; do
  for prec in ${BENCH_PRECISIONS:-bf16 fp32}; do
    for arch in diff transformer; do
      cfg="$HERE/../configs/paper/$arch-$size.yaml"
      [ -f "$cfg" ] || { echo "bench_gpu: no config $cfg" >&2; exit 1; }
      if ! run "$arch-$size-$prec" "$cfg" "$prec"; then
        echo "bench_gpu: $arch-$size ($prec) failed" >&2
        status=1
        continue
      fi
      "$PY" - "$tmp/$arch-$size-$prec.jsonl" "$arch-$size" "$prec" "$tmp/$arch-$size-$prec.out" \
        >>"$tmp/rows" <<'PY'
import json, re, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
steady = [r for r in rows if r["step"] > 10] or rows
tps = statistics.median(r["tokens_per_s"] for r in steady)
mfu = [r["mfu"] for r in steady if "mfu" in r]
mem = re.search(r"peak device memory ([0-9.]+) GiB", open(sys.argv[4]).read())
print(sys.argv[2], sys.argv[3], tps, statistics.median(mfu) if mfu else -1,
      mem.group(1) if mem else "?")
PY
      tail -1 "$tmp/rows" | awk '{printf "%-18s %-5s %12.0f %7s %11s GiB\n", $1, $2, $3, ($4 < 0 ? "?" : sprintf("%.1f%%", 100*$4)), $5}'
    done
  done
done
[ -f "$tmp/rows" ] && "$PY" - "$tmp/rows" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    name, prec, tps, mfu, mem = line.split()
    rows[(name, prec)] = float(tps)
for (name, prec), tps in sorted(rows.items()):
    if name.startswith("diff-"):
        base = rows.get(("transformer-" + name[5:], prec))
        if base:
            print(f"DIFF/baseline throughput {name[5:]} {prec}: {tps / base:.3f} "
                  f"({tps:.0f} vs {base:.0f} tokens/s)")
PY
exit $status
