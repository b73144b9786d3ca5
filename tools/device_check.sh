#!/usr/bin/env bash
# Runs difftrain's GPU tests and benchmarks on a GPU machine that lacks the build's runtime
# libraries, from the archive tools/device_pack.sh made (.device/difftrain-gpu.tar.xz, carried
# with the working tree). Run from the repository root there:
#
#   bash tools/device_check.sh STAGE...
#
# Environment: OUT (logs; default ./device-out), DT_PACK (the archive), DT_UNPACK (where it is
# unpacked; default /tmp/difftrain-gpu), DT_PYTHON (python3 for the scripts' checks),
# DT_TEST_TIMEOUT (seconds one GPU test program may run; default 300), DT_RUN_LIMIT (one
# training run of the train stage; default 300), BENCH_RUN_LIMIT and BENCH_ATTN_LIMIT (below).
# Stages (each writes STAGE.log into the log folder):
#   smoke  the unpacked runtime works: 2 CPU steps of the tiny config with a checkpoint
#          (Open MPI singleton, HDF5, libyaml, OpenBLAS), then nvidia-smi
#   tests  every GPU test program (test_cuda_*: ops, whole model, NCCL, probe, ...)
#   train  tests/scripts/gpu_train.sh (GPU vs CPU training, bf16, determinism, recompute,
#          checkpoints across devices, eval, peak memory vs plan)
#   bench  bench/bench_gpu.sh 830m (sequence 2048 x 8; then 4096 x 4 in bf16; then 2048 x 8 in
#          bf16 with DIFFTRAIN_FLASH_DQ=recompute, against the first run's bf16 rows; then
#          2048 x 8 x 2 micro-batches in bf16 issued op by op and as a CUDA graph), and
#          bench/bench_attn.sh where it exists (its DQ lines time both ways to dq, its PAIRED
#          lines DIFF's dk/dv per branch and paired, its ROWS lines the standard forward with
#          16 and 32 query rows a warp, its SPLIT lines DIFF's forward per branch and with V's
#          columns split between the branch warps; SDPA timed as it dispatches itself and held
#          to each of its backends, FlashAttention-2, memory-efficient and cuDNN, with the
#          backend and kernels it picks named)
#   attn   bench/bench_attn.sh alone (the last part of `bench`): the fused attention against
#          SDPA, the goal's figures, in a few minutes (the warp-specialised kernels' lines in
#          processes of their own, each stopped after BENCH_ATTN_LIMIT seconds, default 150)
#   tma    bench/bench_gpu.sh 830m in bf16 with the default kernels, then with the
#          warp-specialised TMA forward (DIFFTRAIN_FLASH_TMA=1), then with the warp-specialised
#          dk/dv too (DIFFTRAIN_FLASH_TMA_BWD=1): what each does to the step; each training run
#          stopped after BENCH_RUN_LIMIT seconds (default 240 here)
#   bench3b  bench/bench_gpu.sh 3b in bf16, DIFF against its baseline, on one GPU (tp 1, dp 1:
#          nothing to shard the AdamW state over; `difftrain plan` sizes at this build, with
#          the weights' bf16 copies): sequence 2048 at micro-batch 1 (66.6 GiB), and 4096 at
#          micro-batch 2 with recompute (64.0 GiB; 89.3 without), each with one micro-batch a
#          step, then the latter with 8 (the 3B config's accumulation per data-parallel rank:
#          1024 / (2 x 64)), where the optimizer's update and the weights' bf16 copies come
#          once per 8 forwards and backwards, as in that run; last, the step closest to the 3B
#          config's own that fits one GPU: 4096 at micro-batch 1 without recompute (74.3 GiB;
#          the config's run has no recompute: tp 4 and ZeRO over dp 64 take it to 22.7 GiB a
#          GPU at micro-batch 2), 16 micro-batches a step (the same 64 sequences).
#          Several minutes: the 3.5B parameters are initialised on the host per run.
#   profile  Nsight Compute (ncu) over two training steps of DIFF and the baseline at 830M in
#          bf16 (gpu__time_duration of every kernel, clocks as found): per-kernel-name totals in
#          profile.log, the raw CSV in profile_ARCH.csv; then the sections that say why (speed of
#          light, occupancy, warp stalls, memory) for the fused attention kernels of bench_attn:
#          the default ones (profile_flash.log), the warp-specialised forward
#          (profile_flash_tma.log) and dk/dv (profile_flash_tmabwd.log).
#          DT_PROFILE_ARCHS (default "diff transformer"), DT_PROFILE_FLASH=0 (skip the sections).
#          Where Nsight Systems (nsys) is there too: the GPU timeline of 8 steps of each arch at
#          830M (bf16, 2048 x 8) and tools/gpu_gaps.py's idle time per step, in short gaps
#          (what CUDA graphs could win) and long ones (gaps.log).
# Exit: 0 when every stage passed (a test reporting 77, skipped, counts as passed), else 1.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
pack=${DT_PACK:-$root/.device/difftrain-gpu.tar.xz}
out=${OUT:-$root/device-out}
dt=${DT_UNPACK:-/tmp/difftrain-gpu}
mkdir -p "$out"
[ -f "$pack" ] || { echo "device_check: $pack is missing: run tools/device_pack.sh first" >&2; exit 1; }
[ $# -gt 0 ] || set -- smoke tests train bench

if [ ! -x "$dt/bin/difftrain" ] || ! cmp -s "$dt/commit.txt" <(xz -dc "$pack" | tar -xOf - ./commit.txt 2>/dev/null); then
  rm -rf "$dt" && mkdir -p "$dt" && xz -dc "$pack" | tar -C "$dt" -xf - ||
    { echo "device_check: cannot unpack $pack" >&2; exit 1; }
fi

# CUDA's libraries where this machine keeps them (the toolkit, or Python's nvidia-* wheels)
cuda_dirs=
for lib in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libnccl.so.2; do
  ldconfig -p 2>/dev/null | grep -q " $lib " && continue
  f=$(find /usr/local /opt /usr/lib -name "$lib" 2>/dev/null | head -1)
  [ -n "$f" ] && cuda_dirs="$cuda_dirs:$(dirname "$f")"
done
export LD_LIBRARY_PATH="$dt/lib$cuda_dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export OPAL_PREFIX="$dt/usr"              # Open MPI finds its plugins and help texts there
export OMPI_MCA_ess_singleton_isolated=1  # one rank without mpirun needs no orted
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export DT_PYTHON=${DT_PYTHON:-$(command -v python3)}
BIN=$dt/bin/difftrain

stage_smoke() {
  local tmp
  tmp=$(mktemp -d)
  bash "$root/tests/scripts/make_corpus.sh" >"$tmp/corpus.txt" &&
    "$BIN" data prepare --out "$tmp/data" --name tiny --split-on % --val-fraction 0.1 "$tmp/corpus.txt" &&
    "$BIN" train "$root/configs/tiny.yaml" "data.train=$tmp/data/tiny_train_*.bin" \
      "data.val=$tmp/data/tiny_val_000000.bin" train.steps=2 train.device=cpu \
      checkpoint.dir="$tmp/ck" checkpoint.every=2 &&
    "$BIN" ckpt verify "$tmp/ck" || { rm -rf "$tmp"; return 1; }
  rm -rf "$tmp"
  nvidia-smi || true
}

stage_tests() {
  local rc=0 t r
  for t in "$dt"/bin/test_cuda_*; do
    (cd "$root" && timeout "${DT_TEST_TIMEOUT:-300}" "$t") >"$out/$(basename "$t").log" 2>&1
    r=$?
    case $r in
      0) echo "PASS $(basename "$t")" ;;
      77) echo "SKIP $(basename "$t")" ;;
      124) echo "FAIL $(basename "$t") (timed out after ${DT_TEST_TIMEOUT:-300} s)"; tail -20 "$out/$(basename "$t").log"; rc=1 ;;
      *) echo "FAIL $(basename "$t") (exit $r)"; tail -20 "$out/$(basename "$t").log"; rc=1 ;;
    esac
  done
  return $rc
}

stage_train() { bash "$root/tests/scripts/gpu_train.sh" "$BIN" "$root/configs"; }

stage_bench() {
  local rc=0
  bash "$root/bench/bench_gpu.sh" "$BIN" 830m || rc=1
  # the same 16,384 tokens a step at sequence 4096 (the attention's share grows with T)
  BENCH_PRECISIONS=bf16 BENCH_SEQ=4096 BENCH_MICRO=4 bash "$root/bench/bench_gpu.sh" "$BIN" 830m \
    || rc=1
  echo "-- dq recomputing dS, not reading the tiles dk/dv stores (DIFFTRAIN_FLASH_DQ=recompute)"
  DIFFTRAIN_FLASH_DQ=recompute BENCH_PRECISIONS=bf16 bash "$root/bench/bench_gpu.sh" "$BIN" 830m \
    || rc=1
  echo "-- the step's passes issued op by op, then as a CUDA graph (DIFFTRAIN_CUDA_GRAPHS=1),"
  echo "   one after the other: compare their tokens/s (and the DIFF/baseline ratios)"
  BENCH_PRECISIONS=bf16 BENCH_ACCUM=2 bash "$root/bench/bench_gpu.sh" "$BIN" 830m || rc=1
  DIFFTRAIN_CUDA_GRAPHS=1 BENCH_PRECISIONS=bf16 BENCH_ACCUM=2 \
    bash "$root/bench/bench_gpu.sh" "$BIN" 830m || rc=1
  stage_attn || rc=1
  return $rc
}

stage_attn() {
  [ -f "$root/bench/bench_attn.sh" ] || return 0
  bash "$root/bench/bench_attn.sh" "$dt/bin/bench_attn"
}

stage_tma() {
  echo "-- the default kernels, then the warp-specialised TMA forward (DIFFTRAIN_FLASH_TMA=1),"
  echo "   then with the warp-specialised dk/dv too, one after the other: compare tokens/s"
  # each run stopped after BENCH_RUN_LIMIT seconds: a warp-specialised kernel that hangs on
  # this GPU costs that run only
  export BENCH_RUN_LIMIT=${BENCH_RUN_LIMIT:-240}
  BENCH_PRECISIONS=bf16 bash "$root/bench/bench_gpu.sh" "$BIN" 830m
  local rc=$?
  [ $rc -eq 0 ] || return $rc # 77: no usable GPU
  DIFFTRAIN_FLASH_TMA=1 BENCH_PRECISIONS=bf16 bash "$root/bench/bench_gpu.sh" "$BIN" 830m ||
    rc=1
  echo "-- and the warp-specialised dk/dv (DIFFTRAIN_FLASH_TMA_BWD=1)"
  DIFFTRAIN_FLASH_TMA=1 DIFFTRAIN_FLASH_TMA_BWD=1 BENCH_PRECISIONS=bf16 \
    bash "$root/bench/bench_gpu.sh" "$BIN" 830m || rc=1
  return $rc
}

stage_bench3b() {
  local rc=0
  BENCH_PRECISIONS=bf16 BENCH_SEQ=2048 BENCH_MICRO=1 bash "$root/bench/bench_gpu.sh" "$BIN" 3b || rc=1
  BENCH_PRECISIONS=bf16 BENCH_SEQ=4096 BENCH_RECOMPUTE=true bash "$root/bench/bench_gpu.sh" "$BIN" 3b || rc=1
  BENCH_PRECISIONS=bf16 BENCH_SEQ=4096 BENCH_RECOMPUTE=true BENCH_ACCUM=8 BENCH_STEPS=14 \
    bash "$root/bench/bench_gpu.sh" "$BIN" 3b || rc=1
  BENCH_PRECISIONS=bf16 BENCH_SEQ=4096 BENCH_MICRO=1 BENCH_ACCUM=16 BENCH_STEPS=13 \
    bash "$root/bench/bench_gpu.sh" "$BIN" 3b || rc=1
  return $rc
}

# profile_train ARCH STEPS DATA LOG PROFILER...: STEPS bf16 training steps of ARCH at 830M on
# one GPU (the config's 2048 x 8 tokens, no validation, checkpoints or metrics file) under the
# profiler command, its output in LOG
profile_train() {
  local arch=$1 steps=$2 data=$3 log=$4
  shift 4
  "$@" "$BIN" train "$root/configs/paper/$arch-830m.yaml" "data.train=$data" data.val= \
    parallel.tp=1 parallel.dp=1 parallel.zero=0 train.device=cuda train.precision=bf16 \
    train.steps="$steps" train.global_batch=8 train.val_every=0 checkpoint.dir= \
    checkpoint.every=0 log.every=1 log.metrics= >"$log" 2>&1
}

stage_profile() {
  command -v ncu >/dev/null || { echo "profile: no ncu on this machine"; return 77; }
  local tmp arch rc=0
  tmp=$(mktemp -d)
  bash "$root/tests/scripts/make_corpus.sh" >"$tmp/corpus.txt"
  "$BIN" data prepare --out "$tmp/data" --name p --val-fraction 0 "$tmp/corpus.txt" >/dev/null || return 1
  for arch in ${DT_PROFILE_ARCHS:-diff transformer}; do
    # every kernel of the set-up and both steps; the summary halves the totals
    profile_train "$arch" 2 "$tmp/data/p_train_*.bin" "$out/profile_$arch.out" \
      ncu --clock-control none --metrics gpu__time_duration.sum --csv \
      --log-file "$out/profile_$arch.csv" || rc=1
    "$DT_PYTHON" "$root/tools/ncu_summary.py" "$out/profile_$arch.csv" --steps 2 || rc=1
  done
  if command -v nsys >/dev/null; then
    for arch in ${DT_PROFILE_ARCHS:-diff transformer}; do
      echo "-- GPU idle time per step, $arch 830m (nsys)" | tee -a "$out/gaps.log"
      profile_train "$arch" 8 "$tmp/data/p_train_*.bin" "$out/gaps_$arch.out" \
        nsys profile --trace=cuda --sample=none --cpuctxsw=none --force-overwrite=true \
        -o "$tmp/gaps_$arch" || rc=1
      nsys stats --report cuda_gpu_trace --format csv --force-export=true \
        --output "$tmp/gaps_$arch" "$tmp/gaps_$arch.nsys-rep" >/dev/null 2>&1 || rc=1
      "$DT_PYTHON" "$root/tools/gpu_gaps.py" "$tmp/gaps_${arch}_cuda_gpu_trace.csv" --skip 2 \
        >"$tmp/gaps.txt" 2>&1 || rc=1
      tee -a "$out/gaps.log" <"$tmp/gaps.txt"
    done
  else
    echo "profile: no nsys on this machine: GPU idle time per step not measured"
  fi
  [ "${DT_PROFILE_FLASH:-1}" = 1 ] || { rm -rf "$tmp"; return $rc; }
  # the default kernels' first launches, then the warp-specialised forward's and dk/dv's
  profile_flash main flash "$out/profile_flash.log" || rc=1
  profile_flash tma flash_forward_tma "$out/profile_flash_tma.log" || rc=1
  profile_flash tmabwd 'flash_dkdv.*tma' "$out/profile_flash_tmabwd.log" || rc=1
  rm -rf "$tmp"
  return $rc
}

# profile_flash LINES KERNEL_REGEX LOG: Nsight Compute's sections for the first 6 launches of the
# kernels matching KERNEL_REGEX in bench_attn's group LINES (one timed run a case), the figures
# that say why printed; stopped after BENCH_ATTN_LIMIT seconds (default 300 here)
profile_flash() {
  timeout "${BENCH_ATTN_LIMIT:-300}" ncu --clock-control none -k "regex:$2" --launch-count 6 \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
    "$dt/bin/bench_attn" --iters=1 --warmup=0 --check=0 --lines="$1" >"$3" 2>&1
  local r=$?
  echo "-- ncu, bench_attn --lines=$1, kernels $2 (exit $r)"
  grep -E "flash_|Duration|Throughput|Registers|Achieved Occupancy|Theoretical Occupancy|Block Limit|Stall|Warp Cycles|L1/TEX Hit|Shared Memory Configuration|Dynamic Shared" "$3" | head -150
  return $r
}

status=0
for s in "$@"; do
  declare -F "stage_$s" >/dev/null || { echo "device_check: unknown stage $s" >&2; exit 1; }
  echo "== $s ($(date -u +%H:%M:%S))"
  start=$SECONDS
  "stage_$s" >"$out/$s.log" 2>&1
  r=$?
  case $r in 0|77) echo "== $s: ok in $((SECONDS - start)) s" ;;
    *) echo "== $s: FAILED (exit $r) in $((SECONDS - start)) s"; tail -30 "$out/$s.log"; status=1 ;;
  esac
done
exit $status
