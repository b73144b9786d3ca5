#!/usr/bin/env python3
"""Summarises an Nsight Compute CSV of gpu__time_duration.sum (one row per kernel launch, as
`ncu --csv --metrics gpu__time_duration.sum` writes it) by kernel: launches, total time per
training step (the totals divided by --steps) and share of the whole, largest first, with
cuBLAS's GEMM kernels and the fused attention's kernels (flash_*) also summed as groups.

    tools/ncu_summary.py PROFILE.csv [--steps N] [--top K]
"""
import argparse
import csv
import re
import sys
from collections import defaultdict


UNITS_MS = {"nsecond": 1e-6, "ns": 1e-6, "usecond": 1e-3, "us": 1e-3, "msecond": 1.0, "ms": 1.0,
            "second": 1e3, "s": 1e3}


def short_name(name):
    """The kernel's name without its argument list (template arguments kept: they tell the
    fused attention's head dims apart)."""
    depth, cut = 0, len(name)
    for i, ch in enumerate(name):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0:
            cut = i
            break
    name = name[:cut]
    return name[5:] if name.startswith("void ") else name


def is_gemm(name):
    # cuBLAS's kernels (nvjet_sm90_..., sm90_xmma_gemm_..., cutlass_...); not the project's own
    # kernels whose names hold an architecture (flash_dq_sm90_kernel)
    return bool(re.search(r"gemm|xmma|cutlass|nvjet|^(void )?sm\d+_", name, re.I))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    lines = [l for l in open(args.csv, errors="replace") if l.startswith('"')]
    if not lines:
        sys.exit(f"ncu_summary: {args.csv}: no CSV rows")
    total = defaultdict(float)
    count = defaultdict(int)
    for row in csv.DictReader(lines):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        scale = UNITS_MS[row["Metric Unit"]]
        name = short_name(row["Kernel Name"])
        total[name] += float(row["Metric Value"].replace(",", "")) * scale
        count[name] += 1
    if not total:
        sys.exit(f"ncu_summary: {args.csv}: no gpu__time_duration.sum rows")
    whole = sum(total.values())
    gemm = sum(t for n, t in total.items() if is_gemm(n))
    attn = sum(t for n, t in total.items() if re.match(r"(void )?flash_", n))
    s = args.steps
    print(f"{args.csv}: {sum(count.values())} launches, {whole / s:.2f} ms of kernels per step "
          f"(over {s} steps); cuBLAS GEMMs {gemm / s:.2f} ms ({100 * gemm / whole:.1f}%), "
          f"fused attention {attn / s:.2f} ms ({100 * attn / whole:.1f}%)")
    print(f"{'ms/step':>9} {'share':>6} {'launches':>8}  kernel")
    for name, t in sorted(total.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"{t / s:9.3f} {100 * t / whole:5.1f}% {count[name]:8d}  {name[:110]}")


if __name__ == "__main__":
    main()
