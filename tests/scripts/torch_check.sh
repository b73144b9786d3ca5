#!/usr/bin/env bash
# The independent PyTorch check of the whole model: for every config in CONFIG_DIR, one forward
# and backward of the C model (dump_model) is compared, loss and every parameter gradient, with
# tests/torch/reference.py written from SPEC (tolerances: tests/torch/compare.py).
#
#   torch_check.sh DUMP_MODEL_BIN CONFIG_DIR
#
# Also runs:
#  - the reference's own self-test (vectorised attention vs naive per-head loops, RoPE formula);
#  - a negative control: the reference with the naive GQA k-head pairing (SPEC 2 trap) must
#    NOT match the dump of diff_gqa.yaml, proving the comparison can fail.
# Exit 0 pass, 1 fail, 77 skipped (Debian's /usr/bin/python3 cannot import torch).
set -u
DUMP=${1:?usage: torch_check.sh DUMP_MODEL_BIN CONFIG_DIR}
CONFIGS=${2:?usage: torch_check.sh DUMP_MODEL_BIN CONFIG_DIR}
PY=${DT_TORCH_PYTHON:-/usr/bin/python3}
HERE=$(cd "$(dirname "$0")/../torch" && pwd)

if ! "$PY" -c 'import torch, numpy' 2>/dev/null; then
    echo "torch_check: $PY cannot import torch and numpy: skipped"
    exit 77
fi
# one thread: the check is tiny, the machine is shared, and results do not depend on it
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

WORK=$(mktemp -d "${TMPDIR:-/tmp}/torch_check.XXXXXX") || exit 1
trap 'rm -rf "$WORK"' EXIT

"$PY" "$HERE/test_reference.py" || { echo "torch_check: FAIL: reference self-test"; exit 1; }

dirs=()
for cfg in "$CONFIGS"/*.yaml; do
    name=$(basename "$cfg" .yaml)
    if ! "$DUMP" "$cfg" "$WORK/$name"; then
        echo "torch_check: FAIL: dump_model $cfg"
        exit 1
    fi
    dirs+=("$WORK/$name")
done
if [ ${#dirs[@]} -eq 0 ]; then
    echo "torch_check: FAIL: no configs in $CONFIGS"
    exit 1
fi

"$PY" "$HERE/compare.py" "${dirs[@]}"
rc=$?
if [ $rc -ne 0 ]; then
    echo "torch_check: FAIL: compare.py exited $rc"
    exit 1
fi

if [ -d "$WORK/diff_gqa" ]; then
    "$PY" "$HERE/compare.py" --naive-gqa "$WORK/diff_gqa" > "$WORK/control.log"
    rc=$?
    if [ $rc -ne 1 ]; then
        cat "$WORK/control.log"
        echo "torch_check: FAIL: the naive-GQA control exited $rc; it must mismatch (exit 1)"
        exit 1
    fi
    echo "torch_check: negative control ok: $(tail -n 1 "$WORK/control.log")"
fi
echo "torch_check: PASS (${#dirs[@]} configs)"
