#!/usr/bin/env python3
"""The PyTorch reference of bench_attn (bench/bench_attn.sh runs both): times
torch.nn.functional.scaled_dot_product_attention (bf16, is_causal=True) on the shapes and with the
FLOP count of bench/bench_attn.c. DIFF V1 is two SDPA calls, one per branch (q-heads 2h / 2h+1
against k-heads 2g / 2g+1, both with the shared v of width 2d); DIFF V2 one call over 2H q-heads
and H kv-heads (GQA); the baseline one call over 2H heads. Tensors are (B, heads, T, d), the
layout SDPA is fastest with (no transposes timed). Prints lines
    SDPA kind size T B fwd_ms fwdbwd_ms fwd_tflops fwdbwd_tflops
(medians over --iters runs, timed with CUDA events)."""
import argparse
import statistics

import torch
import torch.nn.functional as F

SHAPES = [("830m", 8, 96), ("3b", 12, 128)]  # size, DIFF heads H, head dim d
SEQS = [2048, 4096]
TOKENS = 16384


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
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
                print(f"SDPA {kind} {size} {T} {B} {f:.3f} {fb:.3f} "
                      f"{flops(kind, B, T, H, d, False) / f * 1e-9:.1f} "
                      f"{flops(kind, B, T, H, d, True) / fb * 1e-9:.1f}", flush=True)
                del x
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
