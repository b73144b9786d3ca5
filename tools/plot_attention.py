#!/usr/bin/python3
"""Plots per-layer attention statistics of one or more models (e.g. DIFF vs baseline).

    plot_attention.py ANALYZE.json [ANALYZE2.json ...] [--labels a,b] [--out attn.png]

Input (PROVISIONAL: meant for the --out of `difftrain analyze`, whose format is not fixed yet;
check this against the real output): one JSON object

    {"arch": "diff" | "base",                     (optional, shown in the legend)
     "layers": [{"layer": 0,                      (integer, the x axis)
                 "lambda": 0.8,                   (optional number: DIFF's lambda of the layer)
                 "heads": [{"head": 0, "answer_mass": 0.41, "rest_mass": 0.59,
                            "entropy": 2.3, "gini": 0.7, "sink_mass": 0.12, ...}, ...]},
                ...]}

Every per-head key with a numeric value (null: skipped) other than "head" is a statistic; the
known ones come first, in the order answer_mass (attention on the answer/needle tokens),
rest_mass (on the rest of the context), sink_mass (on the first token), entropy, gini, then any
others in alphabetical order. Each statistic present in some file gets a panel: its mean over the
heads of each layer as a line with markers, the heads' min..max as a band, one colour per file.
A layer-level "lambda" gets its own panel. Malformed input exits 2 naming the file and key.
"""

import argparse
import math
import sys

from plotutil import InputError, colour, fail, is_number, load_json, plt, run_labels, save

KNOWN = ["answer_mass", "rest_mass", "sink_mass", "entropy", "gini"]
TITLES = {"answer_mass": "attention mass on the answer",
          "rest_mass": "attention mass on the rest",
          "sink_mass": "attention mass on the first token (sink)",
          "entropy": "attention entropy (nats)", "gini": "attention Gini coefficient",
          "lambda": "lambda (per layer)"}


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
        if lam is not None:
            if not is_number(lam):
                raise InputError(f"{where}: expected \"lambda\" to be a number, got {lam!r}")
            stats.setdefault("lambda", []).append((layer, lam, lam, lam))
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
        raise InputError(f"{path}: no statistics (no numeric per-head keys and no \"lambda\")")
    return arch, {k: sorted(v) for k, v in stats.items()}


def stat_order(names):
    known = [k for k in KNOWN if k in names]
    other = sorted(k for k in names if k not in KNOWN and k != "lambda")
    return known + other + (["lambda"] if "lambda" in names else [])


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
                if name != "lambda":
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
        fig.tight_layout(rect=(0, 0.4 / (3.6 * nrows + 0.4), 1, 1))  # room for the legend
        save(fig, args.out)
    except InputError as e:
        fail(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
