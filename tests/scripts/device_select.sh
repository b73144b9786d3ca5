#!/usr/bin/env bash
# train.device and train.precision on a machine without a usable GPU (this one, and CI):
# - train.device cpu and auto train on the CPU backend, and the banner says so;
# - train.device cuda exits 2 with one message naming the key and the reason (a build without a
#   GPU path, or no usable device), on one rank and under mpirun on two;
# - train.precision bf16 exits 2 naming the key (the CPU backend trains in fp32);
# - eval chooses its device the same way: cuda and bf16 exit 2 with the same messages.
# On a machine with a GPU the last two do not apply: the script reports skipped (77) for them
# after the CPU checks (tests/scripts/gpu_train.sh covers the GPU).
#
# usage: device_select.sh DIFFTRAIN_BIN CONFIG_DIR
set -u
BIN=${1:?usage: device_select.sh DIFFTRAIN_BIN CONFIG_DIR}
CONFIGS=${2:?usage: device_select.sh DIFFTRAIN_BIN CONFIG_DIR}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/difftrain-device-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "device_select: FAIL: $*" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1

bash "$(dirname "$0")/make_corpus.sh" >"$tmp/corpus.txt"
"$BIN" data prepare --out "$tmp/data" --name tiny --split-on % --val-fraction 0.1 "$tmp/corpus.txt" \
  >/dev/null 2>&1 || fail "data prepare"
common=("$CONFIGS/tiny.yaml" "data.train=$tmp/data/tiny_train_*.bin"
        "data.val=$tmp/data/tiny_val_000000.bin" train.steps=2 train.val_every=0)

"$BIN" train "${common[@]}" train.device=cpu >"$tmp/cpu.out" 2>&1 || { cat "$tmp/cpu.out"; fail "train.device=cpu"; }
grep -q "backend cpu (cpu)" "$tmp/cpu.out" || fail "train.device=cpu: the banner does not name the CPU backend"

"$BIN" train "${common[@]}" train.device=auto >"$tmp/auto.out" 2>&1 || { cat "$tmp/auto.out"; fail "train.device=auto"; }
if ! grep -q "backend cpu (cpu)" "$tmp/auto.out"; then
  grep "^difftrain:" "$tmp/auto.out"
  echo "device_select: a usable GPU is present: the no-GPU checks do not apply (skipped)"
  exit 77
fi

expect_exit2() { # NAME PATTERN COMMAND...: exits 2, one error line, matching PATTERN
  local name=$1 pattern=$2
  shift 2
  "$@" >"$tmp/$name.out" 2>"$tmp/$name.err"
  local rc=$?
  [ $rc -eq 2 ] || { cat "$tmp/$name.out" "$tmp/$name.err"; fail "$name: exit $rc, expected 2"; }
  local n
  n=$(grep -c "error:" "$tmp/$name.err")
  [ "$n" -eq 1 ] || { cat "$tmp/$name.err"; fail "$name: $n error lines, expected exactly 1"; }
  grep -Eq "$pattern" "$tmp/$name.err" || { cat "$tmp/$name.err"; fail "$name: the message does not match '$pattern'"; }
}

gpu_reason='train\.device: cuda, but (this build of difftrain has no GPU path|rank 0 on host .* sees no usable CUDA device)'
expect_exit2 cuda "tiny\.yaml: $gpu_reason" "$BIN" train "${common[@]}" train.device=cuda
expect_exit2 cuda_np2 "$gpu_reason" mpirun -np 2 "$BIN" train "${common[@]}" train.device=cuda
expect_exit2 bf16 "tiny\.yaml: train\.precision: bf16 needs the GPU backend" \
  "$BIN" train "${common[@]}" train.precision=bf16
expect_exit2 bf16_cpu "train\.device cpu" "$BIN" train "${common[@]}" train.precision=bf16 train.device=cpu
# eval takes its device the same way (before it looks at the checkpoint)
expect_exit2 eval_cuda "tiny\.yaml: $gpu_reason" "$BIN" eval "${common[@]}" --checkpoint "$tmp/none" train.device=cuda
expect_exit2 eval_bf16 "train\.precision: bf16 needs the GPU backend" \
  "$BIN" eval "${common[@]}" --checkpoint "$tmp/none" train.precision=bf16
echo "device_select: cpu/auto train on the CPU; cuda and bf16 exit 2 with one message each (train, eval)"
