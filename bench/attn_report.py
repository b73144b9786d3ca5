#!/usr/bin/env python3
"""The tables of bench/bench_attn.sh, from the logs of its two sides (no PyTorch needed):

    attn_report.py FUSED_LOG SDPA_LOG

FUSED_LOG holds bench_attn's lines
    RESULT kind size T B fwd_ms fwdbwd_ms fwd_tflops fwdbwd_tflops
    TMA kind size T wgmma_fwd_ms tma_fwd_ms wgmma/tma tma_fwd_tflops out_rel
        (the forward on the warp-specialised kernel; where the GPU has the sm_90 kernels)
    TMABWD kind size T mma_fwdbwd_ms tma_fwdbwd_ms mma/tma tma_fwdbwd_tflops dq_rel dk_rel dv_rel
        (forward+backward with the warp-specialised dk/dv; there too)
SDPA_LOG sdpa_attn.py's:
    SDPA kind size T B fwd_ms fwdbwd_ms fwd_tflops fwdbwd_tflops        (SDPA's own choice)
    SDPA_BACKEND kind size T B backend fwd_ms fwdbwd_ms fwd_tflops fwdbwd_tflops
        (SDPA held to one backend; n/a in the four figures where it refuses the shape)
    SDPA_CHOICE kind size T backend fwd_kernel fwdbwd_kernel
        (the backend SDPA's dispatch picks for these inputs, and the longest-running kernel of
        its forward and of its forward+backward, names cut at 60 characters; - when unknown)

Prints the fused / SDPA ratios of TFLOP/s (> 1: the fused kernels are faster): first against
SDPA's own choice, then the warp-specialised forward against it (where there are TMA lines)
and the forward+backward with the warp-specialised dk/dv (TMABWD lines), then against each
backend SDPA has, with the choice named. A case present on one side only is left out; a
malformed line is an error that names the log and the line."""
import sys

BACKENDS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION")
SHORT = {"FLASH_ATTENTION": "flash", "EFFICIENT_ATTENTION": "efficient",
         "CUDNN_ATTENTION": "cudnn", "MATH": "math"}


class ReportError(Exception):
    pass


def figure(text, where):
    if text == "n/a":
        return None
    try:
        v = float(text)
    except ValueError:
        raise ReportError(f"{where}: '{text}' is not a number") from None
    if not v > 0:
        raise ReportError(f"{where}: TFLOP/s {text} is not positive")
    return v


def key_of(f, where):
    try:
        return (f[1], f[2], int(f[3]))
    except (IndexError, ValueError):
        raise ReportError(f"{where}: expected 'kind size T ...'") from None


def parse(path, tags):
    """{tag: {key: [(fields after the key, "path:line"), ...]}} for the lines of path that start
    with one of tags, in the log's order."""
    out = {t: {} for t in tags}
    try:
        lines = open(path).read().splitlines()
    except OSError as e:
        raise ReportError(f"{path}: {e.strerror}") from None
    for n, line in enumerate(lines, 1):
        f = line.split()
        if f and f[0] in tags:
            where = f"{path}:{n}"
            out[f[0]].setdefault(key_of(f, where), []).append((f[4:], where))
    return out


def tflops_pair(figures, where):
    """(fwd, fwd+bwd) TFLOP/s from the four figures fwd_ms fwdbwd_ms fwd_tflops fwdbwd_tflops."""
    if len(figures) < 4:
        raise ReportError(f"{where}: too few fields")
    return figure(figures[2], where), figure(figures[3], where)


def measured(figures, where):
    """tflops_pair of a line that must have both figures (the fused kernels, SDPA's choice)."""
    pair = tflops_pair(figures, where)
    if None in pair:
        raise ReportError(f"{where}: n/a where a figure is required")
    return pair


def ratio(a, b):
    return "n/a" if a is None or b is None else f"{a / b:.2f}"


def order(key):
    return (key[1], key[0], key[2])


TMA_TABLES = (  # tag, title, the TFLOP/s column, the speed-up's column, SDPA's figure (0: fwd)
    ("TMA", "Forward on the warp-specialised kernel (DIFFTRAIN_FLASH_TMA=1): TFLOP/s, its speed "
     "over the wgmma kernel's, ratio to SDPA's choice", "fwd TFLOP/s TMA", "vs wgmma", 0),
    ("TMABWD", "Forward+backward with the warp-specialised dk/dv "
     "(DIFFTRAIN_FLASH_TMA_BWD=1): TFLOP/s, its speed over the mma.sync dk/dv's, ratio to "
     "SDPA's choice", "fwd+bwd TFLOP/s TMA dk/dv", "vs mma", 1),
)


def report_tma(tma, base, out, title, column, versus, which):
    """The lines of a warp-specialised kernel (TMA_TABLES) against SDPA's choice."""
    rows = []
    for key in sorted(tma, key=order):
        rest, where = tma[key][-1]
        if len(rest) < 4:
            raise ReportError(f"{where}: too few fields")
        tflops = figure(rest[3], where)
        if tflops is None:
            raise ReportError(f"{where}: n/a where a figure is required")
        if key in base:
            rows.append((key, tflops, rest[2], base[key][which]))
    if not rows:
        return
    w = len(column)
    print(file=out)
    print(title, file=out)
    print(f"{'kind':8} {'size':5} {'T':>5} | {column} {versus:>8} {'SDPA':>7} {'ratio':>6}",
          file=out)
    for key, tflops, speedup, sdpa in rows:
        print(f"{key[0]:8} {key[1]:5} {key[2]:5} | {tflops:{w}.1f} {speedup:>8} {sdpa:7.1f} "
              f"{ratio(tflops, sdpa):>6}", file=out)


def report(fused_path, sdpa_path, out=sys.stdout):
    logs = parse(fused_path, ("RESULT",) + tuple(t[0] for t in TMA_TABLES))
    fused = logs["RESULT"]
    sdpa = parse(sdpa_path, ("SDPA", "SDPA_BACKEND", "SDPA_CHOICE"))
    # RESULT and SDPA: B, then the four figures; the last line of a case counts
    res = {k: measured(v[-1][0][1:], v[-1][1]) for k, v in fused.items()}
    base = {k: measured(v[-1][0][1:], v[-1][1]) for k, v in sdpa["SDPA"].items()}

    print(f"{'kind':8} {'size':5} {'T':>5} | {'fwd TFLOP/s fused':>17} {'SDPA':>7} {'ratio':>6} |"
          f" {'fwd+bwd fused':>13} {'SDPA':>7} {'ratio':>6}", file=out)
    for key in sorted(res, key=order):
        if key not in base:
            continue
        (ff, fb), (sf, sb) = res[key], base[key]
        print(f"{key[0]:8} {key[1]:5} {key[2]:5} | {ff:17.1f} {sf:7.1f} {ratio(ff, sf):>6} |"
              f" {fb:13.1f} {sb:7.1f} {ratio(fb, sb):>6}", file=out)
    for tag, title, column, versus, which in TMA_TABLES:
        report_tma(logs[tag], base, out, title, column, versus, which)

    per_backend = {}  # SDPA_BACKEND: B, backend, then the four figures
    for key, lines in sdpa["SDPA_BACKEND"].items():
        for rest, where in lines:
            if len(rest) < 2 or rest[1] not in BACKENDS:
                raise ReportError(f"{where}: expected a backend of {', '.join(BACKENDS)}")
            per_backend.setdefault(key, {})[rest[1]] = tflops_pair(rest[2:], where)
    choices = {k: v[-1][0] for k, v in sdpa["SDPA_CHOICE"].items()}  # backend, fwd/fwd+bwd kernel
    keys = [k for k in sorted(res, key=order) if k in per_backend]
    if not keys:
        return
    print(file=out)
    print("fused / SDPA held to one backend (TFLOP/s ratios, fwd and fwd+bwd; n/a: the backend "
          "refuses the shape); choice: the backend SDPA picks itself", file=out)
    head = " ".join(f"{SHORT[b] + ' fwd':>13} {'fwd+bwd':>8}" for b in BACKENDS)
    print(f"{'kind':8} {'size':5} {'T':>5} | {'choice':9} | {head}", file=out)
    for key in keys:
        ff, fb = res[key]
        cells = []
        for b in BACKENDS:
            sf, sb = per_backend[key].get(b, (None, None))
            cells.append(f"{ratio(ff, sf):>13} {ratio(fb, sb):>8}")
        choice = choices.get(key)
        name = SHORT.get(choice[0], choice[0]) if choice else "-"
        print(f"{key[0]:8} {key[1]:5} {key[2]:5} | {name:9} | {' '.join(cells)}", file=out)
    kernels = [(k, choices[k]) for k in keys if k in choices]
    if kernels:
        print(file=out)
        print("SDPA's kernels (its own choice; the longest-running one):", file=out)
        for key, rest in kernels:
            fwd = rest[1] if len(rest) > 1 else "-"
            bwd = rest[2] if len(rest) > 2 else "-"
            print(f"{key[0]:8} {key[1]:5} {key[2]:5} | fwd {fwd} | fwd+bwd {bwd}", file=out)


def main(argv):
    if len(argv) != 3:
        print("usage: attn_report.py FUSED_LOG SDPA_LOG", file=sys.stderr)
        return 2
    try:
        report(argv[1], argv[2])
    except ReportError as e:
        print(f"attn_report.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
