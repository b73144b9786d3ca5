"""Self-test of tests/torch/reference.py: its vectorised pieces against naive loops written
straight from SPEC (float64, so any difference above 1e-12 is a bug, not rounding).

    /usr/bin/python3 tests/torch/test_reference.py     # exit 0 ok, 1 failure, 77 no torch

Checks: RoPE against the per-pair formula; diff (V1) attention against a per-head, per-token
loop with the SPEC 2 GQA pairing; diff_v2 and transformer attention likewise; the config reader
on a config_print-style text; the naive-GQA negative control differs when n_rep > 1.
"""

import math
import sys

try:
    import torch
except ImportError:
    sys.exit(77)

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import reference as R  # noqa: E402

torch.manual_seed(1)
DT = torch.float64
TOL = 1e-12  # float64 round-off over sums of < 100 terms of O(1) values


def check(name, got, ref):
    err = (got - ref).abs().max().item()
    scale = ref.abs().max().item()
    ok = err <= TOL * max(1.0, scale)
    print("%-40s max|diff| %.3e  (scale %.3e)  %s" % (name, err, scale, "ok" if ok else "FAIL"))
    if not ok:
        sys.exit(1)


def naive_rope(x, theta):
    """x (T, d) of one head; position t = row index."""
    T, d = x.shape
    out = torch.empty_like(x)
    for t in range(T):
        for i in range(d // 2):
            a = t * theta ** (-2.0 * i / d)
            c, s = math.cos(a), math.sin(a)
            out[t, 2 * i] = x[t, 2 * i] * c - x[t, 2 * i + 1] * s
            out[t, 2 * i + 1] = x[t, 2 * i + 1] * c + x[t, 2 * i] * s
    return out


def naive_softmax_row(q_t, K, t, scale):
    """weights over keys 0..t of one query row."""
    s = [scale * float(torch.dot(q_t, K[j])) for j in range(t + 1)]
    m = max(s)
    e = [math.exp(x - m) for x in s]
    z = sum(e)
    return [x / z for x in e]


def cfg_of(**kw):
    flat = {"model.arch": "diff", "model.vocab_size": 11, "model.d_model": 16, "model.n_layers": 2,
            "model.n_heads": 2, "model.n_kv_heads": 2, "model.ffn_dim": 24,
            "model.rope_theta": 10000.0, "model.tie_embeddings": True, "model.norm_eps": 1e-5,
            "model.lambda_init": "schedule", "model.subln": True}
    flat.update({"model." + k: v for k, v in kw.items()})
    return R.ModelConfig(flat)


def rand_params(cfg):
    P = R.init_params(cfg, seed=3, dtype=DT)
    with torch.no_grad():
        for name, t in P.items():  # non-trivial gains, larger weights: sharper softmax
            t.copy_(torch.randn(t.shape, dtype=DT) * (0.3 if "lambda" in name else 0.5)
                    + (1.0 if name.endswith("norm.weight") or "subln" in name else 0.0))
    return P


def test_rope():
    x = torch.randn(2, 3, 7, 8, dtype=DT)
    cos, sin = R.rope_tables(7, 8, 500.0, DT)
    got = R.rope(x, cos, sin)
    ref = torch.stack([torch.stack([naive_rope(x[b, h], 500.0) for h in range(3)])
                       for b in range(2)])
    check("rope vs per-pair formula", got, ref)


def naive_diff(cfg, P, pre, layer, xn):
    B, T, D = xn.shape
    H, Hkv, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    n_rep = H // Hkv
    q = xn @ P[pre + "attn.q_proj.weight"].T
    k = xn @ P[pre + "attn.k_proj.weight"].T
    v = xn @ P[pre + "attn.v_proj.weight"].T
    li = cfg.lambda_init(layer)
    lam = (math.exp(float(P[pre + "attn.lambda_q1"] @ P[pre + "attn.lambda_k1"]))
           - math.exp(float(P[pre + "attn.lambda_q2"] @ P[pre + "attn.lambda_k2"])) + li)
    out = torch.zeros(B, T, H * 2 * d, dtype=DT)
    for b in range(B):
        for h in range(H):
            g = h // n_rep
            Q1 = naive_rope(q[b, :, (2 * h) * d:(2 * h + 1) * d], cfg.rope_theta)
            Q2 = naive_rope(q[b, :, (2 * h + 1) * d:(2 * h + 2) * d], cfg.rope_theta)
            K1 = naive_rope(k[b, :, (2 * g) * d:(2 * g + 1) * d], cfg.rope_theta)
            K2 = naive_rope(k[b, :, (2 * g + 1) * d:(2 * g + 2) * d], cfg.rope_theta)
            V = v[b, :, g * 2 * d:(g + 1) * 2 * d]
            for t in range(T):
                p1 = naive_softmax_row(Q1[t], K1, t, 1 / math.sqrt(d))
                p2 = naive_softmax_row(Q2[t], K2, t, 1 / math.sqrt(d))
                o = sum((p1[j] - lam * p2[j]) * V[j] for j in range(t + 1))
                if cfg.subln:
                    r = math.sqrt(float((o * o).mean()) + cfg.norm_eps)
                    o = o / r * P[pre + "attn.subln.weight"]
                out[b, t, h * 2 * d:(h + 1) * 2 * d] = (1 - li) * o
    return out @ P[pre + "attn.out_proj.weight"].T


def naive_std(cfg, q, k, v, Hq, Hkv, d, b, j, T):
    """One standard head j: (T, d) output."""
    g = j // (Hq // Hkv)
    Q = naive_rope(q[b, :, j * d:(j + 1) * d], cfg.rope_theta)
    K = naive_rope(k[b, :, g * d:(g + 1) * d], cfg.rope_theta)
    V = v[b, :, g * d:(g + 1) * d]
    rows = []
    for t in range(T):
        p = naive_softmax_row(Q[t], K, t, 1 / math.sqrt(d))
        rows.append(sum(p[i] * V[i] for i in range(t + 1)))
    return torch.stack(rows)


def naive_v2(cfg, P, pre, xn):
    B, T, D = xn.shape
    H, Hkv, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    q = xn @ P[pre + "attn.q_proj.weight"].T
    k = xn @ P[pre + "attn.k_proj.weight"].T
    v = xn @ P[pre + "attn.v_proj.weight"].T
    lam = torch.sigmoid(xn @ P[pre + "attn.lambda_proj.weight"].T)
    out = torch.zeros(B, T, H * d, dtype=DT)
    for b in range(B):
        for h in range(H):
            a0 = naive_std(cfg, q, k, v, 2 * H, Hkv, d, b, 2 * h, T)
            a1 = naive_std(cfg, q, k, v, 2 * H, Hkv, d, b, 2 * h + 1, T)
            out[b, :, h * d:(h + 1) * d] = a0 - lam[b, :, h:h + 1] * a1
    return out @ P[pre + "attn.out_proj.weight"].T


def naive_tf(cfg, P, pre, xn):
    B, T, D = xn.shape
    H, Hkv, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    q = xn @ P[pre + "attn.q_proj.weight"].T
    k = xn @ P[pre + "attn.k_proj.weight"].T
    v = xn @ P[pre + "attn.v_proj.weight"].T
    out = torch.zeros(B, T, H * d, dtype=DT)
    for b in range(B):
        for j in range(H):
            out[b, :, j * d:(j + 1) * d] = naive_std(cfg, q, k, v, H, Hkv, d, b, j, T)
    return out @ P[pre + "attn.out_proj.weight"].T


def test_attention():
    B, T = 2, 6
    for kw in ({"n_heads": 2, "n_kv_heads": 2}, {"n_heads": 4, "n_kv_heads": 2, "d_model": 32},
               {"n_heads": 4, "n_kv_heads": 1, "d_model": 32, "subln": False, "lambda_init": 0.5}):
        cfg = cfg_of(**kw)
        P = rand_params(cfg)
        xn = torch.randn(B, T, cfg.d_model, dtype=DT)
        cos, sin = R.rope_tables(T, cfg.head_dim, cfg.rope_theta, DT)
        with torch.no_grad():
            got = R.attn_diff(cfg, P, "layers.1.", 1, xn, cos, sin)
            ref = naive_diff(cfg, P, "layers.1.", 1, xn)
            check("diff attention %s" % kw, got, ref)
            bad = R.attn_diff(cfg, P, "layers.1.", 1, xn, cos, sin, naive_gqa=True)
            differs = (bad - ref).abs().max().item() > 1e-6
            if (cfg.n_heads // cfg.n_kv_heads > 1) != differs:
                print("naive-GQA control: expected %s" % ("a difference" if not differs else "none"))
                sys.exit(1)
    for kw in ({"arch": "diff_v2", "n_heads": 2, "n_kv_heads": 1},
               {"arch": "diff_v2", "n_heads": 2, "n_kv_heads": 2},
               {"arch": "transformer", "n_heads": 4, "n_kv_heads": 2},
               {"arch": "transformer", "n_heads": 2, "n_kv_heads": 2}):
        cfg = cfg_of(**kw)
        P = rand_params(cfg)
        xn = torch.randn(B, T, cfg.d_model, dtype=DT)
        cos, sin = R.rope_tables(T, cfg.head_dim, cfg.rope_theta, DT)
        with torch.no_grad():
            if cfg.arch == "diff_v2":
                got, ref = R.attn_diff_v2(cfg, P, "layers.0.", xn, cos, sin), naive_v2(cfg, P, "layers.0.", xn)
            else:
                got, ref = R.attn_transformer(cfg, P, "layers.0.", xn, cos, sin), naive_tf(cfg, P, "layers.0.", xn)
        check("%s attention %s" % (cfg.arch, kw), got, ref)


def test_config_reader():
    text = """# resolved config
model:
  arch: diff
  d_model: 32
  rope_theta: 1e4
  lambda_init: schedule
  tie_embeddings: false
  norm_eps: 1.0e-05
optim:
  betas: [0.9, 0.95]
data:
  train:
    - "a.bin"
    - b.bin
launch:
  slurm:
    partition: "gpu"  # a comment
"""
    f = R.parse_yaml_config(text)
    exp = {"model.arch": "diff", "model.d_model": 32, "model.rope_theta": 1e4,
           "model.lambda_init": "schedule", "model.tie_embeddings": False, "model.norm_eps": 1e-5,
           "optim.betas": [0.9, 0.95], "data.train": ["a.bin", "b.bin"],
           "launch.slurm.partition": "gpu"}
    for k, v in exp.items():
        if f.get(k) != v:
            print("config reader: %s = %r, expected %r" % (k, f.get(k), v))
            sys.exit(1)
    print("%-40s ok" % "config reader")


def test_lambda_init():
    cfg = cfg_of()
    got = [round(cfg.lambda_init(l), 3) for l in range(4)]
    ok = got == [0.2, 0.356, 0.471, 0.556]  # SPEC 2's table, 0-based layers
    print("%-40s %s %s" % ("lambda_init schedule", got, "ok" if ok else "FAIL"))
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    torch.set_num_threads(1)
    test_config_reader()
    test_lambda_init()
    test_rope()
    test_attention()
    print("reference self-test: ok")
