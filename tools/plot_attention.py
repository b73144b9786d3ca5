#!/usr/bin/python3
"""Plots per-layer attention statistics of one or more models (e.g. DIFF vs baseline).

    plot_attention.py ANALYZE.json [ANALYZE2.json ...] [--labels a,b] [--out attn.png]

Input: the --out JSON of `difftrain analyze`:

    {"arch": "diff" | "diff_v2" | "transformer",
     "layers": [{"layer": 0,
                 "lambda": 0.2 | [0.4, 0.5, ...] | null,   (diff: the layer's scalar; diff_v2: per head)
                 "logits": {"top1": .., "top100": .., "median": .., "count": ..},
                 "hidden": {"top1": .., ...},
                 "heads": [{"head": 0, "span_mass": .., "rest_abs_mass": .., "rest_signed_mass": ..,
                            "entropy": .., "gini": .., "sink_mass": .., "cos_relevant": .., ...}]},
                ...]}

Every per-head key with a numeric value (null: skipped) other than "head" is a statistic; the
known ones come first (the order of KNOWN below), then any others in alphabetical order. Each
statistic present in some file gets a panel: its mean over the heads of each layer as a line
with markers, the heads' min..max as a band, one colour per file. The layer-level "lambda" (a
list is averaged) and the top-1 magnitudes of the attention logits and hidden states get panels
of their own. Malformed input exits 2 naming the file and key.
"""

import argparse
import math
import sys

from plotutil import InputError, colour, fail, is_number, load_json, plt, run_labels, save

KNOWN = ["span_mass", "rest_abs_mass", "rest_signed_mass", "sink_mass", "entropy", "gini",
         "cos_relevant", "cos_irrelevant", "kl_relevant", "kl_irrelevant"]
LAYER_KEYS = ["lambda", "logits_top1", "hidden_top1"]
TITLES = {"span_mass": "attention mass on the answer span",
          "rest_abs_mass": "|attention| on the rest",
          "rest_signed_mass": "signed attention on the rest",
          "sink_mass": "attention on the first token (sink)",
          "entropy": "attention entropy (nats)", "gini": "attention Gini coefficient",
          "cos_relevant": "cos(P1, P2) on the span", "cos_irrelevant": "cos(P1, P2) elsewhere",
          "kl_relevant": "KL(P1||P2) on the span", "kl_irrelevant": "KL(P1||P2) elsewhere",
          "lambda": "lambda (per layer)", "logits_top1": "top-1 |attention logit|",
          "hidden_top1": "top-1 |hidden state|"}


def read_analysis(path):
    """Returns (arch, {stat: [(layer, mean, min, max)]}) sorted by layer."""
    obj = load_json(path)
    arch = obj.get("arch")
    layers = obj.get("layers")
    if not isinstance(layers, list) or not layers:
        raise InputError(f"{path}: expected \"layers\" to be a non-empty list")
    stats = {}
    seen = set()
    for i, lay in enumerate(layers):
        where = f"{path}: layers[{i}]"
        if not isinstance(lay, dict):
            raise InputError(f"{where}: expected an object")
        layer = lay.get("layer")
        if not isinstance(layer, int) or isinstance(layer, bool) or layer < 0:
            raise InputError(f"{where}: expected \"layer\" to be a non-negative integer, "
                             f"got {layer!r}")
        if layer in seen:
            raise InputError(f"{where}: layer {layer} appears twice")
        seen.add(layer)
        lam = lay.get("lambda")
        if isinstance(lam, list) and lam and all(is_number(x) for x in lam):
            stats.setdefault("lambda", []).append((layer, math.fsum(lam) / len(lam), min(lam),
                                                   max(lam)))
        elif lam is not None:
            if not is_number(lam):
                raise InputError(f"{where}: expected \"lambda\" to be a number, a list of "
                                 f"numbers or null, got {lam!r}")
            stats.setdefault("lambda", []).append((layer, lam, lam, lam))
        for key in ("logits", "hidden"):
            mag = lay.get(key)
            if mag is None:
                continue
            if not isinstance(mag, dict) or not is_number(mag.get("top1")):
                raise InputError(f"{where}: expected \"{key}\" to be an object with a numeric "
                                 f"\"top1\"")
            t1 = float(mag["top1"])
            stats.setdefault(f"{key}_top1", []).append((layer, t1, t1, t1))
        heads = lay.get("heads", [])
        if not isinstance(heads, list):
            raise InputError(f"{where}: expected \"heads\" to be a list")
        values = {}
        for j, h in enumerate(heads):
            if not isinstance(h, dict):
                raise InputError(f"{where}.heads[{j}]: expected an object")
            for k, v in h.items():
                if k == "head" or v is None:
                    continue
                if not is_number(v):
                    raise InputError(f"{where}.heads[{j}]: expected \"{k}\" to be a finite "
                                     f"number or null, got {v!r}")
                values.setdefault(k, []).append(float(v))
        for k, vs in values.items():
            stats.setdefault(k, []).append((layer, math.fsum(vs) / len(vs), min(vs), max(vs)))
    if not stats:
        raise InputError(f"{path}: no statistics (no numeric per-head keys, lambda or magnitudes)")
    return arch, {k: sorted(v) for k, v in stats.items()}


def stat_order(names):
    known = [k for k in KNOWN if k in names]
    other = sorted(k for k in names if k not in KNOWN and k not in LAYER_KEYS)
    return known + other + [k for k in LAYER_KEYS if k in names]


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", metavar="ANALYZE.json",
                    help="--out files of `difftrain analyze`")
    ap.add_argument("--labels", help="comma-separated legend labels, one per file "
                    "(default: the file names, with the arch)")
    ap.add_argument("--out", default="attn.png", help="PNG to write (default attn.png)")
    args = ap.parse_args(argv)
    try:
        labels = run_labels(args.files, args.labels)
        runs = [read_analysis(p) for p in args.files]
        if args.labels is None:
            labels = [f"{lab} ({arch})" if isinstance(arch, str) else lab
                      for lab, (arch, _) in zip(labels, runs)]
        names = stat_order({k for _, s in runs for k in s})
        ncols = min(3, len(names))
        nrows = math.ceil(len(names) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows + 0.4),
                                 squeeze=False)
        for ax, name in zip(axes.flat, names):
            for i, (_, stats) in enumerate(runs):
                if name not in stats:
                    continue
                layer, mean, lo, hi = zip(*stats[name])
                ax.plot(layer, mean, color=colour(i), marker="o", markersize=4)
                if name not in LAYER_KEYS or name == "lambda":
                    ax.fill_between(layer, lo, hi, color=colour(i), alpha=0.15, linewidth=0)
            ax.set_title(TITLES.get(name, name), fontsize="medium")
            ax.set_xlabel("layer")
            ax.set_ylabel(name, fontsize="small")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(True, alpha=0.3)
        for ax in list(axes.flat)[len(names):]:
            ax.set_visible(False)
        handles = [plt.Line2D([], [], color=colour(i), marker="o") for i in range(len(runs))]
        fig.legend(handles, labels, loc="lower center", ncol=min(len(runs), 4),
                   fontsize="small", frameon=False)
        fig.suptitle("attention statistics per layer (line: mean over the heads, band: min..max)")
        fig.tight_layout(rect=(0, 0.4 / (3.6 * nrows + 0.4), 1, 0.98))  # legend below, title above
        save(fig, args.out)
    except InputError as e:
        fail(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
