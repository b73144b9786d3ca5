#!/usr/bin/env bash
# One training step of difftrain's CPU implementation against the PyTorch eager model of the
# same config, in the same run, with the same thread count (issue: "the target is to be faster
# than PyTorch eager on CPU").
#
#   bench/bench_step.sh [BENCH_STEP_BIN] [CONFIG ...]
#
# BENCH_STEP_BIN defaults to build/bench/bench_step; CONFIGs default to bench/configs/*.yaml
# (diff, diff_v2, transformer at d_model 256, 4 layers, 4 x 256 tokens).
# Environment: BENCH_THREADS (default: nproc), BENCH_STEPS (timed steps per run, default 5),
# BENCH_WARMUP (default 1), BENCH_REPEATS (alternating runs per side, default 2),
# DT_TORCH_PYTHON (default /usr/bin/python3, Debian's python3-torch).
# Prints a table; ratio = torch_ms / difftrain_ms (median step), ratio_min the same for the
# fastest single step; > 1 means difftrain is faster.
# Exit 0 when both sides ran (whatever the ratio), 1 when one failed, 77 without torch.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${1:-$HERE/../build/bench/bench_step}
shift || true
if [ $# -gt 0 ]; then CONFIGS=("$@"); else CONFIGS=("$HERE"/configs/*.yaml); fi
PY=${DT_TORCH_PYTHON:-/usr/bin/python3}
THREADS=${BENCH_THREADS:-$(nproc)}
STEPS=${BENCH_STEPS:-5}
WARMUP=${BENCH_WARMUP:-1}
REPEATS=${BENCH_REPEATS:-2}

if [ ! -x "$BIN" ]; then
    echo "bench_step.sh: $BIN: not an executable (build the bench_step target first)" >&2
    exit 1
fi
if ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "bench_step.sh: $PY cannot import torch: skipped" >&2
    exit 77
fi
export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench_step.XXXXXX") || exit 1
trap 'rm -rf "$WORK"' EXIT

# Each side runs REPEATS times, alternating (C, torch, C, torch, ...), so slow phases of a shared
# machine hit both; each keeps its best median step and its best single step.
field() { "$PY" -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
best() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b + 0 < a + 0) ? b : a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b / a }'; }

printf "%-12s %7s %13s %13s %8s %11s %11s %10s\n" arch threads difftrain_ms torch_ms ratio \
    dt_min_ms to_min_ms ratio_min
status=0
for cfg in "${CONFIGS[@]}"; do
    ams="" ; bms="" ; amin="" ; bmin="" ; arch="" ; a="" ; b=""
    # torch_step.py reads the config as difftrain resolved it (defaults filled in)
    if ! "$BIN" "$cfg" --print-config > "$WORK/resolved.yaml"; then
        echo "bench_step.sh: $cfg: bench_step --print-config failed" >&2
        status=1
        continue
    fi
    for ((r = 0; r < REPEATS; r++)); do
        a=$("$BIN" "$cfg" --steps="$STEPS" --warmup="$WARMUP" | tail -n 1) || { a=""; break; }
        b=$("$PY" "$HERE/torch_step.py" "$WORK/resolved.yaml" --steps="$STEPS" --warmup="$WARMUP" | tail -n 1) || { b=""; break; }
        arch=$(field "$a" arch)
        ams=$(best "$ams" "$(field "$a" ms_per_step)"); amin=$(best "$amin" "$(field "$a" ms_min)")
        bms=$(best "$bms" "$(field "$b" ms_per_step)"); bmin=$(best "$bmin" "$(field "$b" ms_min)")
    done
    if [ -z "$a" ] || [ -z "$b" ]; then
        echo "bench_step.sh: a run failed on $cfg" >&2
        status=1
        continue
    fi
    printf "%-12s %7s %13.1f %13.1f %8s %11.1f %11.1f %10s\n" "$arch" "$THREADS" "$ams" "$bms" \
        "$(ratio "$ams" "$bms")" "$amin" "$bmin" "$(ratio "$amin" "$bmin")"
done
exit $status
