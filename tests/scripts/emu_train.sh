#!/usr/bin/env bash
# The trainer's GPU path end to end on the CUDA host emulator (tests/emu): difftrain_emu is the
# difftrain program on the emulated CUDA backend, with the real dist/nccl_buf_coll.c over an
# emulated NCCL (MPI on the emulated device buffers), and the emulator aborts on any pair of
# operations of two streams that touch the same bytes with nothing ordering them. gpu_train.sh
# is what a real GPU runs; this is its emulator-sized version (a few steps of small models),
# with the CPU program (difftrain, the oracle) and the single-rank emulated run as references:
# - diff, diff_v2, transformer: 4 steps (2 micro-batches of accumulation) on the emulated GPU
#   match the CPU run: every loss and gradient norm within 1e-5 relative and every parameter
#   after the last step within 1e-5 absolute (compare_dumps.py). Both sides are fp32 and the
#   emulated cuBLAS sums each product in order, so only the kernels' reduction orders differ:
#   measured 3e-8 relative at most on the gradient norms, the losses equal to 9 digits, where a
#   wrong kernel, a missing reduction or a skipped update is off by 1e-3 or more. In bf16 (the
#   emulated cuBLAS rounds its inputs to bf16, as FAST_16BF tensor cores do) every loss within
#   1e-3 relative of the CPU's (measured 1.6e-5 at most over these 4 steps; gpu_train.sh allows
#   3% over 50), and not all equal to the fp32 run's (the bf16 products were taken);
# - two emulated GPU runs, and a run with train.recompute, give bit-identical losses and
#   parameters; so does the fused attention's dq from stored dS tiles (the default at these
#   sizes) against dq recomputing them (DIFFTRAIN_FLASH_DQ=recompute), in bf16 at head dims 64 and
#   128, and DIFF's fused forward with each branch's warps over all of V
#   (DIFFTRAIN_FLASH_DIFF_FWD=branch) against the default one that splits V's columns between
#   them, the standard forward with 16 query rows a warp (DIFFTRAIN_FLASH_FWD_ROWS=16)
#   against the default 32, and the forward (DIFF's and the transformer's) on the
#   warp-specialised sm_90 kernel (DIFFTRAIN_FLASH_TMA=1) against the wgmma one
#   (DIFFTRAIN_FLASH_SM90=1), which tracks the CPU, and dk/dv (DIFF's and the transformer's) on
#   the warp-specialised kernels (DIFFTRAIN_FLASH_TMA_BWD=1) against the default mma.sync ones;
# - the step's forward and backward passes recorded as a CUDA graph and launched
#   (DIFFTRAIN_CUDA_GRAPHS=1) give the bits of the same runs issued op by op (bf16, fp32 with
#   recomputation), and a checkpoint saved after a launched step resumes to the same bits;
#   the CPU program notes that it has no graphs (once a job on 2 ranks) and runs as before;
# - a checkpoint saved on the emulated GPU after step 2 resumes on the CPU program, and one saved
#   by the CPU resumes on the emulated GPU: steps 3-4 and the final parameters match the other
#   device's uninterrupted run (1e-5, as above);
# - `difftrain_emu eval` (fp32, bf16) scores the GPU-saved checkpoint as the CPU eval does
#   (1e-5 relative; bf16 1e-2);
# - the trainer's memory report after the first step appears once, within 90-110% of the plan:
#   the figure is the backend's own count of its allocations (cuda_bytes_peak), not what the
#   emulator maps, so it is what a GPU would report for the same model; MFU is reported (the
#   emulated device is named after the H100, whose peak it is measured against) and is
#   positive and below 0.1% (an emulator is millions of times slower);
# - under mpirun with DT_EMU_DEVICES=4 (one emulated GPU per rank), 2 steps of the parallel test
#   config (GQA; 2 micro-batches per rank at dp 2): tp 2, dp 2 with ZeRO 1 and 2, and tp 2 x
#   dp 2 with ZeRO 1 match the single-rank emulated run (parameters, losses, gradient norms, and
#   the bytes moved equal to the analytic count: compare_dumps.py, as parallel_layouts.sh does
#   on the CPU); with one emulated device, two ranks on the host are refused (exit 2, one
#   message), and train.device=auto takes the emulated GPU;
# - 4 steps of tp 2 x dp 2 with ZeRO 1 and dp 2 with ZeRO 2 as CUDA graphs (the collectives
#   recorded with the passes, launched on steps 3 and 4) give the bits of the issued runs, and
#   count the bytes the launched graphs move (the analytic count, as the issued steps).
# About 95 s on 2 busy cores (about 45 s of CPU time).
# Skipped (77) when difftrain_emu was not built (the emulator needs x86-64 Linux and python3).
#
# usage: emu_train.sh DIFFTRAIN_EMU_BIN DIFFTRAIN_BIN CONFIG_DIR TEST_CONFIG_DIR MPIEXEC
set -u
EMU=${1:?usage: emu_train.sh DIFFTRAIN_EMU_BIN DIFFTRAIN_BIN CONFIG_DIR TEST_CONFIG_DIR MPIEXEC}
BIN=${2:?usage}; CONFIGS=${3:?usage}; TEST_CONFIGS=${4:?usage}; MPIEXEC=${5:-mpirun}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
if [ ! -x "$EMU" ]; then
  echo "emu_train: difftrain_emu was not built (no CUDA host emulator here): skipped"
  exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/difftrain-emu-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "emu_train: FAIL: $*" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
unset DT_EMU_DEVICES
MPI=("$MPIEXEC" --oversubscribe --bind-to none)
start=$(date +%s)

bash "$HERE/make_corpus.sh" 300 >"$tmp/corpus.txt"
"$BIN" data prepare --out "$tmp/data" --name p --split-on % --val-fraction 0.1 "$tmp/corpus.txt" \
  >/dev/null 2>&1 || fail "data prepare"
DATA=("data.train=$tmp/data/p_train_*.bin" "data.val=$tmp/data/p_val_000000.bin")
# tiny.yaml at 32 tokens: 2 micro-batches of 2 per step, validation after the last
TINY=("$CONFIGS/tiny.yaml" "${DATA[@]}" train.seq_len=32 train.micro_batch=2 train.global_batch=4
      train.steps=4 train.val_every=0 log.every=1)

run() { # run NAME BINARY [overrides...]: one rank; metrics, output and parameters under $tmp
  local name=$1 bin=$2
  shift 2
  "$bin" train "${TINY[@]}" "log.metrics=$tmp/$name.jsonl" --dump-params "$tmp/$name" "$@" \
    >"$tmp/$name.out" 2>&1 ||
    { local rc=$?; tail -30 "$tmp/$name.out"; fail "train $name exited $rc"; }
}
emu() { local name=$1; shift; run "$name" "$EMU" train.device=cuda "$@"; }
cpu() { local name=$1; shift; run "$name" "$BIN" train.device=cpu "$@"; }

match() { # match RUN REF [FIRST_STEP]: parameters, losses and gradient norms (compare_dumps.py)
  local first=${3:-1}
  "$PY" -c 'import json, sys
for l in open(sys.argv[1]):
    if json.loads(l)["step"] >= int(sys.argv[2]): print(l, end="")' "$tmp/$2.jsonl" "$first" \
    >"$tmp/$2.from$first.jsonl"
  "$PY" "$HERE/compare_dumps.py" "$tmp/$2" "$tmp/$1" "$tmp/$2.from$first.jsonl" "$tmp/$1.jsonl" \
    "  $1 vs $2" || fail "$1 does not match $2"
}

losses() { # losses RUN: its losses, exactly
  "$PY" -c 'import json, sys; [print(repr(json.loads(l)["loss"])) for l in open(sys.argv[1])]' \
    "$tmp/$1.jsonl"
}
same_bits() { # same_bits A B: losses and parameters bit for bit
  cmp -s <(losses "$1") <(losses "$2") || fail "$1 and $2: losses differ"
  cmp -s "$tmp/$1/params.bin" "$tmp/$2/params.bin" || fail "$1 and $2: parameters differ"
  echo "  $1 = $2 bit for bit"
}

near() { # near RUN REF RTOL FP32: every loss within RTOL of REF's, and not all equal to FP32's
  "$PY" - "$tmp/$1.jsonl" "$tmp/$2.jsonl" "$3" "$tmp/$4.jsonl" <<'PY' || fail "$1 vs $2"
import json, sys
def load(path):
    return {r["step"]: r["loss"] for r in map(json.loads, open(path))}
a, b, f, rtol = load(sys.argv[1]), load(sys.argv[2]), load(sys.argv[4]), float(sys.argv[3])
assert sorted(a) == sorted(b) == sorted(f), (sorted(a), sorted(b))
worst = max(abs(a[s] - b[s]) / abs(b[s]) for s in a)
names = [p.split("/")[-1] for p in sys.argv[1:3]]
print(f"  {names[0]} vs {names[1]}: losses within {worst:.1e} (rtol {rtol})")
assert worst <= rtol
assert a != f, "bf16 gives the fp32 losses: the bf16 products were not taken"
PY
}

echo "emu_train: one rank, emulated GPU against the CPU"
for arch in diff diff_v2 transformer; do
  cpu cpu_$arch model.arch=$arch
  emu gpu_$arch model.arch=$arch
  grep -q "backend cuda (cuda:0 difftrain host emulator" "$tmp/gpu_$arch.out" ||
    { head -40 "$tmp/gpu_$arch.out"; fail "gpu_$arch did not run on the emulated GPU"; }
  emu gpu2_$arch model.arch=$arch
  emu rec_$arch model.arch=$arch train.recompute=true
  emu bf16_$arch model.arch=$arch train.precision=bf16
  match gpu_$arch cpu_$arch
  same_bits gpu2_$arch gpu_$arch
  same_bits rec_$arch gpu_$arch
  near bf16_$arch cpu_$arch 1e-3 gpu_$arch
done

# the step's passes as a CUDA graph (DIFFTRAIN_CUDA_GRAPHS=1: step 1 eager, step 2 recorded and
# launched, steps 3-4 launched): the same bits as issuing them, in bf16 and with recomputation;
# the graph replays each step's own tokens (the losses differ from step to step as the issued
# run's do, and equal them)
echo "emu_train: the step as a CUDA graph"
for arch in diff diff_v2 transformer; do
  DIFFTRAIN_CUDA_GRAPHS=1 emu graph_$arch model.arch=$arch train.precision=bf16
  grep -q "CUDA graphs: 1 recording, 3 steps launched from one" "$tmp/graph_$arch.out" ||
    { tail -5 "$tmp/graph_$arch.out"; fail "graph_$arch: the steps were not launched as a graph"; }
  same_bits graph_$arch bf16_$arch
done
DIFFTRAIN_CUDA_GRAPHS=1 emu graph_rec model.arch=diff train.recompute=true
same_bits graph_rec gpu_diff
# a checkpoint saved after a launched step (3) resumes, with graphs again, to the bits of the
# uninterrupted run issued op by op
DIFFTRAIN_CUDA_GRAPHS=1 emu graph_half model.arch=diff train.precision=bf16 \
  checkpoint.dir="$tmp/ck_graph" checkpoint.every=3 --stop-after 3
DIFFTRAIN_CUDA_GRAPHS=1 emu graph_resumed model.arch=diff train.precision=bf16 \
  checkpoint.dir="$tmp/ck_graph"
cmp -s <(losses graph_resumed) <(losses bf16_diff | tail -1) &&
  cmp -s "$tmp/graph_resumed/params.bin" "$tmp/bf16_diff/params.bin" ||
  fail "graph_resumed: step 4 or the parameters differ from bf16_diff's"
echo "  graph_resumed (saved after a launched step) = bf16_diff bit for bit"
DIFFTRAIN_CUDA_GRAPHS=1 cpu graph_cpu model.arch=diff
grep -q "the cpu backend has no graphs" "$tmp/graph_cpu.out" || fail "graph_cpu: no note"
same_bits graph_cpu cpu_diff

# bf16 with head dims the fused tensor-core attention takes (model/cuda/flash_*.cu): diff at
# d = 64 (d_model 256, 2 DIFF heads) and the transformer at d = 128 (GQA: 2 q-heads, 1 kv-head)
# track the CPU in fp32 as the bf16 runs above do; with DIFFTRAIN_FLASH_DQ=recompute (dq
# recomputes the dS tiles that, by default at this size, dk/dv stores) they train bit for bit as
# without, and so they do with each forward's other kernel (DIFFTRAIN_FLASH_DIFF_FWD=branch,
# DIFFTRAIN_FLASH_FWD_ROWS=16)
for arch in diff transformer; do
  big=(model.arch=$arch model.d_model=256 model.n_heads=2 model.n_kv_heads=1 train.steps=2)
  cpu cpu_flash_$arch "${big[@]}"
  emu gpu_flash_$arch "${big[@]}"
  emu flash_$arch "${big[@]}" train.precision=bf16
  DIFFTRAIN_FLASH_DQ=recompute emu flash_dqrc_$arch "${big[@]}" train.precision=bf16
  near flash_$arch cpu_flash_$arch 1e-3 gpu_flash_$arch
  same_bits flash_dqrc_$arch flash_$arch
  # the sm_90 kernels, then with the forward on the warp-specialised (TMA) one
  DIFFTRAIN_FLASH_SM90=1 emu flash_sm90_$arch "${big[@]}" train.precision=bf16
  DIFFTRAIN_FLASH_SM90=1 DIFFTRAIN_FLASH_TMA=1 emu flash_tma_$arch "${big[@]}" \
    train.precision=bf16
  same_bits flash_tma_$arch flash_sm90_$arch
  near flash_sm90_$arch cpu_flash_$arch 1e-3 gpu_flash_$arch
  if [ $arch = diff ]; then
    DIFFTRAIN_FLASH_DIFF_FWD=branch emu flash_branch_$arch "${big[@]}" train.precision=bf16
    same_bits flash_branch_$arch flash_$arch
  else
    DIFFTRAIN_FLASH_FWD_ROWS=16 emu flash_rows16_$arch "${big[@]}" train.precision=bf16
    same_bits flash_rows16_$arch flash_$arch
  fi
  # dk/dv on the warp-specialised (TMA) kernel (DIFF's, the standard heads'): the mma.sync bits
  DIFFTRAIN_FLASH_TMA_BWD=1 emu flash_tmabwd_$arch "${big[@]}" train.precision=bf16
  same_bits flash_tmabwd_$arch flash_$arch
done

# the GPU reports: memory after the first step (once) against the plan, and MFU
n=$(grep -c "^memory: peak device memory" "$tmp/gpu_diff.out")
[ "$n" -eq 1 ] || { cat "$tmp/gpu_diff.out"; fail "$n memory reports, expected 1"; }
line=$(grep "^memory: peak device memory" "$tmp/gpu_diff.out")
echo "  $line"
pct=$(sed -E 's/.*\(([0-9.]+)% of the measured peak\).*/\1/' <<<"$line")
"$PY" -c "import sys; p=float('$pct'); sys.exit(0 if 90 <= p <= 110 else 1)" \
  || fail "plan predicts $pct% of the measured peak device memory (expected 90-110%)"
used=$(sed -nE 's/.*; ([0-9.]+) GiB in use on the device in all.*/\1/p' <<<"$line")
"$PY" -c "import sys; u=float('${used:-0}'); sys.exit(0 if 0 < u <= 80 else 1)" \
  || fail "no device memory in use reported (cudaMemGetInfo): '$used'"
grep -q "^memory:" "$tmp/cpu_diff.out" && fail "the CPU run reports device memory"
"$PY" - "$tmp/gpu_diff.jsonl" "$tmp/cpu_diff.jsonl" <<'PY' || fail "MFU"
import json, sys
g, c = ([json.loads(l) for l in open(f)] for f in sys.argv[1:3])
assert all(0 < r["mfu"] < 1e-3 for r in g), [r.get("mfu") for r in g]
assert not any("mfu" in r for r in c)
print(f"  MFU reported on the emulated GPU: {g[-1]['mfu']:.1e} of an H100")
PY

echo "emu_train: checkpoints across devices, eval"
emu g_half checkpoint.dir="$tmp/ck_g" checkpoint.every=2 --stop-after 2
cpu g_then_c checkpoint.dir="$tmp/ck_g"
match g_then_c cpu_diff 3
cpu c_half checkpoint.dir="$tmp/ck_c" checkpoint.every=2 --stop-after 2
emu c_then_g checkpoint.dir="$tmp/ck_c"
match c_then_g gpu_diff 3
ev() { # ev NAME BINARY DEVICE [overrides...]
  local name=$1 bin=$2 dev=$3
  shift 3
  "$bin" eval "${TINY[@]}" --checkpoint "$tmp/ck_g/step_00000002" --out "$tmp/$name.json" \
    train.device="$dev" "$@" >"$tmp/$name.out" 2>&1 || { cat "$tmp/$name.out"; fail "eval $name"; }
}
ev ev_cpu "$BIN" cpu
DT_EMU_REPORT=1 ev ev_gpu "$EMU" cuda
ev ev_bf16 "$EMU" cuda train.precision=bf16
grep -Eq "^emu: [1-9][0-9]* kernel launches" "$tmp/ev_gpu.out" ||
  { cat "$tmp/ev_gpu.out"; fail "eval did not run on the emulated GPU"; }
"$PY" - "$tmp/ev_cpu.json" "$tmp/ev_gpu.json" "$tmp/ev_bf16.json" <<'PY' || fail "eval GPU vs CPU"
import json, sys
c, g, b = (json.load(open(f)) for f in sys.argv[1:])
assert c["tokens"] == g["tokens"] == b["tokens"] > 0 and c["step"] == g["step"] == 2, (c, g)
rg, rb = abs(g["loss"] - c["loss"]) / c["loss"], abs(b["loss"] - c["loss"]) / c["loss"]
print(f"  eval loss cpu {c['loss']:.7f}, gpu {g['loss']:.7f} ({rg:.1e}), "
      f"bf16 {b['loss']:.7f} ({rb:.1e})")
assert rg <= 1e-5 and rb <= 1e-2
PY

echo "emu_train: tensor and data parallelism on emulated GPUs (mpirun, DT_EMU_DEVICES=4)"
PAR=("$TEST_CONFIGS/parallel/diff.yaml" "${DATA[@]}" train.steps=2
     train.device=cuda)
prun() { # prun NAME TP DP ZERO [overrides]: NP = TP x DP ranks; GRAPHS=1: the steps as graphs
  local name=$1 np=$(($2 * $3)) tp=$2 dp=$3 zero=$4
  shift 4
  timeout 120 "${MPI[@]}" -np "$np" -x DT_EMU_DEVICES=4 -x DIFFTRAIN_CUDA_GRAPHS="${GRAPHS:-0}" \
    "$EMU" train "${PAR[@]}" parallel.tp="$tp" parallel.dp="$dp" parallel.zero="$zero" "$@" \
    "log.metrics=$tmp/$name.jsonl" --dump-params "$tmp/$name" >"$tmp/$name.out" 2>&1 ||
    { local rc=$?; tail -30 "$tmp/$name.out"; fail "$name exited $rc"; }
}
"$EMU" train "${PAR[@]}" "log.metrics=$tmp/par1.jsonl" --dump-params "$tmp/par1" \
  >"$tmp/par1.out" 2>&1 || { rc=$?; tail -30 "$tmp/par1.out"; fail "par1 exited $rc"; }
for layout in "2 1 0" "1 2 1" "1 2 2" "2 2 1"; do
  set -- $layout
  name=tp$1_dp$2_zero$3
  prun "$name" "$@"
  grep -q "layout: $(($1 * $2)) ranks = tp $1 x dp $2, zero $3" "$tmp/$name.out" ||
    fail "$name: not the layout asked for"
  match "$name" par1
done

# the step as a graph on several ranks: the tensor-parallel all-reduces and the overlapped
# data-parallel reduction (ZeRO 1: reduce-scatter of the step's sum; ZeRO 2: of every
# micro-batch's) recorded with the passes; step 1 issued, 2 recorded, 3 and 4 launched
echo "emu_train: the step as a CUDA graph on several ranks (collectives recorded)"
for layout in "2 2 1" "1 2 2"; do
  set -- $layout
  name=tp$1_dp$2_zero$3
  prun "${name}_4" "$@" train.steps=4
  GRAPHS=1 prun "${name}_graph" "$@" train.steps=4
  grep -q "CUDA graphs (rank 0): 1 recording, 3 steps launched from one" "$tmp/${name}_graph.out" ||
    { tail -5 "$tmp/${name}_graph.out"; fail "${name}_graph: the steps were not launched"; }
  same_bits "${name}_graph" "${name}_4"
  match "${name}_graph" "${name}_4" # and the bytes moved: the analytic count at every step
done
# graphs asked for on the CPU: noted once a job, not once a rank
GRAPHS=1 prun dp2_cpu_graph 1 2 0 train.device=cpu
[ "$(grep -c "the cpu backend has no graphs" "$tmp/dp2_cpu_graph.out")" -eq 1 ] ||
  { cat "$tmp/dp2_cpu_graph.out"; fail "dp2_cpu_graph: the note on graphs not printed once"; }

# one emulated device and two ranks on this host: refused with one message; auto takes the GPU
timeout 60 "${MPI[@]}" -np 2 "$EMU" train "${PAR[@]}" >"$tmp/np2.out" 2>&1
rc=$?
[ $rc -eq 2 ] || { cat "$tmp/np2.out"; fail "two ranks on one emulated device: exit $rc, not 2"; }
[ "$(grep -c "error:" "$tmp/np2.out")" -eq 1 ] &&
  grep -q "runs 2 ranks but has 1 CUDA device" "$tmp/np2.out" ||
  { cat "$tmp/np2.out"; fail "two ranks on one emulated device: not one message on devices"; }
echo "  two ranks on one emulated device: exit 2, one message"
"$EMU" train "${TINY[@]}" train.steps=1 train.device=auto >"$tmp/auto.out" 2>&1 ||
  { cat "$tmp/auto.out"; fail "train.device=auto"; }
grep -q "backend cuda (cuda:0 difftrain host emulator" "$tmp/auto.out" ||
  fail "train.device=auto did not take the emulated GPU"
echo "emu_train: ok ($(( $(date +%s) - start )) s)"
