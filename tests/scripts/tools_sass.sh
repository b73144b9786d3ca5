#!/usr/bin/env bash
# tools/sass_loops.py on synthetic nvdisasm listings whose loops are known: branch targets
# decoded from the encodings (short and long, forward and back), a loop nested in the key loop,
# the innermost loop when two hold products, a diverged warp's fallback left out, an
# instruction without text counted, the kernel filter, and bad input. Then the --common cuts of
# tools/sass_loops.sh against the current sources, and, where nvcc and nvdisasm are at hand, the
# split DIFF forward's key loop at d = 96 (144 products).
# usage: tools_sass.sh REPO_DIR
set -u
repo=${1:?usage: tools_sass.sh REPO_DIR}
. "$(dirname "$0")/check_lib.sh"

# A listing in nvdisasm -c -hex's layout: each instruction a text line ending in its low word
# and a line with its high word; a BRA's word holds its target as 4-byte words from the next
# instruction, the low 8 bits at bit 16 and the rest from bit 34 on.
"$py" - "$tmp/k.sass" <<'EOF'
import sys

def words(addr, op):
    lo, hi = 0x000000000000794d, 0x000fea0003800000
    if 'BRA' in op and op.split()[-1].startswith('0x'):
        tgt = int(op.split()[-1], 16)
        w = (tgt - addr - 16) // 4
        up = (w >> 8) & ((1 << 48) - 1)
        lo = 0x947 | (w & 0xff) << 16 | (up & ((1 << 30) - 1)) << 34
        hi = (hi & ~((1 << 18) - 1)) | up >> 30
        op = ' '.join(op.split()[:-1]) + ' `(.L_x_%d)' % tgt
    return lo, hi, op

def kernel(name, prog):
    out = ['//--------------------- .text.%s --------------------------' % name,
           '\t.section\t.text.%s,"ax",@progbits' % name, '.text.%s:' % name]
    for addr, op in prog:
        lo, hi, op = words(addr, op)
        text = '        /*%04x*/                   %s ;' % (addr, op) if op else ''
        out.append('%-90s/* 0x%016x */' % (text, lo))
        out.append('%-90s/* 0x%016x */' % ('', hi))
    return '\n'.join(out) + '\n\n'

# alpha: the key loop 0x10..0x90 (9 instructions, 2 products) with a nested loop (0x30..0x50),
# a BRA.DIV whose fallback (0xb0, 0xc0) jumps back in, and one instruction without text (0x80)
alpha = [(0x00, 'MOV R1, R2'), (0x10, 'MOV R3, R4'), (0x20, 'HMMA.16816.F32.BF16 R4, R8, R12, R4'),
         (0x30, 'LDGSTS.E.BYPASS.128 [R5], [R6.64]'), (0x40, 'IADD3 R5, R5, 0x10, RZ'),
         (0x50, '@P0 BRA 0x30'), (0x60, 'HMMA.16816.F32.BF16 R4, R8, R14, R4'),
         (0x70, 'BRA.DIV UR4, 0xb0'), (0x80, ''), (0x90, '@P1 BRA 0x10'), (0xa0, 'EXIT'),
         (0xb0, 'SHFL.BFLY PT, R1, R2, 0x1, 0x1f'), (0xc0, 'BRA 0x80')]
# beta: a loop (0x00..0x30) around a loop (0x10, 0x20), both with products
mma = 'HMMA.16816.F32.BF16 R4, R8, R12, R4'
beta = [(0x00, mma), (0x10, mma), (0x20, '@P0 BRA 0x10'), (0x30, '@P1 BRA 0x0'), (0x40, 'EXIT')]
# gamma: a loop closed by a branch 12 KiB away and back (targets past bit 23 of the word)
gamma = [(0x0000, 'MOV R1, R2'), (0x0010, 'HMMA.16816.F32.BF16 R4, R8, R12, R4'),
         (0x0020, '@P0 BRA 0x3000'), (0x0030, 'EXIT'), (0x3000, 'NOP'), (0x3010, 'BRA 0x10')]
# delta: a loop without products
delta = [(0x00, 'IADD3 R1, R1, 0x1, RZ'), (0x10, '@P0 BRA 0x0'), (0x20, 'EXIT')]
open(sys.argv[1], 'w').write('\t.headerflags\t@"EF_CUDA_SM90"\n\n' + kernel('_Z5alphav', alpha) +
                             kernel('_Z4betav', beta) + kernel('_Z5gammav', gamma) +
                             kernel('_Z5deltav', delta))
EOF

"$py" "$repo/tools/sass_loops.py" "$tmp/k.sass" --top 3 --dump "$tmp/dump" >"$tmp/all.out" 2>&1 ||
    bad "sass_loops exited $?"
cat "$tmp/all.out"
has "$tmp/all.out" "_Z5alphav: loop of 9 instructions, HMMA 2 (22.2%), nested loops [3]"
has "$tmp/all.out" "    BRA 3 HMMA 2 MOV 1"
has "$tmp/all.out" "_Z4betav: loop of 2 instructions, HMMA 1 (50.0%), nested loops []"
has "$tmp/all.out" "_Z5gammav: loop of 4 instructions, HMMA 1 (25.0%), nested loops []"
grep -q "_Z5deltav" "$tmp/all.out" && bad "a loop without products was reported"
[ "$(grep -c ': loop of' "$tmp/all.out")" = 3 ] || bad "expected 3 loops"
has "$tmp/dump" "00080 UNDECODED"
has "$tmp/dump" "03010 BRA"
grep -q "SHFL" "$tmp/dump" && bad "the fallback of a diverged warp was counted in a loop"

"$py" "$repo/tools/sass_loops.py" "$tmp/k.sass" --kernel delta --op IADD3 >"$tmp/op.out" 2>&1 ||
    bad "--op exited $?"
has "$tmp/op.out" "_Z5deltav: loop of 2 instructions, IADD3 1 (50.0%), nested loops []"
[ "$(grep -c ': loop of' "$tmp/op.out")" = 1 ] || bad "--kernel delta: expected 1 loop"

"$py" "$repo/tools/sass_loops.py" "$tmp/k.sass" --kernel epsilon >"$tmp/none.out" 2>&1 &&
    bad "an unknown kernel exited 0"
has "$tmp/none.out" "no kernel named *epsilon*"
"$py" "$repo/tools/sass_loops.py" "$tmp/missing.sass" >"$tmp/miss.out" 2>&1 &&
    bad "a missing listing exited 0"
has "$tmp/miss.out" "missing.sass"

# the common-path cuts still match the sources they cut
bash "$repo/tools/sass_loops.sh" --common --cuts-only >"$tmp/cuts.out" 2>&1 ||
    { cat "$tmp/cuts.out"; bad "sass_loops.sh --common: a cut no longer matches"; }

# the real kernels, where there is a disassembler
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
dis=${NVDISASM:-$(dirname "$nvcc")/nvdisasm}
if [ -x "$nvcc" ] && [ -x "$dis" ]; then
    NVDISASM=$dis bash "$repo/tools/sass_loops.sh" --top 0 flash_forward_diff.cu \
        >"$tmp/real.out" 2>&1 || bad "sass_loops.sh exited $?"
    cat "$tmp/real.out"
    has "$tmp/real.out" "flash_forward_diff_split_kernelItLi96: loop of"
    grep -q "flash_forward_diff_split_kernelItLi96: .*HMMA 144 " "$tmp/real.out" ||
        bad "the split DIFF forward's key loop at d = 96 holds 144 products"
else
    echo "-- no nvcc and nvdisasm (NVDISASM): the real kernels' listing is not checked"
fi

finish tools_sass
