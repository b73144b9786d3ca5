"""Independent PyTorch reference of the difftrain model, written from /work/shared/SPEC.md
(sections 1-5) and the parameter table of DESIGN.md, not from the C sources.

    Y  = X + Attn(RMSNorm(X));  X' = Y + SwiGLU(RMSNorm(Y));  then final RMSNorm, LM head and the
    mean cross-entropy over targets >= 0.

Attention kinds (model.arch):
  diff         SPEC 2: H DIFF heads of two branches, head dim d = D / (2H). DIFF head h uses
               q-heads 2h, 2h+1, kv group g = h // n_rep with k-heads 2g, 2g+1 and v-head g of
               width 2d; lambda = exp(lq1.lk1) - exp(lq2.lk2) + lambda_init(l), l 0-based;
               subln = per-head RMSNorm over 2d channels with a shared gain, then * (1 -
               lambda_init). With model.subln false the RMSNorm and its gain are absent and
               only the (1 - lambda_init) factor remains.
  diff_v2      SPEC 4: standard causal attention over 2H q-heads of width d (H_kv kv-heads of
               width d); out_h = attn_{2h} - sigmoid(x_normed W_lambda^T)_h attn_{2h+1}.
  transformer  SPEC 5: standard causal GQA attention, n_heads heads of width D / n_heads.
RoPE is GPT-J interleaved on every q- and k-head; scores are scaled by 1/sqrt(head width).

Everything is vectorised over heads (batched matmuls, the way one writes a PyTorch eager model),
so bench/torch_step.py can time the same code. tests/torch/test_reference.py checks the
vectorised attention against naive per-head, per-token loops.

Only the standard library, numpy and torch are used; the config reader is a small one of ours for
the nested mappings that difftrain's config_print writes.
"""

import math
import os

import numpy as np
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# config


def _scalar(text):
    """A YAML scalar: bool, int, float, flow list or string (quotes stripped)."""
    t = text.strip()
    if t == "" or t in ("~", "null"):
        return None
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        return t[1:-1]
    low = t.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if t.startswith("[") and t.endswith("]"):
        inner = t[1:-1].strip()
        return [_scalar(x) for x in inner.split(",")] if inner else []
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        return t


def _strip_comment(line):
    quote = None
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def parse_yaml_config(text):
    """Parses the block mappings (any depth) and block/flow lists that config_print writes into
    a flat dict of dotted keys: {"model.d_model": 32, "data.train": [...], ...}."""
    flat = {}
    stack = []  # (indent, key path prefix)
    last_key = None
    for raw in text.splitlines():
        line = _strip_comment(raw).rstrip()
        if not line.strip() or line.strip() in ("---", "..."):
            continue
        indent = len(line) - len(line.lstrip(" "))
        body = line.strip()
        if body.startswith("- "):  # block list item belongs to the last key
            if last_key is not None:
                if not isinstance(flat.get(last_key), list):
                    flat[last_key] = []
                flat[last_key].append(_scalar(body[2:]))
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if ":" not in body:
            raise ValueError("cannot parse config line: %r" % raw)
        key, _, value = body.partition(":")
        key = key.strip().strip("'\"")
        path = ".".join([p for _, p in stack] + [key])
        if value.strip() == "":
            stack.append((indent, key))
            flat[path] = None
        else:
            flat[path] = _scalar(value)
        last_key = path
    return flat


class ModelConfig:
    """The model section plus the derived sizes the reference needs."""

    def __init__(self, flat):
        g = lambda k, default=None: flat.get("model." + k, default)  # noqa: E731
        self.arch = str(g("arch"))
        if self.arch not in ("diff", "diff_v2", "transformer"):
            raise ValueError("model.arch: expected diff | diff_v2 | transformer, got %r" % self.arch)
        self.vocab_size = int(g("vocab_size"))
        self.d_model = int(g("d_model"))
        self.n_layers = int(g("n_layers"))
        self.n_heads = int(g("n_heads"))
        kv = g("n_kv_heads", 0)
        self.n_kv_heads = int(kv) if kv else self.n_heads
        self.ffn_dim = int(g("ffn_dim"))
        self.rope_theta = float(g("rope_theta", 10000.0))
        self.tie_embeddings = bool(g("tie_embeddings", False))
        self.norm_eps = float(g("norm_eps", 1e-5))
        li = g("lambda_init", "schedule")
        self.lambda_init_schedule = isinstance(li, str) and li == "schedule"
        self.lambda_init_const = None if self.lambda_init_schedule else float(li)
        self.subln = bool(g("subln", True))
        self.init_std = float(g("init_std", 0.02))
        D, H = self.d_model, self.n_heads
        if self.arch == "transformer":
            self.head_dim = D // H
        else:
            self.head_dim = D // (2 * H)
        assert self.n_heads % self.n_kv_heads == 0, "n_heads must be a multiple of n_kv_heads"
        assert self.head_dim % 2 == 0, "RoPE needs an even head dim"

    def lambda_init(self, layer):
        """SPEC 2: 0.8 - 0.6 exp(-0.3 l), l the 0-based layer index, or the constant."""
        if self.lambda_init_schedule:
            return 0.8 - 0.6 * math.exp(-0.3 * layer)
        return self.lambda_init_const


def load_config(path):
    with open(path) as f:
        return parse_yaml_config(f.read())


# ---------------------------------------------------------------------------------------------
# parameters (DESIGN "Parameter names and layouts")


def param_shapes(cfg):
    """Ordered list of (name, shape, kind) with kind in {emb, linear, out, norm, lambda}."""
    D, H, Hkv, d, F_, V = (cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.ffn_dim,
                           cfg.vocab_size)
    out = [("tok_embeddings.weight", (V, D), "emb")]
    for i in range(cfg.n_layers):
        p = "layers.%d." % i
        out.append((p + "attention_norm.weight", (D,), "norm"))
        if cfg.arch == "diff":
            out += [(p + "attn.q_proj.weight", (2 * H * d, D), "linear"),
                    (p + "attn.k_proj.weight", (2 * Hkv * d, D), "linear"),
                    (p + "attn.v_proj.weight", (2 * Hkv * d, D), "linear"),
                    (p + "attn.out_proj.weight", (D, 2 * H * d), "out")]
            for nm in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
                out.append((p + "attn." + nm, (d,), "lambda"))
            if cfg.subln:
                out.append((p + "attn.subln.weight", (2 * d,), "norm"))
        elif cfg.arch == "diff_v2":
            out += [(p + "attn.q_proj.weight", (2 * H * d, D), "linear"),
                    (p + "attn.k_proj.weight", (Hkv * d, D), "linear"),
                    (p + "attn.v_proj.weight", (Hkv * d, D), "linear"),
                    (p + "attn.out_proj.weight", (D, H * d), "out"),
                    (p + "attn.lambda_proj.weight", (H, D), "linear")]
        else:
            out += [(p + "attn.q_proj.weight", (H * d, D), "linear"),
                    (p + "attn.k_proj.weight", (Hkv * d, D), "linear"),
                    (p + "attn.v_proj.weight", (Hkv * d, D), "linear"),
                    (p + "attn.out_proj.weight", (D, H * d), "out")]
        out += [(p + "ffn_norm.weight", (D,), "norm"),
                (p + "ffn.w_gate.weight", (F_, D), "linear"),
                (p + "ffn.w_up.weight", (F_, D), "linear"),
                (p + "ffn.w_down.weight", (D, F_), "out")]
    out.append(("norm.weight", (D,), "norm"))
    if not cfg.tie_embeddings:
        out.append(("output.weight", (V, D), "emb"))
    return out


def init_params(cfg, seed=0, dtype=torch.float32):
    """Fresh parameters (for the benchmark; the check loads difftrain's own values)."""
    gen = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape, kind in param_shapes(cfg):
        if kind == "norm":
            t = torch.ones(shape, dtype=dtype)
        else:
            std = {"emb": cfg.init_std, "linear": cfg.init_std, "lambda": 0.1,
                   "out": cfg.init_std / math.sqrt(2 * cfg.n_layers)}[kind]
            t = torch.randn(shape, generator=gen, dtype=torch.float32).to(dtype) * std
        params[name] = t.requires_grad_(True)
    return params


def read_layout(path):
    """layout.txt from dump_model: name ndim shape0 shape1 offset numel per line."""
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            name, ndim, s0, s1, off, numel = parts[0], *map(int, parts[1:6])
            shape = (s0,) if ndim == 1 else (s0, s1)
            rows.append((name, shape, off, numel))
    return rows


def tensors_from_flat(flat, layout):
    return {name: flat[off:off + numel].reshape(shape) for name, shape, off, numel in layout}


# ---------------------------------------------------------------------------------------------
# layers


def rmsnorm(x, weight, eps):
    """x / sqrt(mean(x^2) + eps) * weight over the last dim (weight may be None)."""
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return y if weight is None else y * weight


def rope_tables(T, d, theta, dtype):
    """cos, sin (T, d/2) of angle t * theta^(-2i/d), computed in float64."""
    i = torch.arange(d // 2, dtype=torch.float64)
    w = theta ** (-2.0 * i / d)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * w[None, :]
    return torch.cos(ang).to(dtype), torch.sin(ang).to(dtype)


def rope(x, cos, sin):
    """GPT-J interleaved rotary embedding on x (..., T, d):
    out[2i] = x[2i] cos - x[2i+1] sin; out[2i+1] = x[2i+1] cos + x[2i] sin."""
    xe, xo = x[..., 0::2], x[..., 1::2]
    oe = xe * cos - xo * sin
    oo = xo * cos + xe * sin
    return torch.stack((oe, oo), dim=-1).flatten(-2)


def heads(x, n, width):
    """(B, T, n*width) -> (B, n, T, width)."""
    B, T, _ = x.shape
    return x.view(B, T, n, width).transpose(1, 2)


def causal_attention(q, k, v):
    """Softmax(q k^T / sqrt(d) + causal mask) v over (B, Hq, T, *) with k, v already expanded
    to Hq heads."""
    T, d = q.shape[-2], q.shape[-1]
    s = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(d))
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
    s = s.masked_fill(mask, float("-inf"))
    return torch.matmul(torch.softmax(s, dim=-1), v)


def attn_diff(cfg, P, pre, layer, xn, cos, sin, naive_gqa=False):
    """SPEC 2, differential attention V1. xn (B, T, D) -> (B, T, D)."""
    B, T, _ = xn.shape
    H, Hkv, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    n_rep = H // Hkv
    q = rope(heads(F.linear(xn, P[pre + "attn.q_proj.weight"]), 2 * H, d), cos, sin)
    k = rope(heads(F.linear(xn, P[pre + "attn.k_proj.weight"]), 2 * Hkv, d), cos, sin)
    v = heads(F.linear(xn, P[pre + "attn.v_proj.weight"]), Hkv, 2 * d)  # (B, Hkv, T, 2d)
    if naive_gqa:
        # The trap of SPEC 2 (repeat the 2*Hkv k-heads, then pair 2h, 2h+1); used only as a
        # negative control to prove that the comparison can fail.
        k = k.repeat_interleave(n_rep, dim=1)
        k1, k2 = k[:, 0::2], k[:, 1::2]
    else:
        # kv group g = h // n_rep uses k-heads 2g (branch 1) and 2g+1 (branch 2)
        k1 = k[:, 0::2].repeat_interleave(n_rep, dim=1)
        k2 = k[:, 1::2].repeat_interleave(n_rep, dim=1)
    vv = v.repeat_interleave(n_rep, dim=1)  # (B, H, T, 2d)
    o1 = causal_attention(q[:, 0::2], k1, vv)  # q-heads 2h: branch 1
    o2 = causal_attention(q[:, 1::2], k2, vv)  # q-heads 2h+1: branch 2
    li = cfg.lambda_init(layer)
    lam = (torch.exp(torch.dot(P[pre + "attn.lambda_q1"], P[pre + "attn.lambda_k1"]))
           - torch.exp(torch.dot(P[pre + "attn.lambda_q2"], P[pre + "attn.lambda_k2"])) + li)
    o = o1 - lam * o2  # (B, H, T, 2d)
    if cfg.subln:
        o = rmsnorm(o, P[pre + "attn.subln.weight"], cfg.norm_eps)
    o = o * (1.0 - li)
    o = o.transpose(1, 2).reshape(B, T, H * 2 * d)
    return F.linear(o, P[pre + "attn.out_proj.weight"])


def attn_diff_v2(cfg, P, pre, xn, cos, sin):
    """SPEC 4: standard attention over 2H q-heads, per-token sigmoid lambda per head."""
    B, T, _ = xn.shape
    H, Hkv, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    rep = (2 * H) // Hkv
    q = rope(heads(F.linear(xn, P[pre + "attn.q_proj.weight"]), 2 * H, d), cos, sin)
    k = rope(heads(F.linear(xn, P[pre + "attn.k_proj.weight"]), Hkv, d), cos, sin)
    v = heads(F.linear(xn, P[pre + "attn.v_proj.weight"]), Hkv, d)
    a = causal_attention(q, k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1))
    lam = torch.sigmoid(F.linear(xn, P[pre + "attn.lambda_proj.weight"]))  # (B, T, H)
    o = a[:, 0::2] - lam.transpose(1, 2).unsqueeze(-1) * a[:, 1::2]  # (B, H, T, d)
    o = o.transpose(1, 2).reshape(B, T, H * d)
    return F.linear(o, P[pre + "attn.out_proj.weight"])


def attn_transformer(cfg, P, pre, xn, cos, sin):
    """SPEC 5: causal GQA; q-head j reads kv-head j // (n_heads / n_kv_heads)."""
    B, T, _ = xn.shape
    H, Hkv, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    rep = H // Hkv
    q = rope(heads(F.linear(xn, P[pre + "attn.q_proj.weight"]), H, d), cos, sin)
    k = rope(heads(F.linear(xn, P[pre + "attn.k_proj.weight"]), Hkv, d), cos, sin)
    v = heads(F.linear(xn, P[pre + "attn.v_proj.weight"]), Hkv, d)
    o = causal_attention(q, k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1))
    o = o.transpose(1, 2).reshape(B, T, H * d)
    return F.linear(o, P[pre + "attn.out_proj.weight"])


def forward(cfg, P, inputs, targets, naive_gqa=False):
    """Mean cross-entropy over targets >= 0. inputs, targets: int64 (B, T)."""
    B, T = inputs.shape
    dtype = P["tok_embeddings.weight"].dtype
    cos, sin = rope_tables(T, cfg.head_dim, cfg.rope_theta, dtype)
    x = F.embedding(inputs, P["tok_embeddings.weight"])
    for l in range(cfg.n_layers):
        pre = "layers.%d." % l
        xn = rmsnorm(x, P[pre + "attention_norm.weight"], cfg.norm_eps)
        if cfg.arch == "diff":
            a = attn_diff(cfg, P, pre, l, xn, cos, sin, naive_gqa=naive_gqa)
        elif cfg.arch == "diff_v2":
            a = attn_diff_v2(cfg, P, pre, xn, cos, sin)
        else:
            a = attn_transformer(cfg, P, pre, xn, cos, sin)
        x = x + a
        hn = rmsnorm(x, P[pre + "ffn_norm.weight"], cfg.norm_eps)
        h = F.silu(F.linear(hn, P[pre + "ffn.w_gate.weight"])) * F.linear(hn, P[pre + "ffn.w_up.weight"])
        x = x + F.linear(h, P[pre + "ffn.w_down.weight"])
    x = rmsnorm(x, P["norm.weight"], cfg.norm_eps)
    w_out = P["tok_embeddings.weight"] if cfg.tie_embeddings else P["output.weight"]
    logits = F.linear(x, w_out)
    # ignore_index only recognises one value; map every negative target to -1 first
    t = torch.where(targets < 0, torch.full_like(targets, -1), targets)
    return F.cross_entropy(logits.reshape(B * T, -1), t.reshape(B * T), ignore_index=-1,
                           reduction="mean")


def set_threads_from_env():
    n = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if n > 0:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def as_numpy(t):
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
