#!/usr/bin/env python3
"""Checks that ptxas gave every kernel using setmaxnreg the registers its warpgroups count on,
and that no function of the source spills.

A kernel that moves registers between warpgroups with setmaxnreg starts each thread with the
count ptxas chose for it, and the block's pool is that count times the threads. The kernels here
(and the emulator's model of setmaxnreg, tests/emu/emu_rt.cpp) assume the pool of a block launched
at one block per SM: __launch_bounds__(T, 1) and 65,536 / T registers a thread, rounded down to a
multiple of 8 (168 at 384 threads). If ptxas chose fewer, the consumers' setmaxnreg.inc would wait
for ever on a GPU. From the PTX of a source (.maxntid, .minnctapersm, setmaxnreg in each .entry)
and ptxas -v's log of its compilation ("Used N registers" per entry function), each kernel with
setmaxnreg must have launch bounds of one block per SM and exactly that count. Those kernels are
written to their consumers' 240 registers, and a change that pushes one over (wgmma descriptors
hoisted out of a loop, say) shows only as a spill ("N bytes spill stores, M bytes spill loads" in
the log's "Function properties" of a function): any spill in the log fails too.

usage: setmaxnreg_pool.py PTX PTXAS_LOG   (exit 1 with a line per kernel that does not)
"""
import re
import sys


def entries(ptx):
    """{name: (maxntid threads or None, minnctapersm or None, uses setmaxnreg)} of the PTX."""
    out = {}
    for m in re.finditer(r'\.entry\s+(\w+)', ptx):
        name = m.group(1)
        nxt = ptx.find('.entry', m.end())
        body = ptx[m.end():nxt if nxt >= 0 else len(ptx)]
        head = body[:body.find('{')] if '{' in body else body
        ntid = re.search(r'\.maxntid\s+(\d+)\s*,\s*(\d+)\s*,\s*(\d+)', head)
        ctas = re.search(r'\.minnctapersm\s+(\d+)', head)
        threads = int(ntid.group(1)) * int(ntid.group(2)) * int(ntid.group(3)) if ntid else None
        out[name] = (threads, int(ctas.group(1)) if ctas else None, 'setmaxnreg' in body)
    return out


def by_function(log, header, figure):
    """[(function, match)] of ptxas -v's output: for each line matching the regex `header`, whose
    group 1 names a function, the first line after it that matches `figure`."""
    out, name = [], None
    for line in log.splitlines():
        m = re.search(header, line)
        if m:
            name = m.group(1)
            continue
        m = re.search(figure, line)
        if m and name:
            out.append((name, m))
            name = None
    return out


def registers(log):
    """{entry function: registers a thread} from ptxas -v's output."""
    return {name: int(m.group(1)) for name, m in
            by_function(log, r"Compiling entry function '(\w+)'", r'Used (\d+) registers')}


def spills(log):
    """[(function, stores, loads)] of ptxas -v's output, for the functions that spill."""
    found = by_function(log, r'Function properties for (\S+)',
                        r'(\d+) bytes spill stores, (\d+) bytes spill loads')
    return [(name, int(m.group(1)), int(m.group(2))) for name, m in found
            if int(m.group(1)) or int(m.group(2))]


def main():
    if len(sys.argv) != 3:
        sys.exit('usage: setmaxnreg_pool.py PTX PTXAS_LOG')
    ptx = open(sys.argv[1]).read()
    log = open(sys.argv[2]).read()
    regs = registers(log)
    bad, checked = [], 0
    for name, (threads, ctas, uses) in sorted(entries(ptx).items()):
        if not uses:
            continue
        checked += 1
        if threads is None or ctas != 1:
            bad.append('%s: setmaxnreg without __launch_bounds__(threads, 1) (.maxntid %s, '
                       '.minnctapersm %s)' % (name, threads, ctas))
            continue
        want = min(65536 // threads // 8 * 8, 256)
        got = regs.get(name)
        if got != want:
            bad.append('%s: ptxas gave %s registers a thread, the pool of %d threads at one block '
                       'per SM is %d a thread: its setmaxnreg.inc would wait for ever'
                       % (name, got, threads, want))
    for name, stores, loads in spills(log):
        bad.append('%s: spills (%d bytes of stores, %d of loads)' % (name, stores, loads))
    for b in bad:
        print('setmaxnreg_pool: FAIL ' + b)
    if not checked:
        print('setmaxnreg_pool: FAIL no kernel of %s uses setmaxnreg' % sys.argv[1])
        return 1
    print('setmaxnreg_pool: %d kernels with setmaxnreg, %d problems' % (checked, len(bad)))
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
