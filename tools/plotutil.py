"""Shared helpers of the tools/plot_*.py scripts: strict input reading with errors that name the
file (and line), run labels, and writing a PNG with matplotlib's Agg backend (no display)."""

import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")  # before pyplot: the scripts run on machines without a display
import matplotlib.pyplot as plt  # noqa: E402  (must follow matplotlib.use)

# One colour per run, in argument order (matplotlib's default cycle, fixed here so that every
# figure of a comparison gives run i the same colour).
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]


class InputError(Exception):
    """Malformed input: the message names the file (and line) and what was expected."""


def fail(msg):
    """Prints `plot: msg` on stderr and exits 2 (the difftrain convention for bad input)."""
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "plot"
    print(f"{prog}: {msg}", file=sys.stderr)
    sys.exit(2)


def colour(i):
    return COLOURS[i % len(COLOURS)]


def is_number(x):
    """True for a finite int or float (not a bool, not null)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def load_json(path):
    """Reads one JSON object from path; raises InputError naming path:line:col if it is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}:{e.colno}: not JSON: {e.msg}") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def run_labels(paths, labels_arg):
    """--labels a,b,... (one per file) or, without it, each file's name without its extension."""
    if labels_arg is None:
        return [os.path.splitext(os.path.basename(p))[0] for p in paths]
    labels = labels_arg.split(",")
    if len(labels) != len(paths):
        raise InputError(f"--labels: {len(labels)} labels for {len(paths)} files "
                         "(give one per file, comma-separated)")
    return labels


def save(fig, out):
    """Writes fig as a PNG to out (100 dpi) and closes it."""
    try:
        fig.savefig(out, dpi=100, format="png")
    except OSError as e:
        raise InputError(f"--out {out}: cannot write: {e.strerror}") from None
    finally:
        plt.close(fig)
