#!/usr/bin/env bash
# The CUDA backend's device code compiled for another GPU than the build's (an A100: sm_80), so
# that the kernels other GPUs run, and the guards that keep the sm_90 instructions (wgmma, bulk
# copies) out of their code, cannot rot unseen: every model/cuda/*.cu, with the build's warning
# flags and warnings as errors, compiled (not linked) for ARCH. 77 without nvcc.
# With a PATTERN, only the sources that contain it (grep -l). On sm_90a it also fails where ptxas
# serialises a kernel's wgmma products (its performance advisories "wgmma.mma_async instructions
# are serialized ...", which are not warnings: nvcc's -Werror lets them pass; C7520 for a branch
# it cannot prove warp-uniform, C7512 for too few registers, and others), since such a kernel
# computes the right result at a fraction of the speed and only a benchmark on a GPU would tell;
# and where a kernel moves registers between warpgroups with setmaxnreg, ptxas must have given it
# the pool its warpgroups count on (else a setmaxnreg.inc hangs on a GPU), and no function of its
# source may spill (setmaxnreg_pool.py checks both).
#
# usage: cuda_arch_compile.sh NVCC ARCH [PATTERN]   (ARCH: a compute capability, e.g. 80, 90a)
set -u
NVCC=${1:?usage: cuda_arch_compile.sh NVCC ARCH}
ARCH=${2:?usage: cuda_arch_compile.sh NVCC ARCH}
PATTERN=${3:-}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
[ -x "$NVCC" ] || { echo "cuda_arch_compile: no nvcc ($NVCC): skipped"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/difftrain-sm$ARCH-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
compile() { # one source; its diagnostics into $tmp/NAME.log
  local name extra=()
  name=$(basename "$1" .cu)
  if [ "$ARCH" = 90a ] && grep -q "setmaxnreg_" "$1"; then # its PTX and registers, for the pool
    mkdir -p "$tmp/keep_$name"
    extra=(-Xptxas -v --keep --keep-dir "$tmp/keep_$name")
  fi
  "$NVCC" -std=c++17 -O3 -arch="sm_$ARCH" --expt-relaxed-constexpr -Xcompiler=-Wall,-Wextra \
    -Werror=all-warnings -Xcompiler=-Werror -I"$ROOT" -c "$1" -o "$tmp/$name.o" "${extra[@]}" \
    >"$tmp/$name.log" 2>&1 || { echo "FAIL $1"; cat "$tmp/$name.log"; return 1; }
  if [ ${#extra[@]} -gt 0 ]; then
    python3 "$ROOT/tests/scripts/setmaxnreg_pool.py" "$tmp/keep_$name/$name.compute_90a.ptx" \
      "$tmp/$name.log" || { echo "FAIL $1: the registers of its warp-specialised kernels"; return 1; }
  fi
}
export -f compile
export NVCC ARCH ROOT tmp
if [ -n "$PATTERN" ]; then
  grep -l -- "$PATTERN" "$ROOT"/model/cuda/*.cu >"$tmp/sources" || true
  what="the $(wc -l <"$tmp/sources") sources of model/cuda with '$PATTERN'"
else
  ls "$ROOT"/model/cuda/*.cu >"$tmp/sources"
  what="all $(wc -l <"$tmp/sources") sources of model/cuda"
fi
n=$(wc -l <"$tmp/sources")
[ "$n" -gt 0 ] || { echo "cuda_arch_compile: FAIL: no source of model/cuda has '$PATTERN'"; exit 1; }
if ! xargs -P "$(nproc)" -I{} bash -c 'compile "$1"' _ {} <"$tmp/sources"; then
  echo "cuda_arch_compile: FAIL: model/cuda does not compile for sm_$ARCH"
  exit 1
fi
[ "$(ls "$tmp"/*.o | wc -l)" -eq "$n" ] || { echo "cuda_arch_compile: FAIL: objects missing"; exit 1; }
if grep -H "wgmma.mma_async instructions are serialized" "$tmp"/*.log; then
  echo "cuda_arch_compile: FAIL: ptxas serialises the wgmma products of the kernels above (C7520:"
  echo "  a branch on a value it cannot prove warp-uniform, warp_index() in cuda_common.cuh;"
  echo "  C7512: more registers than setmaxnreg or the launch bounds give)"
  exit 1
fi
echo "cuda_arch_compile: $what compile for sm_$ARCH"
