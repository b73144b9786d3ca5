#!/usr/bin/env bash
# Checkpoint save and load throughput against plain sequential I/O of the same number of bytes,
# measured in the same run on the same file system.
#
#   bench/bench_ckpt.sh [DIFFTRAIN_BIN]
#
# A DIFF model of ~11.6M parameters (d_model 512, 4 layers, ffn 1376: ~140 MB of weights and
# AdamW m and v) trains one step on BENCH_NP ranks (default 2: dp 2, ZeRO 1, so the save also
# all-gathers the moments) and saves a checkpoint; a second run resumes from it (the load). The
# trainer reports the tensor bytes and the wall time of each (commit protocol, fsyncs, barriers
# and the ZeRO gather included). The reference writes the same number of bytes with
# `dd conv=fsync` (one sequential stream, one fsync) and reads them back with dd, both through
# the page cache like the checkpoint (the load reads files the save just wrote).
# Environment: BENCH_NP (default 2), BENCH_REPEATS (default 3; the best of each is reported),
# BENCH_DIR (where the files go; default $TMPDIR or /tmp).
# Prints MB/s of each and ratio = checkpoint MB/s / plain MB/s (1.0 = as fast as plain I/O).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${1:-$HERE/../build/difftrain}
NP=${BENCH_NP:-2}
REPEATS=${BENCH_REPEATS:-3}
[ -x "$BIN" ] || { echo "bench_ckpt.sh: $BIN: not an executable (build difftrain first)" >&2; exit 1; }
tmp=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/difftrain-bench-ckpt-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
bash "$HERE/../tests/scripts/make_corpus.sh" 300 >"$tmp/corpus.txt"
"$BIN" data prepare --out "$tmp/data" --name b --split-on % "$tmp/corpus.txt" >/dev/null ||
  { echo "bench_ckpt.sh: data prepare failed" >&2; exit 1; }
ARGS=("$HERE/../tests/configs/parallel/diff.yaml" "data.train=$tmp/data/b_train_*.bin"
  model.d_model=512 model.n_layers=4 model.n_heads=8 model.n_kv_heads=4 model.ffn_dim=1376
  parallel.dp="$NP" parallel.zero=1 train.global_batch=$((2 * NP)) train.steps=1
  checkpoint.dir="$tmp/ck")
now() { date +%s.%N; }
best() { sort -g | head -1; }

for r in $(seq 1 "$REPEATS"); do
  rm -rf "$tmp/ck"
  mpirun --oversubscribe --bind-to none -np "$NP" "$BIN" train "${ARGS[@]}" >"$tmp/save.out" 2>&1 ||
    { tail "$tmp/save.out"; exit 1; }
  mpirun --oversubscribe --bind-to none -np "$NP" "$BIN" train "${ARGS[@]}" >"$tmp/load.out" 2>&1 ||
    { tail "$tmp/load.out"; exit 1; }
  # "checkpoint: saved step 1 to DIR (X MB in Y s)" / "checkpoint: resumed from ... (...; X MB in Y s)"
  sed -n 's/^checkpoint: saved.*(\([0-9.]*\) MB in \([0-9.]*\) s)$/\1 \2/p' "$tmp/save.out" >>"$tmp/save.txt"
  sed -n 's/^checkpoint: resumed.*; \([0-9.]*\) MB in \([0-9.]*\) s)$/\1 \2/p' "$tmp/load.out" >>"$tmp/load.txt"
  mb=$(tail -1 "$tmp/save.txt" | awk '{printf "%d", $1 + 0.5}')
  [ "$mb" -gt 0 ] || { echo "bench_ckpt.sh: no save line" >&2; cat "$tmp/save.out" >&2; exit 1; }
  t0=$(now); dd if=/dev/zero of="$tmp/plain" bs=1M count="$mb" conv=fsync status=none; t1=$(now)
  dd if="$tmp/plain" of=/dev/null bs=1M status=none; t2=$(now)
  echo "$mb $t0 $t1" | awk '{print $3 - $2}' >>"$tmp/plain_w.txt"
  echo "$mb $t1 $t2" | awk '{print $3 - $2}' >>"$tmp/plain_r.txt"
  rm -f "$tmp/plain"
done
save_mb=$(awk '{print $1}' "$tmp/save.txt" | head -1)
load_mb=$(awk '{print $1}' "$tmp/load.txt" | head -1)
save_s=$(awk '{print $2}' "$tmp/save.txt" | best)
load_s=$(awk '{print $2}' "$tmp/load.txt" | best)
pw_s=$(best <"$tmp/plain_w.txt")
pr_s=$(best <"$tmp/plain_r.txt")
awk -v np="$NP" -v sm="$save_mb" -v lm="$load_mb" -v ss="$save_s" -v ls="$load_s" -v mb="$mb" \
  -v pw="$pw_s" -v pr="$pr_s" 'BEGIN {
  printf "checkpoint I/O on %d ranks (best of runs; MB = 1e6 bytes of tensor data)\n", np
  printf "%-26s %10s %9s %10s\n", "", "MB", "s", "MB/s"
  printf "%-26s %10.1f %9.3f %10.1f\n", "ckpt save (commit incl.)", sm, ss, sm / ss
  printf "%-26s %10.1f %9.3f %10.1f\n", "plain write + fsync (dd)", mb, pw, mb / pw
  printf "%-26s %10.1f %9.3f %10.1f\n", "ckpt load", lm, ls, lm / ls
  printf "%-26s %10.1f %9.3f %10.1f\n", "plain read (dd)", mb, pr, mb / pr
  printf "ratio save/plain write: %.2f\nratio load/plain read:  %.2f\n", (sm / ss) / (mb / pw), (lm / ls) / (mb / pr)
}'
