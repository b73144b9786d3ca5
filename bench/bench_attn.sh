#!/usr/bin/env bash
# The fused bf16 attention (model/cuda/flash_*.cu) against PyTorch's
# scaled_dot_product_attention (bf16, causal) on the same GPU in the same run, at the paper's
# 830M and 3B shapes, sequence 2048 and 4096 (B*T = 16384): DIFF V1 (fused: both branches in one
# pass; SDPA: two calls, one per branch), DIFF V2's attention and the baseline's. Forward and
# forward+backward; TFLOP/s with the causal FLOP count of bench/bench_attn.c, and the ratio
# fused/SDPA of the throughputs (> 1: the fused kernels are faster): against SDPA's own choice of
# backend, then against each of its backends (FlashAttention-2, memory-efficient, cuDNN) held
# one at a time, with the backend and kernels SDPA picks itself named (bench/attn_report.py).
#
#   bench/bench_attn.sh [BENCH_ATTN_BIN]        (default build/bench/bench_attn)
# Environment: BENCH_ITERS (timed runs, median; default 10), BENCH_WARMUP (default 3),
# BENCH_SDPA_BACKENDS (default all three; '' for none), BENCH_SDPA_BACKEND_ITERS (default 5),
# DT_TORCH_PYTHON (default python3: PyTorch with CUDA), BENCH_ATTN_LIMIT (seconds each of
# bench_attn's groups of TMA and TMABWD lines may run, in its own process: default 150; the
# main lines have no limit).
# Exit 0 when both sides ran, 1 when one failed (or the fused output is off the tiled fp32
# kernels', or a group of bench_attn's lines failed or ran past its limit: the tables are still
# printed from the others), 77 without a GPU or without a CUDA PyTorch.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${1:-$HERE/../build/bench/bench_attn}
PY=${DT_TORCH_PYTHON:-python3}
ITERS=${BENCH_ITERS:-10}
WARMUP=${BENCH_WARMUP:-3}
GROUP_LIMIT=${BENCH_ATTN_LIMIT:-150}
[ -x "$BIN" ] || { echo "bench_attn.sh: $BIN: not an executable (build bench_attn)" >&2; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench_attn.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

# Each group of lines in its own process, the warp-specialised kernels' under a time limit: one
# that hangs or faults on this GPU (leaving the process's CUDA context unusable) then costs only
# its own lines, and the others are still set against SDPA.
status=0
for lines in main tma tmabwd; do
    limit=$GROUP_LIMIT
    [ $lines = main ] && limit=0 # none
    timeout "$limit" "$BIN" --iters="$ITERS" --warmup="$WARMUP" --lines="$lines" \
        >"$tmp/fused.$lines" 2>&1
    rc=$?
    cat "$tmp/fused.$lines" >>"$tmp/fused"
    cat "$tmp/fused.$lines"
    [ $rc -eq 77 ] && exit 77
    case $rc in
    0) ;;
    124) echo "bench_attn.sh: bench_attn --lines=$lines ran past ${limit} s: stopped" >&2
         status=1 ;;
    *) echo "bench_attn.sh: bench_attn --lines=$lines failed ($rc)" >&2; status=1 ;;
    esac
done
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "bench_attn.sh: $PY has no CUDA PyTorch: SDPA side skipped" >&2
    exit 77
fi
PYTHONUNBUFFERED=1 "$PY" "$HERE/sdpa_attn.py" --iters="$ITERS" --warmup="$WARMUP" \
    --backends="${BENCH_SDPA_BACKENDS-FLASH_ATTENTION,EFFICIENT_ATTENTION,CUDNN_ATTENTION}" \
    --backend-iters="${BENCH_SDPA_BACKEND_ITERS:-5}" >"$tmp/sdpa" 2>&1
rc=$?
[ $rc -eq 77 ] && { cat "$tmp/sdpa"; exit 77; }
[ $rc -eq 0 ] || { cat "$tmp/sdpa"; echo "bench_attn.sh: sdpa_attn.py failed" >&2; exit 1; }
cat "$tmp/sdpa"
"$PY" "$HERE/attn_report.py" "$tmp/fused" "$tmp/sdpa" || exit 1
exit $status
