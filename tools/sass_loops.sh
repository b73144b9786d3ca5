#!/bin/bash
# What the fused attention kernels' loops issue per iteration, from their SASS (no GPU needed):
#
#   bash tools/sass_loops.sh [--common [--cuts-only]] [--top N] [SOURCE.cu ...]
#
# Compiles each source (default: the mma.sync forward and backward of model/cuda) to a cubin for
# SASS_ARCH (default sm_90a) with the build's device flags, disassembles it and runs
# tools/sass_loops.py on it: per bf16 kernel instantiation, the loops that hold tensor-core
# products, their instructions, the products' share and the loops nested in them.
#
# --common compiles a copy of model/cuda cut down to the key loop's common path: whole tiles
# (flash_stage's and flash_tile_stager's row compares gone), no causal mask in the forward's
# softmax, O always rescaled. Every path of a loop body counts once in sass_loops.py, so this is
# the way to read the instructions of one ordinary iteration of a forward kernel (the backward's
# masks are not cut). --cuts-only stops after checking that every cut still matches the sources
# (tests/scripts/tools_sass.sh).
#
# nvdisasm: $NVDISASM, else the one beside nvcc. An older one (Debian bookworm's
# nvidia-cuda-toolkit 11.8, non-free) rejects CUDA 13's cubins for their newer ELF header
# ("does not contain Cuda architecture information"); this script then retries on a copy whose
# header is rewritten to the older layout (ABI version 7, the same architecture): the
# instructions are the same, and the few encodings it does not know count as UNDECODED.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
common=0
cuts_only=0
top=12
srcs=()
while [ $# -gt 0 ]; do
    case "$1" in
    --common) common=1 ;;
    --cuts-only) cuts_only=1 ;;
    --top) top=$2; shift ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "sass_loops.sh: unknown option $1" >&2; exit 2 ;;
    *) srcs+=("$1") ;;
    esac
    shift
done
[ ${#srcs[@]} -gt 0 ] || srcs=(flash_forward_diff.cu flash_forward_rows32.cu flash_forward.cu
                                flash_dkdv_diff.cu flash_dq_diff.cu flash_backward.cu)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$here
if [ $common = 1 ]; then
    mkdir -p "$work/src/model"
    cp -r "$here/model/cuda" "$work/src/model/"
    cut() { # FILE PERL-EXPR: a cut that must match, or the sources moved on from this script
        local before
        before=$(md5sum < "$1")
        perl -0pi -e "$2" "$1"
        [ "$(md5sum < "$1")" != "$before" ] ||
            { echo "sass_loops.sh: --common: no match in ${1#$work/src/} for $2" >&2; exit 2; }
    }
    c=$work/src/model/cuda
    whole='if \(n_valid >= FLASH_BC\) \{' # the test for a tile without rows past T
    cut "$c/flash_core.cuh" "s/(flash_stage\\(.*?)else $whole/\\1else if (true) {/s"
    cut "$c/flash_core.cuh" "s/(struct flash_tile_stager.*?)$whole/\\1if (true) {/s"
    cut "$c/flash_forward.cuh" 's/if \(__all_sync\(0xffffffffu, corr\[0\] == 1\.0f.*?return;//'
    cut "$c/flash_forward.cuh" 's/if \(diag\)(\n\s*flash_softmax_rows<true,)/if (false)$1/'
    root=$work/src
fi
[ $cuts_only = 0 ] || exit 0
arch=${SASS_ARCH:-sm_90a}
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
[ -x "$nvcc" ] || { echo "sass_loops.sh: no nvcc (PATH, /usr/local/cuda/bin)" >&2; exit 2; }
dis=${NVDISASM:-$(dirname "$nvcc")/nvdisasm}
[ -x "$dis" ] || { echo "sass_loops.sh: no nvdisasm at $dis (set NVDISASM)" >&2; exit 2; }

# the device flags of CMakeLists.txt's CUDA build for an sm_90a target
defs=()
[[ $arch == sm_90a ]] && defs=(-DDT_CUDA_SM90A=1)
for s in "${srcs[@]}"; do
    f=$root/model/cuda/$(basename "$s")
    [ -f "$f" ] || { echo "sass_loops.sh: no such source: ${f#$root/}" >&2; exit 2; }
    "$nvcc" -O3 -cubin -arch="$arch" "${defs[@]}" --expt-relaxed-constexpr -I"$root" \
        "$f" -o "$work/k.cubin"
    if ! "$dis" -c -hex "$work/k.cubin" > "$work/k.sass" 2> "$work/dis.err"; then
        grep -q "architecture information" "$work/dis.err" || { cat "$work/dis.err" >&2; exit 2; }
        # the older header: e_ident ABI version 7, e_flags sm | 0x500 (64-bit addresses, unified
        # texture mode) | virtual sm << 16, where CUDA 13 writes version 8 and sm << 8
        /usr/bin/python3 - "$work/k.cubin" <<'EOF'
import struct, sys
d = bytearray(open(sys.argv[1], 'rb').read())
if d[:4] != b'\x7fELF' or d[8] != 8:
    sys.exit('sass_loops.sh: %s: not a CUDA 13 cubin (ELF ABI version %d)' % (sys.argv[1], d[8]))
sm = (struct.unpack_from('<I', d, 48)[0] >> 8) & 0xff
d[8] = 7
struct.pack_into('<I', d, 48, sm | 0x500 | sm << 16)
open(sys.argv[1], 'wb').write(d)
EOF
        "$dis" -c -hex "$work/k.cubin" > "$work/k.sass"
    fi
    echo "== model/cuda/$(basename "$s") ($arch$([ $common = 1 ] && echo ', common path'))"
    /usr/bin/python3 "$here/tools/sass_loops.py" "$work/k.sass" --kernel kernelIt --top "$top" |
        sed -E 's/^_Z[0-9]+//; s/EEv[^:]*:/:/'
done
