"""Compares one forward/backward of difftrain's C model with the independent PyTorch reference.

    /usr/bin/python3 tests/torch/compare.py [--naive-gqa] OUTDIR [OUTDIR ...]

Each OUTDIR is written by `dump_model CONFIG OUTDIR`: config.yaml, layout.txt, params.bin,
grads.bin, tokens.bin, loss.txt. The reference (tests/torch/reference.py, written from SPEC, not
from the C code) is built from config.yaml, loaded with difftrain's weights BY NAME, and run in
float32 (the reference of the verdict) and float64 (to measure how much fp32 rounding alone
moves the result, which justifies the tolerance). The layout itself is checked too: every tensor
DESIGN names must be present with its shape, and no other.

Tolerances (STYLE: abs + rel * |ref|), per tensor:
  gradient: max|g_c - g_32| <= RTOL * max|g_32| + NOISE_MULT * max|g_32 - g_64| + FLOOR * G
            RTOL = 1e-4 is the issue's "1e-4 relative in fp32". Some gradients are computed with
            heavy cancellation: at initialisation the two branches of a DIFF head see almost the
            same probabilities, so dlambda = -sum(dO . O_2) over all heads and tokens is a sum
            of cancelling terms and its fp32 value is only good to ~1e-4 relative in ANY
            implementation (measured: max|g_32 - g_64| / max|g_64| up to 8e-5 for the lambda
            vectors, 5e-7 for every other tensor). The second term admits that much: difftrain
            and PyTorch each carry their own rounding of about max|g_32 - g_64|, so their
            difference may reach about twice it; NOISE_MULT = 4 leaves margin for a different
            summation order (flash-style tiles). The floor (FLOOR = 1e-9 of the largest gradient
            G of the model) only matters for a tensor whose whole gradient is zero.
            A wrong formula moves a gradient by O(max|g|), far above all three terms.
  loss:     |loss_c - loss_32| <= 1e-5 * |loss_32|: a mean of O(1) log-sum-exps in fp32 agrees
            to ~1e-7 relative (the |32-64| column shows it).
The table prints, per tensor, max|g_32|, max|g_c - g_32| and its ratio to max|g_32| (rel),
rel64 = max|g_32 - g_64| / max|g_64| (what fp32 rounding alone costs the PyTorch model) and
relc64 = max|g_c - g_64| / max|g_64| (difftrain's own distance from the float64 answer).

--naive-gqa makes the reference pair k-heads the wrong way (SPEC 2 "Known traps"); torch_check.sh
uses it as a negative control: on a GQA config the comparison must then fail.

Exit codes: 0 all match, 1 a mismatch (the first failing tensor is named last), 2 bad input,
77 torch is not importable.
"""

import os
import sys

try:
    import numpy as np
    import torch
except ImportError:
    print("compare.py: torch/numpy not importable by %s: skipped" % sys.executable)
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as R  # noqa: E402

RTOL = 1e-4
NOISE_MULT = 4.0
FLOOR = 1e-9
LOSS_RTOL = 1e-5


class InputError(Exception):
    pass


def load_dump(outdir):
    def path(name):
        p = os.path.join(outdir, name)
        if not os.path.exists(p):
            raise InputError("%s: missing (expected dump_model's output)" % p)
        return p

    flat = R.load_config(path("config.yaml"))
    cfg = R.ModelConfig(flat)
    B, T = int(flat["train.micro_batch"]), int(flat["train.seq_len"])
    layout = R.read_layout(path("layout.txt"))
    total = max(off + numel for _, _, off, numel in layout)
    params = np.fromfile(path("params.bin"), dtype=np.float32)
    grads = np.fromfile(path("grads.bin"), dtype=np.float32)
    for nm, arr in (("params.bin", params), ("grads.bin", grads)):
        if arr.size != total:
            raise InputError("%s/%s: %d floats, layout.txt needs %d" % (outdir, nm, arr.size, total))
    tok = np.fromfile(path("tokens.bin"), dtype=np.int32)
    if tok.size != 2 * B * T:
        raise InputError("%s/tokens.bin: %d int32, expected 2*B*T = %d" % (outdir, tok.size, 2 * B * T))
    with open(path("loss.txt")) as f:
        loss_c = float(f.read().split()[0])
    return cfg, B, T, layout, params, grads, tok, loss_c


def check_layout(cfg, layout):
    """Names and shapes must be exactly DESIGN's table for this config. Returns problems."""
    want = {name: shape for name, shape, _ in R.param_shapes(cfg)}
    have = {name: shape for name, shape, _, _ in layout}
    problems = []
    for name, shape in want.items():
        if name not in have:
            problems.append("%s: missing from difftrain's layout (expected shape %s)" % (name, shape))
        elif tuple(have[name]) != tuple(shape):
            problems.append("%s: shape %s in difftrain's layout, expected %s" % (name, have[name], shape))
    for name in have:
        if name not in want:
            problems.append("%s: in difftrain's layout but not in DESIGN for this config" % name)
    return problems


def run_reference(cfg, weights, inputs, targets, dtype, naive_gqa):
    P = {n: torch.tensor(w, dtype=dtype).requires_grad_(True) for n, w in weights.items()}
    loss = R.forward(cfg, P, inputs, targets, naive_gqa=naive_gqa)
    loss.backward()
    return float(loss.item()), {n: t.grad.detach().double().numpy() for n, t in P.items()}


def compare_one(outdir, naive_gqa):
    cfg, B, T, layout, params, grads, tok, loss_c = load_dump(outdir)
    print("== %s: arch %s, D %d, layers %d, heads %d/%d kv, d %d, tie %s, subln %s, B %d, T %d%s"
          % (outdir, cfg.arch, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim,
             cfg.tie_embeddings, cfg.subln, B, T, "  [naive-GQA control]" if naive_gqa else ""))
    problems = check_layout(cfg, layout)
    if problems:
        for p in problems:
            print("  LAYOUT: " + p)
        return problems[0]
    weights = R.tensors_from_flat(params, layout)
    g_c = R.tensors_from_flat(grads, layout)
    inputs = torch.from_numpy(tok[:B * T].astype(np.int64)).view(B, T)
    targets = torch.from_numpy(tok[B * T:].astype(np.int64)).view(B, T)
    loss32, g32 = run_reference(cfg, weights, inputs, targets, torch.float32, naive_gqa)
    loss64, g64 = run_reference(cfg, weights, inputs, targets, torch.float64, naive_gqa)

    first_fail = None
    lerr = abs(loss_c - loss32)
    lok = lerr <= LOSS_RTOL * abs(loss32)
    print("  loss: difftrain %.9g  torch32 %.9g  torch64 %.12g  |c-32| %.2e  |32-64| %.2e  %s"
          % (loss_c, loss32, loss64, lerr, abs(loss32 - loss64), "ok" if lok else "FAIL"))
    if not lok:
        first_fail = "loss (difftrain %.9g vs torch %.9g)" % (loss_c, loss32)

    gmax = max(float(np.abs(g).max()) for g in g32.values())
    print("  %-38s %11s %11s %9s %9s %9s  %s"
          % ("tensor", "max|g32|", "max|c-32|", "rel", "rel64", "relc64", ""))
    worst = 0.0
    for name, _, _, _ in layout:
        gc = g_c[name].astype(np.float64)
        ref = g32[name]
        scale = float(np.abs(ref).max())
        err = float(np.abs(gc - ref).max())
        noise = float(np.abs(ref - g64[name]).max())
        s64 = float(np.abs(g64[name]).max())
        rel = err / scale if scale > 0 else (0.0 if err == 0 else float("inf"))
        rel64 = noise / s64 if s64 > 0 else 0.0
        relc64 = float(np.abs(gc - g64[name]).max()) / s64 if s64 > 0 else 0.0
        tol = RTOL * scale + NOISE_MULT * noise + FLOOR * gmax
        ok = bool(np.isfinite(gc).all()) and err <= tol
        worst = max(worst, rel)
        print("  %-38s %11.4e %11.4e %9.2e %9.2e %9.2e  %s"
              % (name, scale, err, rel, rel64, relc64, "ok" if ok else "FAIL"))
        if not ok and first_fail is None:
            first_fail = "%s (max|diff| %.3e > tol %.3e, max|ref| %.3e)" % (name, err, tol, scale)
    print("  worst rel %.2e (tolerance %.0e rel + %g x fp32 noise + %.1e abs)"
          % (worst, RTOL, NOISE_MULT, FLOOR * gmax))
    return first_fail


def main(argv):
    naive = "--naive-gqa" in argv
    dirs = [a for a in argv if a != "--naive-gqa"]
    if not dirs:
        print(__doc__.split("\n\n")[1])
        return 2
    torch.set_num_threads(1)
    failed = []
    for d in dirs:
        try:
            f = compare_one(d, naive)
        except InputError as e:
            print("compare.py: error: %s" % e)
            return 2
        if f:
            failed.append("%s: %s" % (d, f))
    if failed:
        for f in failed:
            print("compare.py: MISMATCH: first failing tensor in " + f)
        return 1
    print("compare.py: %d dump(s) match the PyTorch reference" % len(dirs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
