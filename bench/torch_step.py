"""Times one training step of the PyTorch eager model of a difftrain config: the reference of
bench/bench_step.c, measured the same way.

    /usr/bin/python3 bench/torch_step.py CONFIG.yaml [--steps=N] [--warmup=N]

One step = zero_grad, forward, backward, torch.optim.AdamW step (PyTorch's default
implementation for CPU tensors; weight decay on matrices and embeddings, not on norms, gains
or lambda vectors, as difftrain's layout does). The model is tests/torch/reference.py, the same
code the correctness check uses: batched matmuls over heads, a materialised (T, T) softmax
(PyTorch 1.13 has no fused attention for CPU), autograd for the backward.

Threads: train.threads when the config sets it, else OMP_NUM_THREADS, else torch's default.
Prints one JSON line with the keys bench_step prints (ms_per_step is the median step,
ms_min the fastest).
"""

import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "torch"))
import reference as R  # noqa: E402


def main(argv):
    steps, warmup, cfg_path = 10, 2, None
    for a in argv:
        if a.startswith("--steps="):
            steps = max(1, int(a.split("=", 1)[1]))
        elif a.startswith("--warmup="):
            warmup = int(a.split("=", 1)[1])
        elif cfg_path is None:
            cfg_path = a
        else:
            print("torch_step.py: overrides are not supported (got %r)" % a, file=sys.stderr)
            return 2
    if cfg_path is None:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    flat = R.load_config(cfg_path)
    cfg = R.ModelConfig(flat)
    threads = int(flat.get("train.threads") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    else:
        threads = R.set_threads_from_env()
    B, T = int(flat["train.micro_batch"]), int(flat["train.seq_len"])
    betas = flat.get("optim.betas") or [0.9, 0.95]
    lr = float(flat.get("optim.lr", 3e-4))
    eps = float(flat.get("optim.eps", 1e-8))
    wd = float(flat.get("optim.weight_decay", 0.1))

    P = R.init_params(cfg, seed=int(flat.get("train.seed") or 0))
    kinds = {name: kind for name, _, kind in R.param_shapes(cfg)}
    decay = [P[n] for n in P if kinds[n] in ("emb", "linear", "out")]
    no_decay = [P[n] for n in P if kinds[n] not in ("emb", "linear", "out")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(float(betas[0]), float(betas[1])), eps=eps)
    g = torch.Generator().manual_seed(1)
    inputs = torch.randint(0, cfg.vocab_size, (B, T), generator=g)
    targets = torch.randint(0, cfg.vocab_size, (B, T), generator=g)

    def step():
        opt.zero_grad(set_to_none=False)  # difftrain zeroes its gradient buffer too
        loss = R.forward(cfg, P, inputs, targets)
        loss.backward()
        opt.step()
        return float(loss.item())

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    dt = statistics.median(times)
    print(json.dumps({"impl": "torch", "arch": cfg.arch, "threads": threads, "steps": steps,
                      "ms_per_step": round(1e3 * dt, 3), "ms_min": round(1e3 * min(times), 3),
                      "tokens_per_s": round(B * T / dt, 1),
                      "loss": round(loss, 6), "torch": torch.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
