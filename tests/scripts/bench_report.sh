#!/usr/bin/env bash
# bench/attn_report.py (bench_attn.sh's tables) on synthetic logs of both sides: the ratios
# against SDPA's own choice (and of the warp-specialised forward) and against each backend
# held alone, n/a where a backend refuses, the choice and kernels named, a case on one side only
# left out, and bad input (exit 1 naming the log and line). Then bench_attn.sh with stand-ins for
# bench_attn and PyTorch: a group of lines that hangs or fails costs only its own lines. Then
# bench/sdpa_attn.py's guards: a
# backend name it does not know is a usage error, and a PyTorch without CUDA SDPA (Debian's 1.13
# here) exits 77.
# usage: bench_report.sh BENCH_DIR
set -u
bench=${1:?usage: bench_report.sh BENCH_DIR}
. "$(dirname "$0")/check_lib.sh"

cat >"$tmp/fused" <<'LOG'
bench_attn: NVIDIA H100 80GB HBM3
RESULT diff 830m 2048 8 0.890 2.700 175.0 193.3
RESULT base 830m 2048 8 0.500 2.000 200.0 150.0
RESULT base 3b 4096 4 1.000 4.000 261.5 193.2
TMA diff 830m 2048 0.800 0.500 1.60 420.0 0
TMA base 830m 2048 0.600 0.450 1.33 444.4 0
TMABWD diff 830m 2048 2.700 1.800 1.50 290.0 0 0 0
TMABWD base 830m 2048 2.000 1.600 1.25 187.5 0 0 0
LOG
cat >"$tmp/sdpa" <<'LOG'
sdpa_attn: torch 2.11.0+cu130, NVIDIA H100 80GB HBM3
SDPA diff 830m 2048 8 0.440 2.470 350.0 211.7
SDPA_CHOICE diff 830m 2048 CUDNN_ATTENTION cudnn_generated_fort_native_sdpa_sm90 cudnn_bwd
SDPA_BACKEND diff 830m 2048 8 FLASH_ATTENTION n/a n/a n/a n/a
SDPA_BACKEND diff 830m 2048 8 EFFICIENT_ATTENTION 0.700 3.000 250.0 160.0
SDPA_BACKEND diff 830m 2048 8 CUDNN_ATTENTION 0.440 2.470 350.0 n/a
SDPA base 830m 2048 8 0.400 1.500 400.0 300.0
SDPA_CHOICE base 830m 2048 FLASH_ATTENTION pytorch_flash::flash_fwd_kernel -
SDPA_BACKEND base 830m 2048 8 FLASH_ATTENTION 0.400 1.500 400.0 300.0
SDPA base 3b 2048 8 1.0 2.0 500.0 400.0
LOG
"$py" "$bench/attn_report.py" "$tmp/fused" "$tmp/sdpa" >"$tmp/out" 2>&1 || bad "exit $? on good logs"
cat "$tmp/out"
# against the choice: 175 / 350, 193.3 / 211.7; 200 / 400, 150 / 300
has "$tmp/out" "diff     830m   2048 |             175.0   350.0   0.50 |         193.3   211.7   0.91"
has "$tmp/out" "base     830m   2048 |             200.0   400.0   0.50 |         150.0   300.0   0.50"
# the warp-specialised forward: DIFF 420 / 350, base 444.4 / 400
has "$tmp/out" "diff     830m   2048 |           420.0     1.60   350.0   1.20"
has "$tmp/out" "base     830m   2048 |           444.4     1.33   400.0   1.11"
# forward+backward with the warp-specialised dk/dv: DIFF's: 290 / 211.7 (SDPA's fwd+bwd)
has "$tmp/out" "diff     830m   2048 |                     290.0     1.50   211.7   1.37"
# ... and the baseline's: 187.5 / 300
has "$tmp/out" "base     830m   2048 |                     187.5     1.25   300.0   0.62"
# per backend: flash refused; efficient 175 / 250, 193.3 / 160; cudnn 0.50 and a refused backward
has "$tmp/out" "diff     830m   2048 | cudnn     |           n/a      n/a          0.70     1.21          0.50      n/a"
# base: only flash timed, the others left n/a
has "$tmp/out" "base     830m   2048 | flash     |          0.50     0.50           n/a      n/a           n/a      n/a"
has "$tmp/out" "diff     830m   2048 | fwd cudnn_generated_fort_native_sdpa_sm90 | fwd+bwd cudnn_bwd"
has "$tmp/out" "base     830m   2048 | fwd pytorch_flash::flash_fwd_kernel | fwd+bwd -"
# base 3b 4096 has no SDPA line, base 3b 2048 no fused one: neither is reported
grep -q " 3b " "$tmp/out" && bad "a case on one side only was reported"

# a log with no backend lines: the first table (3 lines), the TMA one (a blank line and 4) and
# the TMABWD one (a blank line and 4)
grep -v "^SDPA_" "$tmp/sdpa" >"$tmp/sdpa_plain"
"$py" "$bench/attn_report.py" "$tmp/fused" "$tmp/sdpa_plain" >"$tmp/plain" 2>&1 ||
  bad "exit $? without backend lines"
[ "$(wc -l <"$tmp/plain")" = 13 ] || bad "without backend lines: $(wc -l <"$tmp/plain") lines"

# bad input: exit 1, naming the log and line
expect_error() { # NAME FUSED SDPA TEXT
  "$py" "$bench/attn_report.py" "$2" "$3" >"$tmp/err" 2>&1
  local rc=$?
  [ $rc = 1 ] || bad "$1: exit $rc, expected 1"
  has "$tmp/err" "$4"
}
sed 's/^RESULT base 830m 2048 8 0.500 2.000 200.0 150.0/RESULT base 830m 2048 8 0.5 2.0 x 150/' \
  "$tmp/fused" >"$tmp/f_bad"
expect_error "not a number" "$tmp/f_bad" "$tmp/sdpa" "$tmp/f_bad:3: 'x' is not a number"
sed 's/^RESULT diff 830m 2048 8 .*/RESULT diff 830m 2048 8 n\/a n\/a n\/a n\/a/' "$tmp/fused" \
  >"$tmp/f_na"
expect_error "fused n/a" "$tmp/f_na" "$tmp/sdpa" "$tmp/f_na:2: n/a where a figure is required"
sed 's/^TMA diff 830m 2048 .*/TMA diff 830m 2048 0.8 0.5/' "$tmp/fused" >"$tmp/f_short"
expect_error "short TMA line" "$tmp/f_short" "$tmp/sdpa" "$tmp/f_short:5: too few fields"
sed 's/^TMABWD diff 830m 2048 .*/TMABWD diff 830m 2048 2.7 1.8 1.50 n\/a 0 0 0/' "$tmp/fused" \
  >"$tmp/f_tna"
expect_error "TMABWD n/a" "$tmp/f_tna" "$tmp/sdpa" "$tmp/f_tna:7: n/a where a figure is required"
sed 's/EFFICIENT_ATTENTION/XFORMERS/' "$tmp/sdpa" >"$tmp/s_bad"
expect_error "unknown backend" "$tmp/fused" "$tmp/s_bad" "$tmp/s_bad:5: expected a backend of"
echo "SDPA diff 830m" >>"$tmp/sdpa_plain"
expect_error "short line" "$tmp/fused" "$tmp/sdpa_plain" \
  "$tmp/sdpa_plain:$(wc -l <"$tmp/sdpa_plain"): expected 'kind size T"
sed 's/ 350.0 211.7/ 0 211.7/' "$tmp/sdpa" >"$tmp/s_zero"
expect_error "zero" "$tmp/fused" "$tmp/s_zero" "$tmp/s_zero:2: TFLOP/s 0 is not positive"
expect_error "missing log" "$tmp/fused" "$tmp/nonexistent" "$tmp/nonexistent: No such file"

# bench_attn.sh itself, with stand-ins for bench_attn (the lines of the log above, by group) and
# for PyTorch's python (a CUDA device, the SDPA log above; the real python runs the report):
# each group runs in its own process; a TMA group that hangs is stopped at BENCH_ATTN_LIMIT and
# one that faults is reported, and the tables of the others are still printed (exit 1)
mkdir -p "$tmp/fake"
cat >"$tmp/fake/bench_attn" <<SH
#!/usr/bin/env bash
echo "bench_attn: NVIDIA H100 80GB HBM3"
case "\$*" in
*--lines=main*) grep "^RESULT" "$tmp/fused" ;;
*--lines=tmabwd*) grep "^TMABWD" "$tmp/fused"; [ -z "\${FAKE_FAULT:-}" ] || exit 1 ;;
*--lines=tma*) grep "^TMA " "$tmp/fused"; [ -z "\${FAKE_HANG:-}" ] || exec sleep 600 ;;
*) exit 2 ;;
esac
SH
cat >"$tmp/fake/python" <<SH
#!/usr/bin/env bash
case "\$1" in
-c) exit 0 ;;
*sdpa_attn.py) cat "$tmp/sdpa" ;;
*) exec "$py" "\$@" ;;
esac
SH
chmod +x "$tmp/fake/bench_attn" "$tmp/fake/python"
DT_TORCH_PYTHON="$tmp/fake/python" bash "$bench/bench_attn.sh" "$tmp/fake/bench_attn" \
  >"$tmp/sh_ok" 2>&1 || bad "bench_attn.sh with every group passing: exit $?"
has "$tmp/sh_ok" "diff     830m   2048 |           420.0     1.60   350.0   1.20"
has "$tmp/sh_ok" "base     830m   2048 |                     187.5     1.25   300.0   0.62"
start=$SECONDS
FAKE_HANG=1 FAKE_FAULT=1 BENCH_ATTN_LIMIT=2 DT_TORCH_PYTHON="$tmp/fake/python" \
  bash "$bench/bench_attn.sh" "$tmp/fake/bench_attn" >"$tmp/sh_bad" 2>&1
rc=$?
[ $rc = 1 ] || bad "bench_attn.sh with a hung and a failed group: exit $rc, expected 1"
[ $((SECONDS - start)) -lt 30 ] || bad "bench_attn.sh: the hung group was not stopped"
has "$tmp/sh_bad" "bench_attn --lines=tma ran past 2 s: stopped"
has "$tmp/sh_bad" "bench_attn --lines=tmabwd failed (1)"
has "$tmp/sh_bad" "diff     830m   2048 |             175.0   350.0   0.50 |         193.3   211.7   0.91"
has "$tmp/sh_bad" "diff     830m   2048 |                     290.0     1.50   211.7   1.37"

# sdpa_attn.py: usage error for an unknown backend; 77 without CUDA SDPA (where torch imports)
if "$py" -c 'import torch' 2>/dev/null; then
  "$py" "$bench/sdpa_attn.py" --backends=XFORMERS >"$tmp/sd" 2>&1
  rc=$?
  [ $rc = 2 ] || bad "sdpa_attn.py --backends=XFORMERS: exit $rc, expected 2"
  has "$tmp/sd" "XFORMERS is not one of"
  if ! "$py" -c 'import torch, torch.nn.functional as F, sys
sys.exit(0 if hasattr(F, "scaled_dot_product_attention") and torch.cuda.is_available() else 1)' \
      2>/dev/null; then
    "$py" "$bench/sdpa_attn.py" --iters=1 >"$tmp/sd" 2>&1
    rc=$?
    [ $rc = 77 ] || bad "sdpa_attn.py without CUDA SDPA: exit $rc, expected 77"
    has "$tmp/sd" "has no CUDA scaled_dot_product_attention"
  fi
else
  echo "bench_report: no torch for $py: sdpa_attn.py's guards not checked"
fi
finish bench_report
