#!/usr/bin/env bash
# The demo: trains a small Differential Transformer on the English text of Debian's `fortunes`
# package for a few minutes on CPU, then compares its losses with the corpus's byte-level
# unigram entropy (the loss of the best model that ignores context).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/install-deps.sh"
bash "$root/scripts/build.sh"
dt="${DIFFTRAIN_BUILD_DIR:-$root/build}/difftrain"
work="${DEMO_DIR:-$root/demo-run}"
mkdir -p "$work"

corpus=()
for f in /usr/share/games/fortunes/*; do
  case "$f" in *.dat|*.u8) continue ;; esac
  [ -f "$f" ] && [ ! -L "$f" ] && corpus+=("$f")
done
"$dt" data prepare --out "$work/data" --name fortunes --split-on % --val-fraction 0.05 "${corpus[@]}"
"$dt" data info "$work/data/fortunes_val_000000.bin" | tee "$work/val_info.txt"
rm -f "$work/metrics.jsonl"
"$dt" train "$root/configs/demo.yaml" data.train="$work/data/fortunes_train_*.bin" \
  data.val="$work/data/fortunes_val_000000.bin" log.metrics="$work/metrics.jsonl" "$@"

entropy=$(grep -o 'unigram entropy [0-9.]*' "$work/val_info.txt" | head -1 | awk '{print $3}')
/usr/bin/python3 - "$work/metrics.jsonl" "$entropy" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
first, last = rows[0], rows[-1]
val = [r["val_loss"] for r in rows if r.get("val_loss") is not None]
H = float(sys.argv[2])
print()
print(f"unigram entropy of the validation text: {H:.3f} nats/byte (a model that ignores context)")
print(f"train loss: {first['loss']:.3f} at step {first['step']} -> {last['loss']:.3f} at step {last['step']}")
if val:
    print(f"validation loss: {val[-1]:.3f} nats/byte ({val[-1] / H:.0%} of the unigram entropy)")
PY
