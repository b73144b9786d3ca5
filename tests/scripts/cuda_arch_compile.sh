#!/usr/bin/env bash
# The CUDA backend's device code compiled for another GPU than the build's (an A100: sm_80), so
# that the kernels other GPUs run, and the guards that keep the sm_90 instructions (wgmma, bulk
# copies) out of their code, cannot rot unseen: every model/cuda/*.cu, with the build's warning
# flags and warnings as errors, compiled (not linked) for ARCH. 77 without nvcc.
#
# usage: cuda_arch_compile.sh NVCC ARCH   (ARCH: a compute capability, e.g. 80)
set -u
NVCC=${1:?usage: cuda_arch_compile.sh NVCC ARCH}
ARCH=${2:?usage: cuda_arch_compile.sh NVCC ARCH}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
[ -x "$NVCC" ] || { echo "cuda_arch_compile: no nvcc ($NVCC): skipped"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/difftrain-sm$ARCH-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
compile() { # one source; its diagnostics into $tmp/NAME.log
  local name
  name=$(basename "$1" .cu)
  "$NVCC" -std=c++17 -O3 -arch="sm_$ARCH" --expt-relaxed-constexpr -Xcompiler=-Wall,-Wextra \
    -Werror=all-warnings -Xcompiler=-Werror -I"$ROOT" -c "$1" -o "$tmp/$name.o" \
    >"$tmp/$name.log" 2>&1 || { echo "FAIL $1"; cat "$tmp/$name.log"; return 1; }
}
export -f compile
export NVCC ARCH ROOT tmp
n=$(ls "$ROOT"/model/cuda/*.cu | wc -l)
if ! ls "$ROOT"/model/cuda/*.cu | xargs -P "$(nproc)" -I{} bash -c 'compile "$1"' _ {}; then
  echo "cuda_arch_compile: FAIL: model/cuda does not compile for sm_$ARCH"
  exit 1
fi
[ "$(ls "$tmp"/*.o | wc -l)" -eq "$n" ] || { echo "cuda_arch_compile: FAIL: objects missing"; exit 1; }
echo "cuda_arch_compile: all $n sources of model/cuda compile for sm_$ARCH"
