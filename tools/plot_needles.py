#!/usr/bin/python3
"""Plots multi-needle retrieval accuracy of one or more runs as grouped bars.

    plot_needles.py EVAL1.json [EVAL2.json ...] [--labels a,b] [--out needles.png]

Each EVAL.json is the --out file of `difftrain eval --task needles`: {"task": "needles",
"accuracy", "correct", "queries", "by_needles": {"N": accuracy}, "queries_by_needles": {"N":
count}, "by_depth": {"0.0-0.2": accuracy or null, ...}, "queries_by_depth": {...}, ...}. The
left panel has one group of bars per number of needles N, the right panel one group per depth
bucket of the queried needle; one colour per run (e.g. DIFF vs baseline), each bar annotated
with its number of queries (a bucket without queries has no bar, only "n=0"). The legend gives
each run's overall accuracy. Malformed input exits 2 naming the file and the key.
"""

import argparse
import sys

from plotutil import InputError, colour, fail, is_number, load_json, plt, run_labels, save


def check_table(path, obj, acc_key, n_key, parse_key):
    """Returns {key: (accuracy or None, queries)} of one by_* table, checked against its counts."""
    acc, cnt = obj.get(acc_key), obj.get(n_key)
    for k, v in ((acc_key, acc), (n_key, cnt)):
        if not isinstance(v, dict):
            raise InputError(f"{path}: expected \"{k}\" to be an object, got {type(v).__name__}")
    if set(acc) != set(cnt):
        raise InputError(f"{path}: \"{acc_key}\" and \"{n_key}\" have different keys")
    table = {}
    for k in acc:
        try:
            parse_key(k)
        except ValueError:
            raise InputError(f"{path}: \"{acc_key}\": unexpected key \"{k}\"") from None
        a, n = acc[k], cnt[k]
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise InputError(f"{path}: \"{n_key}\".\"{k}\": expected a count, got {n!r}")
        if a is None and n == 0:
            table[k] = (None, 0)
        elif is_number(a) and 0.0 <= a <= 1.0:
            table[k] = (float(a), n)
        else:
            raise InputError(f"{path}: \"{acc_key}\".\"{k}\": expected an accuracy in [0, 1] "
                             f"(or null with 0 queries), got {a!r}")
    return table


def depth_lo(key):
    """The lower bound of a depth bucket "0.2-0.4" (ValueError if it is not one)."""
    lo, hi = key.split("-")
    if float(hi) <= float(lo):
        raise ValueError(key)
    return float(lo)


def read_eval(path):
    obj = load_json(path)
    if obj.get("task") != "needles":
        raise InputError(f"{path}: expected \"task\": \"needles\" (the --out of `difftrain eval "
                         f"--task needles`), got {obj.get('task')!r}")
    for k in ("accuracy", "queries"):
        if not is_number(obj.get(k)) and obj.get(k) is not None:
            raise InputError(f"{path}: expected \"{k}\" to be a number, got {obj.get(k)!r}")
    return {"accuracy": obj.get("accuracy"), "queries": obj.get("queries"),
            "needles": check_table(path, obj, "by_needles", "queries_by_needles", int),
            "depth": check_table(path, obj, "by_depth", "queries_by_depth", depth_lo)}


def grouped_bars(ax, runs, key, order, xlabel):
    cats = sorted({k for r in runs for k in r[key]}, key=order)
    k = len(runs)
    width = 0.8 / k
    for i, run in enumerate(runs):
        for j, cat in enumerate(cats):
            x = j - 0.4 + width * (i + 0.5)
            acc, n = run[key].get(cat, (None, 0))
            if acc is not None:
                ax.bar(x, acc, width * 0.92, color=colour(i))
            ax.annotate(f"n={n}", (x, acc or 0.0), xytext=(0, 2), textcoords="offset points",
                        ha="center", va="bottom", fontsize=7, rotation=90 if k > 2 else 0)
    ax.set_xticks(range(len(cats)))
    ax.set_xticklabels(cats)
    ax.set_xlabel(xlabel)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("accuracy (all 6 digits right)")
    ax.grid(True, axis="y", alpha=0.3)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("evals", nargs="+", metavar="EVAL.json",
                    help="--out files of `difftrain eval --task needles`")
    ap.add_argument("--labels", help="comma-separated legend labels, one per file "
                    "(default: the file names)")
    ap.add_argument("--out", default="needles.png", help="PNG to write (default needles.png)")
    args = ap.parse_args(argv)
    try:
        labels = run_labels(args.evals, args.labels)
        runs = [read_eval(p) for p in args.evals]
        legend = [f"{lab} (overall {r['accuracy']:.3f} of {r['queries']})"
                  if r["accuracy"] is not None else f"{lab} (no queries)"
                  for lab, r in zip(labels, runs)]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5))
        grouped_bars(ax1, runs, "needles", int, "number of needles N")
        ax1.set_title("accuracy by number of needles")
        grouped_bars(ax2, runs, "depth", depth_lo, "depth of the queried needle")
        ax2.set_title("accuracy by needle depth")
        handles = [plt.Rectangle((0, 0), 1, 1, color=colour(i)) for i in range(len(runs))]
        fig.legend(handles, legend, loc="lower center", ncol=min(len(runs), 3),
                   fontsize="small", frameon=False)
        fig.suptitle("multi-needle retrieval")
        fig.tight_layout(rect=(0, 0.07 + 0.04 * ((len(runs) - 1) // 3), 1, 1))
        save(fig, args.out)
    except InputError as e:
        fail(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
