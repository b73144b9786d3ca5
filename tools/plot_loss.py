#!/usr/bin/python3
"""Plots the training and validation loss of one or more difftrain runs on one axis.

    plot_loss.py RUN.jsonl [RUN2.jsonl ...] [--labels a,b] [--out loss.png] [--val-only] [--log-x]

Each RUN.jsonl is a `log.metrics` file: JSON Lines, one object per logged step with an integer
`step` (1-based) and `loss` (a number, or null where it was not finite), and `val_loss` on the
steps where validation ran; other keys (lr, grad_norm, tokens_per_s, elapsed_s, bytes_*) are
ignored. The file is opened for appending, so a resumed run logs some steps twice: the last line
of a step wins. Train loss is drawn as a light line, validation loss as markers joined by a line,
one colour per run. Malformed input (a line that is not a JSON object, a missing or non-integer
step, a loss that is neither a number nor null, a file with no points to plot) exits 2 with
FILE:LINE and what was expected.
"""

import argparse
import json
import sys

from plotutil import InputError, colour, fail, is_number, plt, run_labels, save


def read_metrics(path):
    """Returns (train, val): lists of (step, value) sorted by step, last line of a step winning."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    train, val = {}, {}
    for n, line in enumerate(lines, 1):
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: not a JSON object: {e.msg} (column {e.colno})") from None
        if not isinstance(obj, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        step = obj.get("step")
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise InputError(f"{where}: expected \"step\" to be a non-negative integer, "
                             f"got {json.dumps(step)}")
        for key, points in (("loss", train), ("val_loss", val)):
            if key not in obj:
                if key == "loss":
                    raise InputError(f"{where}: missing \"loss\"")
                continue
            x = obj[key]
            if x is None:  # non-finite in training (metrics.c writes null)
                points.pop(step, None)
            elif is_number(x):
                points[step] = float(x)
            else:
                raise InputError(f"{where}: expected \"{key}\" to be a number or null, "
                                 f"got {json.dumps(x)}")
    if not lines:
        raise InputError(f"{path}: empty (no metrics lines)")
    return sorted(train.items()), sorted(val.items())


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", metavar="RUN.jsonl", help="log.metrics files")
    ap.add_argument("--labels", help="comma-separated legend labels, one per file "
                    "(default: the file names)")
    ap.add_argument("--out", default="loss.png", help="PNG to write (default loss.png)")
    ap.add_argument("--val-only", action="store_true", help="plot validation loss only")
    ap.add_argument("--log-x", action="store_true", help="logarithmic step axis")
    args = ap.parse_args(argv)
    try:
        labels = run_labels(args.runs, args.labels)
        runs = [read_metrics(p) for p in args.runs]
        for path, (train, val) in zip(args.runs, runs):
            if args.val_only and not val:
                raise InputError(f"{path}: no \"val_loss\" values to plot (--val-only)")
            if not train and not val:
                raise InputError(f"{path}: no finite \"loss\" values to plot")

        fig, ax = plt.subplots(figsize=(9, 5.5))
        for i, ((train, val), label) in enumerate(zip(runs, labels)):
            c = colour(i)
            if train and not args.val_only:
                xs, ys = zip(*train)
                ax.plot(xs, ys, color=c, alpha=0.35, linewidth=1.0, label=f"{label} train")
            if val:
                xs, ys = zip(*val)
                ax.plot(xs, ys, color=c, marker="o", markersize=4, linewidth=1.5,
                        label=f"{label} val")
        if args.log_x:
            ax.set_xscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("validation loss" if args.val_only else "loss (cross-entropy, nats)")
        ax.set_title("validation loss" if args.val_only else "training and validation loss")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        save(fig, args.out)
    except InputError as e:
        fail(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
