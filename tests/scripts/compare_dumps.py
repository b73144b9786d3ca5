"""Compares two --dump-params directories (global tensors) and two metrics files.

usage: compare_dumps.py REF_DIR RUN_DIR REF_METRICS RUN_METRICS LABEL

The run must match the reference: the same tensor names and shapes; every parameter within
1e-5 absolute (the parameters are O(0.01..1); fp32 reductions in another order differ by ~1e-7,
except where AdamW's normalisation m / sqrt(v) amplifies the noise of a gradient element that is
nearly zero: measured up to 2e-6 on 1 of ~10^4 elements, while each parameter moved by ~3e-3 in
the 5 steps, so a wrong slice or a missing reduction is off by more); every loss and global
gradient norm within 1e-5 relative; and, when the run is parallel, the bytes it moved per group
equal to their analytic value exactly.
"""
import json
import sys

import numpy as np


def load(d):
    params = np.fromfile(f"{d}/params.bin", dtype=np.float32)
    out = {}
    for line in open(f"{d}/layout.txt"):
        name, ndim, s0, s1, off, n = line.split()
        off, n = int(off), int(n)
        out[name] = params[off:off + n].reshape(int(s0), int(s1)).astype(np.float64)
    return out


ref_dir, run_dir, ref_m, run_m, label = sys.argv[1:6]
ref, run = load(ref_dir), load(run_dir)
if list(ref) != list(run):
    sys.exit(f"{label}: tensor lists differ: {set(ref) ^ set(run)}")
worst = 0.0
for name, a in ref.items():
    b = run[name]
    if a.shape != b.shape:
        sys.exit(f"{label}: {name}: shape {b.shape}, expected {a.shape}")
    tol = np.full(a.shape, 1e-5)
    err = np.abs(a - b)
    if (err > tol).any():
        i = np.unravel_index(np.argmax(err - tol), a.shape)
        sys.exit(f"{label}: {name}{list(i)} = {b[i]:.9g}, single rank {a[i]:.9g}")
    worst = max(worst, (err / np.maximum(tol, 1e-30)).max())
rows_ref = [json.loads(l) for l in open(ref_m)]
rows_run = [json.loads(l) for l in open(run_m)]
la = [r["loss"] for r in rows_ref]
lb = [r["loss"] for r in rows_run]
if len(la) != len(lb) or any(abs(x - y) > 1e-5 * abs(x) for x, y in zip(la, lb)):
    sys.exit(f"{label}: losses {lb}, single rank {la}")
na = [r["grad_norm"] for r in rows_ref]
nb = [r["grad_norm"] for r in rows_run]
if any(abs(x - y) > 1e-5 * abs(x) for x, y in zip(na, nb)):
    sys.exit(f"{label}: gradient norms {nb}, single rank {na}")
for r in rows_run:
    if "bytes_tp" in r and (r["bytes_tp"] != r["bytes_tp_analytic"] or r["bytes_dp"] != r["bytes_dp_analytic"]):
        sys.exit(f"{label}: step {r['step']}: moved tp {r['bytes_tp']} dp {r['bytes_dp']} bytes, "
                 f"analytic {r['bytes_tp_analytic']} / {r['bytes_dp_analytic']}")
print(f"{label}: {len(ref)} tensors and {len(la)} losses match (worst error {worst:.2f} of tolerance)")
