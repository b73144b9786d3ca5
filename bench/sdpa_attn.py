#!/usr/bin/env python3
"""The PyTorch reference of bench_attn (bench/bench_attn.sh runs both): times
torch.nn.functional.scaled_dot_product_attention (bf16, is_causal=True) on the shapes and with the
FLOP count of bench/bench_attn.c. DIFF V1 is two SDPA calls, one per branch (q-heads 2h / 2h+1
against k-heads 2g / 2g+1, both with the shared v of width 2d); DIFF V2 one call over 2H q-heads
and H kv-heads (GQA); the baseline one call over 2H heads. Tensors are (B, heads, T, d), the
layout SDPA is fastest with (no transposes timed). Prints lines
    SDPA kind size T B fwd_ms fwdbwd_ms fwd_tflops fwdbwd_tflops
(medians over --iters runs, timed with CUDA events) for SDPA's own choice of backend, then, with
--backends (default: all three), SDPA held to each backend in turn (torch.nn.attention's
sdpa_kernel; --backend-iters timed runs), n/a where that backend refuses the shape
(FlashAttention-2 takes no v wider than q and k, so not DIFF V1's) or the call:
    SDPA_BACKEND kind size T B backend fwd_ms fwdbwd_ms fwd_tflops fwdbwd_tflops
and which backend SDPA's own dispatch picks for these inputs, with the longest-running kernel of
one forward and of one forward+backward by the profiler (names cut; - where unknown):
    SDPA_CHOICE kind size T backend fwd_kernel fwdbwd_kernel
bench/attn_report.py makes the tables. Exits 77 where this PyTorch has no SDPA or no GPU."""
import argparse
import statistics
import sys
import warnings

import torch
import torch.nn.functional as F

SHAPES = [("830m", 8, 96), ("3b", 12, 128)]  # size, DIFF heads H, head dim d
SEQS = [2048, 4096]
TOKENS = 16384
BACKENDS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION")


def flops(kind, B, T, H, d, bwd):
    nq, dv = 2 * H, (2 * d if kind == "diff" else d)
    per = B * nq * T * T
    return per * (d + dv + ((3 * d + 2 * dv) if bwd else 0))


def make(kind, B, T, H, d):
    def t(heads, width):
        return torch.randn(B, heads, T, width, device="cuda", dtype=torch.bfloat16,
                           requires_grad=True)
    if kind == "diff":  # branch c: q-heads (B, H, T, d), k-heads (B, H, T, d), v (B, H, T, 2d)
        return [t(H, d), t(H, d), t(H, d), t(H, d), t(H, 2 * d)]
    if kind == "diff_v2":
        return [t(2 * H, d), t(H, d), t(H, d)]
    return [t(2 * H, d), t(2 * H, d), t(2 * H, d)]


def forward(kind, x):
    if kind == "diff":
        q1, q2, k1, k2, v = x
        return [F.scaled_dot_product_attention(q1, k1, v, is_causal=True),
                F.scaled_dot_product_attention(q2, k2, v, is_causal=True)]
    q, k, v = x
    return [F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           enable_gqa=k.shape[1] != q.shape[1])]


def time_ms(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def held_to(name):
    """A context that holds SDPA to one backend, or None where this PyTorch lacks it."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        return None
    backend = getattr(SDPBackend, name, None)
    return None if backend is None else sdpa_kernel([backend])


def choice(kind, x):
    """The name of the backend SDPA's dispatch picks for the first call of forward(kind, x)."""
    q, k, v = (x[0], x[2], x[4]) if kind == "diff" else x
    try:
        try:
            idx = torch._fused_sdp_choice(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=True,
                                          enable_gqa=k.shape[1] != q.shape[1])
        except TypeError:  # a PyTorch before enable_gqa
            idx = torch._fused_sdp_choice(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=True)
        from torch.nn.attention import SDPBackend
        for name, member in SDPBackend.__members__.items():
            if int(member) == int(idx):
                return name
    except Exception:  # a private API: report what is known, never fail the benchmark on it
        pass
    return "-"


def top_kernel(fn):
    """The name of the CUDA kernel that ran longest in one call of fn, cut to its function's
    name (no return type, parameters or spaces) and 60 characters; - where unknown."""
    try:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        best, best_t = None, 0.0
        for e in prof.key_averages():
            t = getattr(e, "device_time_total", None)
            if t is None:
                t = getattr(e, "cuda_time_total", 0.0)
            if t > best_t:
                best, best_t = e.key, t
        if best is None:
            return "-"
        name = best.split("(")[0]
        name = name[5:] if name.startswith("void ") else name
        return "".join(name.split())[:60] or "-"
    except Exception:
        return "-"


def timed_or_none(fn, warmup, iters):
    """time_ms(fn), or None where SDPA refuses (RuntimeError: "No available kernel", or out of
    memory) under the backend it is held to."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the refusals' reasons, one per constraint
            return time_ms(fn, warmup, iters)
    except RuntimeError:
        return None


def figures(kind, B, T, H, d, f, fb):
    """fwd_ms fwdbwd_ms fwd_tflops fwdbwd_tflops, n/a for a time that is None"""
    def pair(ms, bwd):
        return ("n/a", "n/a") if ms is None else \
            (f"{ms:.3f}", f"{flops(kind, B, T, H, d, bwd) / ms * 1e-9:.1f}")
    (fm, ft), (bm, bt) = pair(f, False), pair(fb, True)
    return f"{fm} {bm} {ft} {bt}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--backends", default=",".join(BACKENDS),
                    help="comma-separated SDPBackend names to time one by one ('' for none)")
    ap.add_argument("--backend-iters", type=int, default=5)
    args = ap.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    for b in backends:
        if b not in BACKENDS:
            ap.error(f"--backends: {b} is not one of {', '.join(BACKENDS)}")
    if not hasattr(F, "scaled_dot_product_attention") or not torch.cuda.is_available():
        print(f"sdpa_attn: torch {torch.__version__} has no CUDA scaled_dot_product_attention",
              file=sys.stderr)
        sys.exit(77)
    print(f"sdpa_attn: torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
    for size, H, d in SHAPES:
        for T in SEQS:
            B = TOKENS // T
            for kind in ("diff", "diff_v2", "base"):
                x = make(kind, B, T, H, d)

                def fwd():
                    with torch.no_grad():
                        forward(kind, x)

                def fwdbwd():
                    outs = forward(kind, x)
                    torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
                    for t in x:
                        t.grad = None
                f = time_ms(fwd, args.warmup, args.iters)
                fb = time_ms(fwdbwd, args.warmup, args.iters)
                print(f"SDPA {kind} {size} {T} {B} {figures(kind, B, T, H, d, f, fb)}")
                print(f"SDPA_CHOICE {kind} {size} {T} {choice(kind, x)} {top_kernel(fwd)} "
                      f"{top_kernel(fwdbwd)}", flush=True)
                for b in backends:
                    ctx = held_to(b)
                    f = fb = None
                    if ctx is not None:
                        with ctx:
                            f = timed_or_none(fwd, args.warmup, args.backend_iters)
                            fb = timed_or_none(fwdbwd, args.warmup, args.backend_iters)
                    for t in x:  # a backward refused part way
                        t.grad = None
                    print(f"SDPA_BACKEND {kind} {size} {T} {B} {b} "
                          f"{figures(kind, B, T, H, d, f, fb)}", flush=True)
                del x
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
