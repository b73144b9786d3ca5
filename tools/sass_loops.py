#!/usr/bin/python3
"""The loops of CUDA kernels in a SASS listing, and what each of their iterations issues.

Input: the output of `nvdisasm -c -hex` (one instruction per line with its low 64-bit word as
`/* 0x... */`, the high word on the next line), a file or `-` for standard input.

For each kernel (each `.text.` section, or those whose mangled name contains --kernel), the
control flow graph is built from the branch encodings (a BRA's target is decoded from its
instruction word: nvdisasm leaves some labels out), taking the fall-through of BRA.DIV (its
target is the fallback of a diverged warp). Every strongly connected part of the graph that
holds at least one --op instruction (HMMA: the tensor-core products) is a loop, and the loops
nested in it are the parts left once the edges into its entry blocks are cut. For each innermost
loop that holds --op (the key loop of an attention kernel) it prints the number of instructions
(every path of the body counted once), the share of --op, and the sizes of the loops nested in
it (which run several times an iteration: the tile staging's). With --top N the N most frequent
opcodes follow, with --dump FILE the loop's instructions go to FILE.

Instructions that the disassembler prints without text (newer encodings than it knows) count
as UNDECODED.

Usage: tools/sass_loops.py LISTING [--kernel SUBSTR] [--op HMMA] [--top N] [--dump FILE]
tools/sass_loops.sh builds and disassembles the fused attention kernels and runs this.
"""
import argparse
import collections
import re
import sys

INSN = re.compile(r'\s*/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z0-9_.]+)')
WORD = re.compile(r'/\* 0x([0-9a-f]{16}) \*/')
ENDS_BLOCK = ('BRA', 'EXIT', 'RET', 'BRX', 'JMP')


def bra_target(addr, lo, hi):
    """The address a BRA at addr jumps to: a signed count of 4-byte words from the next
    instruction, bits 16-23 of the 128-bit word and the rest from bit 34 on."""
    up = ((lo | hi << 64) >> 34) & ((1 << 48) - 1)
    if up >> 47:
        up -= 1 << 48
    return addr + 16 + 4 * (((lo >> 16) & 0xff) | (up << 8))


def parse(lines):
    """[(addr, opcode, full mnemonic, predicate, branch target or None)] of one kernel"""
    ins, i = [], 0
    while i < len(lines):
        w = WORD.search(lines[i])
        if not w or i + 1 >= len(lines):
            i += 1
            continue
        w2 = WORD.search(lines[i + 1])
        if not w2:
            i += 1
            continue
        lo, hi = int(w.group(1), 16), int(w2.group(1), 16)
        m = INSN.match(lines[i])
        if m:
            addr, full, pred = int(m.group(1), 16), m.group(3), m.group(2)
        elif ins:
            addr, full, pred = ins[-1][0] + 16, 'UNDECODED', None
        else:
            i += 2
            continue
        op = full.split('.')[0]
        tgt = bra_target(addr, lo, hi) if op == 'BRA' else None
        ins.append((addr, op, full, pred, tgt))
        i += 2
    return ins


def sccs(nodes, succ):
    """The strongly connected parts with a cycle (Tarjan's, iterative)"""
    index, low, on, stack, out = {}, {}, set(), [], []
    for root in nodes:
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        work = [(root, iter(succ(root)))]
        while work:
            v, it = work[-1]
            nxt = None
            for w in it:
                if w not in index:
                    nxt = w
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            if nxt is not None:
                index[nxt] = low[nxt] = len(index)
                stack.append(nxt)
                on.add(nxt)
                work.append((nxt, iter(succ(nxt))))
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                if len(comp) > 1 or v in succ(v):
                    out.append(comp)
    return out


def kernel_loops(ins, op):
    """[(instructions of the loop, Counter of its opcodes, sizes of its nested loops)] for the
    loops of one kernel that hold op"""
    at = {x[0]: k for k, x in enumerate(ins)}
    starts = {0}
    for k, (_, opc, _, _, tgt) in enumerate(ins):
        if tgt in at:
            starts.add(at[tgt])
        if opc in ENDS_BLOCK and k + 1 < len(ins):
            starts.add(k + 1)
    starts = sorted(starts)
    bid = {s: i for i, s in enumerate(starts)}
    blocks = [(s, starts[i + 1] if i + 1 < len(starts) else len(ins))
              for i, s in enumerate(starts)]
    succ = collections.defaultdict(set)
    for i, (_, e) in enumerate(blocks):
        _, opc, full, pred, tgt = ins[e - 1]
        if opc == 'BRA' and full != 'BRA.DIV' and tgt in at:
            succ[i].add(bid[at[tgt]])
        taken_always = opc in ENDS_BLOCK and not pred and full != 'BRA.DIV'
        if not taken_always and i + 1 < len(blocks):
            succ[i].add(i + 1)
    reach, todo = {0}, [0]
    while todo:
        for v in succ[todo.pop()]:
            if v not in reach:
                reach.add(v)
                todo.append(v)
    preds = collections.defaultdict(set)
    for u in reach:
        for v in succ[u]:
            preds[v].add(u)

    def body(comp):
        return [ins[k] for b in sorted(comp) for k in range(*blocks[b])]

    def innermost(comps):
        """the loops holding op with no loop holding op nested in them"""
        out = []
        for comp in comps:
            if not any(x[1] == op for x in body(comp)):
                continue
            entries = {v for v in comp if v == 0 or any(p not in comp for p in preds[v])}
            inner = sccs(sorted(comp), lambda v: [w for w in sorted(succ[v])
                                                 if w in comp and w not in entries])
            deeper = innermost(inner)
            if deeper:
                out += deeper
                continue
            b = body(comp)
            out.append((b, collections.Counter(x[1] for x in b), [len(body(c)) for c in inner]))
        return out

    return innermost(sccs(sorted(reach), lambda v: sorted(succ[v])))


def kernels(text):
    """(name, lines) of each kernel in a listing"""
    for part in re.split(r'\n(?=\.text\.)', text):
        head = part.split('\n', 1)[0]
        if not head.startswith('.text.'):
            continue
        name = head[len('.text.'):].rstrip(':')
        yield name, part.split('\n\t.section', 1)[0].split('\n')


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('listing')
    ap.add_argument('--kernel', default='', help='only kernels whose name contains this')
    ap.add_argument('--op', default='HMMA', help='the opcode that marks a loop (HMMA)')
    ap.add_argument('--top', type=int, default=0, help='print the N most frequent opcodes')
    ap.add_argument('--dump', help='write the loops\' instructions to this file')
    a = ap.parse_args(argv)
    try:
        text = sys.stdin.read() if a.listing == '-' else open(a.listing).read()
    except OSError as e:
        sys.exit('sass_loops: %s' % e)
    dump = open(a.dump, 'w') if a.dump else None
    found = 0
    for name, lines in kernels(text):
        if a.kernel not in name:
            continue
        found += 1
        for b, count, nested in kernel_loops(parse(lines), a.op):
            n = len(b)
            print('%s: loop of %d instructions, %s %d (%.1f%%), nested loops %s' %
                  (name, n, a.op, count[a.op], 100.0 * count[a.op] / n, nested))
            if a.top:
                print('    ' + ' '.join('%s %d' % kv for kv in count.most_common(a.top)))
            if dump:
                dump.write('# %s\n' % name)
                dump.writelines('%05x %s\n' % (x[0], x[2]) for x in b)
    if not found:
        sys.exit('sass_loops: %s: no kernel%s' %
                 (a.listing, ' named *%s*' % a.kernel if a.kernel else ''))


if __name__ == '__main__':
    main(sys.argv[1:])
