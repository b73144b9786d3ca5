#!/usr/bin/env python3
"""How much of each training step the GPU sits idle, from an Nsight Systems GPU trace: what CUDA
graphs could win (the short gaps between one kernel and the next, which launching from a graph
shortens) and what they could not (long gaps: the host reading the loss, loading data).

    nsys profile --trace=cuda --sample=none --cpuctxsw=none -o run difftrain train ...
    nsys stats --report cuda_gpu_trace --format csv --output run run.nsys-rep
    tools/gpu_gaps.py run_cuda_gpu_trace.csv [--step-kernel REGEX] [--skip N] [--small-us US]

Each row of the trace is one kernel, copy or memset on the GPU (its start and duration in ns
and its name). A step ends with the optimizer's update: a run of consecutive kernels whose name
matches --step-kernel (default adamw_kernel); step k spans from the end of update k - 1 to the
end of update k, and the first --skip steps (default 1: the set-up and the first step's
one-time work) are left out. Per step: its span, the time some operation of any stream runs
(the union of their intervals), the idle rest, split into gaps shorter than --small-us
(default 20 us: a launch or a dependency between kernels) and longer ones. Last, a GAPS line
with the medians over the steps:

    GAPS steps N span_ms S busy_ms B idle_pct I small_gaps C small_ms SM large_ms LM

Exits 2 on input it cannot read (naming the file and line), 1 when no step is left.
"""
import argparse
import csv
import re
import statistics
import sys


def fail(msg):
    print(f"gpu_gaps: {msg}", file=sys.stderr)
    sys.exit(2)


def column(header, prefix, path):
    for i, h in enumerate(header):
        if h.strip().startswith(prefix):
            return i
    fail(f"{path}: no '{prefix}' column in the header {header}")


def read_trace(path):
    """[(start_ns, end_ns, name)] sorted by start; the CSV's header is the first line naming
    Start, Duration and Name (nsys may print other lines before it)."""
    try:
        lines = open(path, newline="").read().splitlines()
    except OSError as e:
        fail(f"{path}: {e.strerror}")
    rows, header, first = [], None, 0
    for n, line in enumerate(lines):
        if "Start" in line and "Duration" in line and "Name" in line:
            header, first = next(csv.reader([line])), n + 1
            break
    if header is None:
        fail(f"{path}: no header line with Start, Duration and Name (is it nsys stats' "
             "cuda_gpu_trace report as CSV?)")
    i_start, i_dur = column(header, "Start", path), column(header, "Duration", path)
    i_name = column(header, "Name", path)
    for n, rec in enumerate(csv.reader(lines[first:]), start=first + 1):
        if not rec:
            continue
        try:
            start, dur = float(rec[i_start]), float(rec[i_dur])
            name = rec[i_name]
        except (ValueError, IndexError):
            fail(f"{path}:{n}: not a trace row: {','.join(rec)[:120]}")
        if dur < 0:
            fail(f"{path}:{n}: negative duration")
        rows.append((start, start + dur, name))
    rows.sort()
    return rows


def step_ends(rows, pattern):
    """The end time of each optimizer update: a run of consecutive matching rows."""
    ends, in_run = [], False
    for start, end, name in rows:
        if pattern.search(name):
            if in_run:
                ends[-1] = max(ends[-1], end)
            else:
                ends.append(end)
            in_run = True
        else:
            in_run = False
    return ends


def step_stats(rows, t0, t1, small_ns):
    """busy ns, and the idle gaps (ns) of [t0, t1] given the operations' intervals"""
    busy, gaps, cursor = 0.0, [], t0
    for start, end, _ in rows:
        if end <= t0 or start >= t1:
            continue
        start, end = max(start, t0), min(end, t1)
        if start > cursor:
            gaps.append(start - cursor)
        if end > cursor:
            busy += end - max(start, cursor)
            cursor = end
    if t1 > cursor:
        gaps.append(t1 - cursor)
    small = [g for g in gaps if g < small_ns]
    large = [g for g in gaps if g >= small_ns]
    return busy, small, large


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace")
    ap.add_argument("--step-kernel", default="adamw_kernel")
    ap.add_argument("--skip", type=int, default=1)
    ap.add_argument("--small-us", type=float, default=20.0)
    args = ap.parse_args()
    if args.skip < 1:
        fail("--skip must be at least 1: the first step has no start in the trace")
    rows = read_trace(args.trace)
    ends = step_ends(rows, re.compile(args.step_kernel))
    # step 1 ends at ends[0]; step k > 1 spans (ends[k - 2], ends[k - 1]]
    spans = [(ends[k - 1], ends[k]) for k in range(1, len(ends))][args.skip - 1:]
    if not spans:
        print(f"gpu_gaps: {args.trace}: {len(ends)} optimizer updates ({args.step_kernel}): "
              f"no step left after skipping {args.skip}", file=sys.stderr)
        sys.exit(1)
    small_ns = args.small_us * 1e3
    print(f"{'step':>4} {'span ms':>9} {'busy ms':>9} {'idle %':>7} {'small gaps':>10} "
          f"{'small ms':>9} {'large gaps':>10} {'large ms':>9} {'largest ms':>10}")
    per = []
    for k, (t0, t1) in enumerate(spans, start=args.skip + 1):
        busy, small, large = step_stats(rows, t0, t1, small_ns)
        span = t1 - t0
        idle = span - busy
        per.append((span, busy, 100.0 * idle / span, len(small), sum(small), sum(large)))
        print(f"{k:4d} {span / 1e6:9.3f} {busy / 1e6:9.3f} {100.0 * idle / span:7.2f} "
              f"{len(small):10d} {sum(small) / 1e6:9.3f} {len(large):10d} "
              f"{sum(large) / 1e6:9.3f} {max(small + large, default=0.0) / 1e6:10.3f}")
    med = [statistics.median(x[i] for x in per) for i in range(6)]
    print(f"GAPS steps {len(per)} span_ms {med[0] / 1e6:.3f} busy_ms {med[1] / 1e6:.3f} "
          f"idle_pct {med[2]:.2f} small_gaps {med[3]:.0f} small_ms {med[4] / 1e6:.3f} "
          f"large_ms {med[5] / 1e6:.3f}")


if __name__ == "__main__":
    main()
