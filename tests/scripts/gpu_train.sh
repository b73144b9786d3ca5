#!/usr/bin/env bash
# The GPU backend end to end, against the CPU backend (the oracle), on one GPU. Skipped (77)
# without a usable GPU (train.device=cuda refused). With one:
# - for diff, diff_v2 and transformer: 50 steps of the tiny config (with gradient accumulation)
#   on the GPU in fp32 track the CPU run's losses: every step within 2e-3 relative (fp32 on both,
#   the same data and initial weights; only summation orders differ, and 50 AdamW steps amplify
#   that little); in bf16 (bf16 tensor-core products) every step within 3% and the last within 2%;
# - two GPU runs give bit-identical losses (every kernel is deterministic);
# - train.recompute on the GPU gives the losses of the run without it, bit for bit; so does the
#   bf16 run with its steps' passes launched as a CUDA graph (DIFFTRAIN_CUDA_GRAPHS=1);
# - the fused attention's dq from stored dS tiles (DIFFTRAIN_FLASH_DQ=auto, the default, at this
#   size) trains as dq that recomputes them (=recompute; head dim 64, bf16, two tiles: 20 steps
#   within 1e-3 relative);
# - DIFF's fused forward with each branch's warps over all of V (DIFFTRAIN_FLASH_DIFF_FWD=branch)
#   trains as the default one that splits V's columns between them, and the standard forward
#   with 16 query rows a warp (DIFFTRAIN_FLASH_FWD_ROWS=16) as the default 32-row one: the same
#   losses, bit for bit; on an H100 the forward on the warp-specialised kernel
#   (DIFFTRAIN_FLASH_TMA=1) trains as the wgmma one (DIFFTRAIN_FLASH_SM90=1), bit for bit, for
#   each of diff, diff_v2 and transformer, and each with its dk/dv on the warp-specialised
#   kernels (DIFFTRAIN_FLASH_TMA_BWD=1) as with the default mma.sync ones;
# - a checkpoint saved on the GPU at step 25 resumes on the CPU, and one saved on the CPU resumes
#   on the GPU: the continued losses track the uninterrupted run of the other device (2e-3); one
#   saved after a launched CUDA graph step resumes with graphs to the bf16 run's bits;
# - eval on the GPU (fp32 and bf16) scores a checkpoint as eval on the CPU does;
# - the trainer's report of peak device memory after the first step is within 10% of what
#   `difftrain plan` predicts, in fp32 and bf16, for a model big enough that the buffers dominate.
#
# usage: gpu_train.sh DIFFTRAIN_BIN CONFIG_DIR
# Environment: DT_RUN_LIMIT (seconds one training run may take: a kernel that never ends fails
# the check instead of hanging it; default 300), DT_PYTHON.
set -u
BIN=${1:?usage: gpu_train.sh DIFFTRAIN_BIN CONFIG_DIR}
CONFIGS=${2:?usage: gpu_train.sh DIFFTRAIN_BIN CONFIG_DIR}
PY=${DT_PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/difftrain-gpu-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "gpu_train: FAIL: $*" >&2; exit 1; }

bash "$(dirname "$0")/make_corpus.sh" >"$tmp/corpus.txt"
"$BIN" data prepare --out "$tmp/data" --name tiny --split-on % --val-fraction 0.1 "$tmp/corpus.txt" \
  >/dev/null 2>&1 || fail "data prepare"
common=("$CONFIGS/tiny.yaml" "data.train=$tmp/data/tiny_train_*.bin"
        "data.val=$tmp/data/tiny_val_000000.bin" train.val_every=0 log.every=1)

"$BIN" train "${common[@]}" train.steps=1 train.device=cuda >"$tmp/probe.out" 2>&1
rc=$?
if [ $rc -ne 0 ]; then
  grep -q "train.device: cuda, but" "$tmp/probe.out" || { cat "$tmp/probe.out"; fail "probe run exited $rc"; }
  echo "gpu_train: no usable GPU: skipped"
  exit 77
fi
grep "^difftrain:" "$tmp/probe.out"

run() { # run NAME [overrides...]: a run past DT_RUN_LIMIT seconds (default 300) is stopped
  local name=$1 rc
  shift
  timeout "${DT_RUN_LIMIT:-300}" "$BIN" train "${common[@]}" "log.metrics=$tmp/$name.jsonl" "$@" \
    >"$tmp/$name.out" 2>&1
  rc=$?
  [ $rc = 124 ] && { cat "$tmp/$name.out"; fail "train $name ran past ${DT_RUN_LIMIT:-300} s"; }
  [ $rc = 0 ] || { cat "$tmp/$name.out"; fail "train $name exited $rc"; }
}

compare() { # compare A B RTOL [LAST_RTOL] [FIRST_STEP]: losses of A track B
  "$PY" - "$tmp/$1.jsonl" "$tmp/$2.jsonl" "$3" "${4:-$3}" "${5:-1}" <<'PY' || fail "$1 vs $2"
import json, sys
a = {r["step"]: r["loss"] for r in map(json.loads, open(sys.argv[1]))}
b = {r["step"]: r["loss"] for r in map(json.loads, open(sys.argv[2]))}
rtol, last_rtol, first = float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
steps = sorted(s for s in a if s >= first)
assert steps and all(s in b for s in steps), (sorted(a), sorted(b))
worst = max(abs(a[s] - b[s]) / abs(b[s]) for s in steps)
end = abs(a[steps[-1]] - b[steps[-1]]) / abs(b[steps[-1]])
print(f"  {sys.argv[1].split('/')[-1]} vs {sys.argv[2].split('/')[-1]}: worst {worst:.2e}, "
      f"last step {end:.2e} (rtol {rtol}, last {last_rtol})")
assert worst <= rtol and end <= last_rtol
PY
}

losses() { # losses RUN: its losses, exactly
  "$PY" -c 'import json,sys; [print(repr(json.loads(l)["loss"])) for l in open(sys.argv[1])]' \
    "$tmp/$1.jsonl"
}
same_losses() {
  cmp -s <(losses "$1") <(losses "$2") || fail "$1 and $2: losses differ"
  echo "  $1 = $2 bit for bit"
}

for arch in diff diff_v2 transformer; do
  a=(model.arch=$arch train.steps=50)
  run cpu_$arch "${a[@]}" train.device=cpu
  run gpu_$arch "${a[@]}" train.device=cuda
  run gpu2_$arch "${a[@]}" train.device=cuda
  run bf16_$arch "${a[@]}" train.device=cuda train.precision=bf16
  run rec_$arch "${a[@]}" train.device=cuda train.recompute=true
  DIFFTRAIN_CUDA_GRAPHS=1 run graph_$arch "${a[@]}" train.device=cuda train.precision=bf16
  compare gpu_$arch cpu_$arch 2e-3
  compare bf16_$arch cpu_$arch 0.03 0.02
  same_losses gpu_$arch gpu2_$arch
  same_losses rec_$arch gpu_$arch
  same_losses graph_$arch bf16_$arch
done

# the fused attention (bf16, head dim 64, sequence 128: two 64-row tiles) with dq read from the
# dS tiles dk/dv stores (the default at this size) against dq recomputing them
# (DIFFTRAIN_FLASH_DQ=recompute): the same dS (bit for bit under the emulator and on the H100)
# into the same product, so 20 steps agree to bf16 noise at most; each forward's other kernel
for arch in diff diff_v2 transformer; do
  h=2; [ $arch = transformer ] && h=4
  f=(model.arch=$arch model.d_model=256 model.n_heads=$h model.n_kv_heads=$h train.seq_len=128
     train.steps=20 train.device=cuda train.precision=bf16)
  run fused_$arch "${f[@]}"
  DIFFTRAIN_FLASH_DQ=recompute run fused_dqrc_$arch "${f[@]}"
  compare fused_dqrc_$arch fused_$arch 1e-3
  cmp -s <(losses fused_dqrc_$arch) <(losses fused_$arch) && echo "  (losses bit for bit)"
  # on an H100/H200 (elsewhere both run the default kernels): the wgmma kernels, then the
  # forward on the warp-specialised (TMA) one, the same bits
  DIFFTRAIN_FLASH_SM90=1 run fused_sm90_$arch "${f[@]}"
  DIFFTRAIN_FLASH_SM90=1 DIFFTRAIN_FLASH_TMA=1 run fused_tma_$arch "${f[@]}"
  same_losses fused_tma_$arch fused_sm90_$arch
  if [ $arch = diff ]; then
    DIFFTRAIN_FLASH_DIFF_FWD=branch run fused_branch_$arch "${f[@]}"
    same_losses fused_branch_$arch fused_$arch
  else
    DIFFTRAIN_FLASH_FWD_ROWS=16 run fused_rows16_$arch "${f[@]}"
    same_losses fused_rows16_$arch fused_$arch
  fi
  # on an H100/H200: dk/dv on the warp-specialised (TMA) kernels, the same bits
  DIFFTRAIN_FLASH_TMA_BWD=1 run fused_tmabwd_$arch "${f[@]}"
  same_losses fused_tmabwd_$arch fused_$arch
done

# checkpoints across devices: GPU -> CPU and CPU -> GPU, continued at step 26
run g_half train.steps=50 train.device=cuda checkpoint.dir="$tmp/ck_g" checkpoint.every=25 --stop-after 25
run g_then_c train.steps=50 train.device=cpu checkpoint.dir="$tmp/ck_g"
compare g_then_c cpu_diff 2e-3 2e-3 26
run c_half train.steps=50 train.device=cpu checkpoint.dir="$tmp/ck_c" checkpoint.every=25 --stop-after 25
run c_then_g train.steps=50 train.device=cuda checkpoint.dir="$tmp/ck_c"
compare c_then_g gpu_diff 2e-3 2e-3 26
# a checkpoint saved after a launched CUDA graph step resumes, with graphs again, to the bits of
# the uninterrupted bf16 run issued op by op
g=(model.arch=diff train.steps=50 train.device=cuda train.precision=bf16)
DIFFTRAIN_CUDA_GRAPHS=1 run graph_half "${g[@]}" checkpoint.dir="$tmp/ck_graph" \
  checkpoint.every=25 --stop-after 25
DIFFTRAIN_CUDA_GRAPHS=1 run graph_resumed "${g[@]}" checkpoint.dir="$tmp/ck_graph"
cmp -s <(losses graph_resumed) <(losses bf16_diff | tail -25) ||
  fail "graph_resumed: steps 26-50 differ from bf16_diff's"
echo "  graph_resumed (saved after a launched step) = bf16_diff from step 26, bit for bit"

# eval on the GPU scores the GPU-saved step-25 checkpoint as the CPU does (fp32 on both: only
# summation orders differ, 1e-4 relative), and in bf16 within 1%
ev() { # ev NAME DEVICE [overrides...]
  local name=$1 dev=$2
  shift 2
  "$BIN" eval "${common[@]}" --checkpoint "$tmp/ck_g/step_00000025" --out "$tmp/$name.json" \
    train.device="$dev" "$@" >"$tmp/$name.out" 2>&1 || { cat "$tmp/$name.out"; fail "eval $name"; }
}
ev ev_cpu cpu
ev ev_gpu cuda
ev ev_bf16 cuda train.precision=bf16
"$PY" - "$tmp/ev_cpu.json" "$tmp/ev_gpu.json" "$tmp/ev_bf16.json" <<'PY' || fail "eval GPU vs CPU"
import json, sys
c, g, b = (json.load(open(f)) for f in sys.argv[1:])
assert c["tokens"] == g["tokens"] == b["tokens"] and c["step"] == g["step"] == 25, (c, g)
rg, rb = abs(g["loss"] - c["loss"]) / c["loss"], abs(b["loss"] - c["loss"]) / c["loss"]
print(f"  eval loss cpu {c['loss']:.6f}, gpu {g['loss']:.6f} ({rg:.1e}), bf16 {b['loss']:.6f} ({rb:.1e})")
assert rg <= 1e-4 and rb <= 1e-2
PY

# peak device memory after the first step vs the plan (d_model 1024, 8 layers, 8 x 1024 tokens),
# in fp32 and in bf16 (whose products add the bf16 copies of their operands and of the fused
# attention's inputs to the workspaces)
for prec in fp32 bf16; do
  run mem_$prec model.d_model=1024 model.n_heads=8 model.n_kv_heads=8 model.ffn_dim=2752 \
    model.n_layers=8 model.max_seq_len=1024 train.seq_len=1024 train.micro_batch=8 \
    train.global_batch=8 train.steps=2 train.device=cuda train.precision=$prec
  line=$(grep "^memory: peak device memory" "$tmp/mem_$prec.out") || { cat "$tmp/mem_$prec.out"; fail "no memory report ($prec)"; }
  echo "  $prec $line"
  pct=$(sed -E 's/.*\(([0-9.]+)% of the measured peak\).*/\1/' <<<"$line")
  "$PY" -c "import sys; p=float('$pct'); sys.exit(0 if 90 <= p <= 110 else 1)" \
    || fail "$prec: plan predicts $pct% of the measured peak device memory (expected 90-110%)"
  # everything in use on the device (cudaMemGetInfo) holds at least the backend's buffers
  used=$(sed -nE 's/.*; ([0-9.]+) GiB in use on the device in all.*/\1/p' <<<"$line")
  peak=$(sed -E 's/^memory: peak device memory ([0-9.]+) GiB.*/\1/' <<<"$line")
  "$PY" -c "import sys; u, p = float('${used:-0}'), float('$peak'); sys.exit(0 if u >= 0.5 * p else 1)" \
    || fail "$prec: device memory in use in all ($used GiB) is less than half the backend's peak ($peak GiB)"
done
echo "gpu_train: ok"
