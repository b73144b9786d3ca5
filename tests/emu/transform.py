#!/usr/bin/env python3
"""Rewrites one CUDA source (model/cuda/*.cu or *.cuh) into C++ for the CUDA host emulator
(tests/emu; a test tool, see include/cuda_runtime.h). Usage: transform.py IN OUT

  kernel<<<grid, block[, smem[, stream]]>>>(args)
      -> emu_launch(kernel, "kernel", dim3(grid), dim3(block), (size_t)(smem),
                    (cudaStream_t)(stream), typename emu_kernel_args<decltype(kernel)>::type(args))
      (kernel may also be a variable holding a pointer to a kernel, e.g. a template's instance;
      `typename`: the launch may sit in a template)
  extern __shared__ T name[];      -> EMU_DYN_SHARED(T, name);
  __shared__ T name[dims];         -> EMU_SHARED(T, name, [dims]);
  #pragma unroll                   -> (removed: g++ would warn about an unknown pragma)

Comments and string literals are left alone. Line numbers are kept (a #line directive names
the original file), so compiler messages, __FILE__/__LINE__ in CUDA_CHECK and the emulator's
barrier reports point at the .cu source. Anything else CUDA-specific that remains (a template
launch, a __shared__ declaration of another form) is an error here, not a silent miscompile.
"""
import re
import sys


def code_mask(s):
    """s with comments and string/char literals blanked (newlines kept): positions match s."""
    out = list(s)
    i, n = 0, len(s)
    while i < n:
        if s.startswith('//', i):
            j = s.find('\n', i)
            j = n if j < 0 else j
        elif s.startswith('/*', i):
            j = s.find('*/', i + 2)
            j = n if j < 0 else j + 2
        elif s[i] in '"\'':
            j = i + 1
            while j < n and s[j] != s[i]:
                j += 2 if s[j] == '\\' else 1
            j += 1
        else:
            i += 1
            continue
        for k in range(i, min(j, n)):
            if out[k] != '\n':
                out[k] = ' '
        i = j
    return ''.join(out)


def split_top(s):
    """Splits s at the commas outside parentheses, brackets and braces."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        if ch in '([{':
            depth += 1
        elif ch in ')]}':
            depth -= 1
        elif ch == ',' and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return [p.strip() for p in parts]


def matching_paren(m, i):
    """Index of the ')' closing the '(' at m[i]."""
    depth = 0
    for j in range(i, len(m)):
        if m[j] == '(':
            depth += 1
        elif m[j] == ')':
            depth -= 1
            if depth == 0:
                return j
    raise ValueError('unbalanced parentheses')


def newlines(s):
    return '\n' * s.count('\n')


def fail(path, src, pos, what):
    line = src.count('\n', 0, pos) + 1
    sys.exit('%s:%d: transform.py: %s' % (path, line, what))


LAUNCH = re.compile(r'\b(\w+)\s*<<<')
DYN_SHARED = re.compile(r'\bextern\s+__shared__\s+([^;\[\]{}()]*?)\s*\b(\w+)\s*\[\s*\]\s*;')
SHARED = re.compile(r'\b__shared__\s+([^;\[\]{}()=]*?)\s*\b(\w+)\s*((?:\[[^\]\n]*\]\s*)*);')
UNROLL = re.compile(r'^[ \t]*#[ \t]*pragma[ \t]+unroll\b[^\n]*', re.M)


def transform(path, src):
    edits = []  # (start, end, replacement): the code mask locates, the source is rewritten
    mask = code_mask(src)
    for m in UNROLL.finditer(mask):
        edits.append((m.start(), m.end(), ''))
    for m in DYN_SHARED.finditer(mask):
        edits.append((m.start(), m.end(), 'EMU_DYN_SHARED(%s, %s);' % (m.group(1), m.group(2))))
    dyn_spans = [(a, b) for a, b, _ in edits]
    for m in SHARED.finditer(mask):
        if any(a <= m.start() < b for a, b in dyn_spans):
            continue
        dims = m.group(3).strip() if m.group(3) else ''
        text = 'EMU_SHARED(%s, %s, %s);' % (m.group(1), m.group(2), dims)
        edits.append((m.start(), m.end(), text))
    for m in LAUNCH.finditer(mask):
        name = m.group(1)
        close = mask.find('>>>', m.end())
        if close < 0:
            fail(path, src, m.start(), 'unterminated <<<')
        cfg = split_top(src[m.end():close])
        if not 2 <= len(cfg) <= 4 or not all(cfg):
            fail(path, src, m.start(), 'launch configuration of %d parts' % len(cfg))
        cfg += ['0'] * (4 - len(cfg))
        paren = close + 3
        while mask[paren].isspace():
            paren += 1
        if mask[paren] != '(':
            fail(path, src, m.start(), 'no argument list after >>>')
        end = matching_paren(mask, paren)
        args = src[paren + 1:end]
        text = ('emu_launch(%s, "%s", dim3(%s), dim3(%s), (size_t)(%s), (cudaStream_t)(%s), '
                'typename emu_kernel_args<decltype(%s)>::type(%s))'
                % (name, name, cfg[0], cfg[1], cfg[2], cfg[3], name, args))
        edits.append((m.start(), end + 1, text + newlines(src[m.start():paren])))
    edits.sort()
    out, pos = [], 0
    for a, b, text in edits:
        if a < pos:
            fail(path, src, a, 'overlapping rewrites')
        out.append(src[pos:a])
        out.append(text)
        pos = b
    out.append(src[pos:])
    res = ''.join(out)
    left = code_mask(res)
    for token in ('<<<', '__shared__'):
        k = left.find(token)
        if k >= 0:
            fail(path, res, k, 'cannot rewrite this %s' % token)
    return res


def main():
    if len(sys.argv) != 3:
        sys.exit('usage: transform.py IN OUT')
    path, out_path = sys.argv[1], sys.argv[2]
    with open(path) as f:
        src = f.read()
    res = transform(path, src)
    with open(out_path, 'w') as f:
        f.write('// generated by tests/emu/transform.py from %s: do not edit\n' % path)
        f.write('#line 1 "%s"\n' % path)
        f.write(res)


if __name__ == '__main__':
    main()
