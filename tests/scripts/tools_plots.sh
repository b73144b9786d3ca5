#!/usr/bin/env bash
# tools/plot_*.py on small synthetic inputs: each writes a PNG (signature, IHDR size plausible,
# not tiny), and malformed input exits 2 with a message naming the file (and line).
# usage: tools_plots.sh TOOLS_DIR      exits 77 (skipped) without /usr/bin/python3 + matplotlib
set -u
tools=${1:?usage: tools_plots.sh TOOLS_DIR}
py=/usr/bin/python3
if ! [ -x "$py" ] || ! "$py" -c 'import matplotlib' 2>/dev/null; then
  echo "SKIP: /usr/bin/python3 cannot import matplotlib (apt-get install python3-matplotlib)"
  exit 77
fi
tmp=$(mktemp -d); [ -n "${KEEP_TMP:-}" ] || trap 'rm -rf "$tmp"' EXIT
export MPLCONFIGDIR=$tmp/mpl   # matplotlib's cache, away from a possibly read-only HOME
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }

# png FILE: the PNG signature, then IHDR's width and height (big-endian at bytes 16..23) within
# 300..4000 pixels, and more than 5 kB (an empty canvas of that size compresses to ~3 kB).
png() {
  local f=$1 sig w h
  [ -s "$f" ] || { bad "$f: not written"; return; }
  sig=$(od -An -tx1 -N8 "$f" | tr -d ' \n')
  [ "$sig" = 89504e470d0a1a0a ] || { bad "$f: no PNG signature ($sig)"; return; }
  w=$((16#$(od -An -tx1 -j16 -N4 "$f" | tr -d ' \n')))
  h=$((16#$(od -An -tx1 -j20 -N4 "$f" | tr -d ' \n')))
  if [ "$w" -lt 300 ] || [ "$w" -gt 4000 ] || [ "$h" -lt 300 ] || [ "$h" -gt 4000 ]; then
    bad "$f: implausible size ${w}x${h}"; return
  fi
  [ "$(stat -c %s "$f")" -gt 5000 ] || bad "$f: only $(stat -c %s "$f") bytes"
  echo "ok: $(basename "$f") ${w}x${h}"
}

# ok NAME CMD...: the command exits 0
ok() { local n=$1; shift; "$@" >"$tmp/$n.log" 2>&1 || { bad "$n: exit $?: $(cat "$tmp/$n.log")"; }; }

# rejects NAME PATTERN CMD...: the command exits 2 and its stderr matches PATTERN (grep -E)
rejects() {
  local n=$1 pat=$2 rc; shift 2
  "$@" >"$tmp/$n.out" 2>"$tmp/$n.err"; rc=$?
  if [ $rc -ne 2 ]; then bad "$n: exit $rc, expected 2 ($(cat "$tmp/$n.err"))"
  elif ! grep -Eq "$pat" "$tmp/$n.err"; then bad "$n: stderr does not match '$pat': $(cat "$tmp/$n.err")"
  else echo "ok: $n rejected: $(head -1 "$tmp/$n.err")"; fi
  [ -e "$tmp/$n.png" ] && bad "$n: wrote a PNG despite the error"
}

# ---- synthetic inputs ----
"$py" - "$tmp" <<'PY' || { echo "FAIL: cannot write the inputs"; exit 1; }
import json, math, os, sys
d = sys.argv[1]
def metrics(path, scale, resume):
    with open(path, "w") as f:
        steps = list(range(1, 201, 5))
        if resume:  # a resumed run logs steps 101.. again (log.metrics is appended to)
            steps = [s for s in steps if s <= 131] + [s for s in steps if s >= 101]
        for s in steps:
            o = {"step": s, "loss": 10.5 * scale * math.exp(-s / 60) + 2 + 0.1 * math.sin(s),
                 "lr": 6e-4, "grad_norm": 0.5, "tokens_per_s": 5000.0, "elapsed_s": s * 0.1}
            if s == 6: o["loss"] = None           # a non-finite loss: metrics.c writes null
            if s % 50 == 1: o["val_loss"] = 10 * scale * math.exp(-s / 60) + 2.1
            if resume: o["bytes_tp"] = 1000; o["bytes_dp"] = 2000
            f.write(json.dumps(o, separators=(",", ":")) + "\n")
metrics(f"{d}/diff.jsonl", 0.9, False)
metrics(f"{d}/base.jsonl", 1.0, True)
def needles(path, acc):
    ns = {"1": acc, "2": acc * 0.8, "4": acc * 0.5, "6": acc * 0.3}
    depth = {"0.0-0.2": acc, "0.2-0.4": acc * 0.7, "0.4-0.6": acc * 0.6, "0.6-0.8": None,
             "0.8-1.0": acc * 0.9}
    o = {"task": "needles", "accuracy": acc * 0.6, "correct": 0, "queries": 256,
         "by_needles": ns, "queries_by_needles": {k: 64 for k in ns},
         "by_depth": depth, "queries_by_depth": {k: (0 if v is None else 64) for k, v in depth.items()},
         "checkpoint": "ckpt/step_000400", "step": 400, "data": []}
    json.dump(o, open(path, "w"))
needles(f"{d}/diff_needles.json", 0.9)
needles(f"{d}/base_needles.json", 0.5)
def analysis(path, arch, L=4, H=4):
    """The layout `difftrain analyze --out` writes (launch/cmd_analyze.c)."""
    a = 1.0 if arch == "diff" else 0.6  # the two runs differ, so both lines show
    layers = []
    for l in range(L):
        heads = [{"head": h, "span_mass": a * (0.1 * l + 0.02 * h), "rest_abs_mass": 0.9 - 0.1 * l,
                  "rest_signed_mass": 0.5 - 0.1 * l, "entropy": 3.0 - 0.3 * a * l + 0.1 * h,
                  "gini": 0.5 + 0.05 * l, "sink_mass": 0.3 / (l + a), "lambda": None,
                  "cos_relevant": None, "extra_stat": None} for h in range(H)]
        lay = {"layer": l, "heads": heads,
               "lambda": 0.8 - 0.6 * math.exp(-0.3 * l) if arch == "diff" else None,
               "logits": {"top1": 10.0 + l, "top100": 5.0, "median": 0.1, "count": 1000},
               "hidden": {"top1": 3.0 * a + l, "top100": 2.0, "median": 0.5, "count": 1000}}
        layers.append(lay)
    json.dump({"arch": arch, "layers": layers}, open(path, "w"))
analysis(f"{d}/diff_attn.json", "diff")
analysis(f"{d}/base_attn.json", "base")
PY

# ---- well-formed inputs draw a PNG ----
ok loss "$py" "$tools/plot_loss.py" "$tmp/diff.jsonl" "$tmp/base.jsonl" --labels DIFF,baseline \
  --out "$tmp/loss.png"
png "$tmp/loss.png"
ok loss_val "$py" "$tools/plot_loss.py" "$tmp/diff.jsonl" --val-only --log-x --out "$tmp/loss_val.png"
png "$tmp/loss_val.png"
cmp -s "$tmp/loss.png" "$tmp/loss_val.png" && bad "--val-only --log-x drew the same image"
ok needles "$py" "$tools/plot_needles.py" "$tmp/diff_needles.json" "$tmp/base_needles.json" \
  --labels DIFF,baseline --out "$tmp/needles.png"
png "$tmp/needles.png"
ok attn "$py" "$tools/plot_attention.py" "$tmp/diff_attn.json" "$tmp/base_attn.json" --out "$tmp/attn.png"
png "$tmp/attn.png"
ok attn1 "$py" "$tools/plot_attention.py" "$tmp/base_attn.json" --out "$tmp/attn1.png"
png "$tmp/attn1.png"

# ---- malformed inputs exit 2 naming the file (and line) ----
head -2 "$tmp/diff.jsonl" > "$tmp/trunc.jsonl"; printf '{"step":11,"loss":' >> "$tmp/trunc.jsonl"
rejects trunc 'trunc\.jsonl:3' "$py" "$tools/plot_loss.py" "$tmp/diff.jsonl" "$tmp/trunc.jsonl" --out "$tmp/trunc.png"
printf '{"step":1,"loss":3}\n{"step":"2","loss":2.5}\n' > "$tmp/strstep.jsonl"
rejects strstep 'strstep\.jsonl:2.*step' "$py" "$tools/plot_loss.py" "$tmp/strstep.jsonl" --out "$tmp/strstep.png"
printf '{"step":1,"loss":3}\n{"step":2,"loss":"x"}\n' > "$tmp/strloss.jsonl"
rejects strloss 'strloss\.jsonl:2.*loss' "$py" "$tools/plot_loss.py" "$tmp/strloss.jsonl" --out "$tmp/strloss.png"
: > "$tmp/empty.jsonl"
rejects empty 'empty\.jsonl' "$py" "$tools/plot_loss.py" "$tmp/empty.jsonl" --out "$tmp/empty.png"
printf '{"step":1,"loss":3}\n' > "$tmp/noval.jsonl"
rejects noval 'noval\.jsonl.*val_loss' "$py" "$tools/plot_loss.py" "$tmp/noval.jsonl" --val-only --out "$tmp/noval.png"
rejects missing 'nosuch\.jsonl' "$py" "$tools/plot_loss.py" "$tmp/nosuch.jsonl" --out "$tmp/missing.png"
rejects labels 'labels' "$py" "$tools/plot_loss.py" "$tmp/diff.jsonl" --labels a,b --out "$tmp/labels.png"
"$py" -c 'import json,sys; o=json.load(open(sys.argv[1])); o["task"]="loss"; json.dump(o,open(sys.argv[2],"w"))' \
  "$tmp/diff_needles.json" "$tmp/task.json"
rejects task 'task\.json.*needles' "$py" "$tools/plot_needles.py" "$tmp/task.json" --out "$tmp/task.png"
"$py" -c 'import json,sys; o=json.load(open(sys.argv[1])); o["by_needles"]["1"]=1.5; json.dump(o,open(sys.argv[2],"w"))' \
  "$tmp/diff_needles.json" "$tmp/acc.json"
rejects acc 'acc\.json.*by_needles' "$py" "$tools/plot_needles.py" "$tmp/diff_needles.json" "$tmp/acc.json" --out "$tmp/acc.png"
printf '{"task": "needles",\n "accuracy": }\n' > "$tmp/notjson.json"
rejects notjson 'notjson\.json:2' "$py" "$tools/plot_needles.py" "$tmp/notjson.json" --out "$tmp/notjson.png"
printf '{"arch": "diff", "layers": []}\n' > "$tmp/nolayers.json"
rejects nolayers 'nolayers\.json.*layers' "$py" "$tools/plot_attention.py" "$tmp/nolayers.json" --out "$tmp/nolayers.png"
printf '{"layers": [{"layer": 0, "heads": [{"head": 0, "entropy": "high"}]}]}\n' > "$tmp/strstat.json"
rejects strstat 'strstat\.json.*entropy' "$py" "$tools/plot_attention.py" "$tmp/strstat.json" --out "$tmp/strstat.png"

if [ "$fails" -ne 0 ]; then echo "$fails check(s) failed"; exit 1; fi
echo "all tools checks passed"
