#!/usr/bin/env bash
# tools/gpu_gaps.py on a synthetic Nsight Systems GPU trace whose gaps are known: per-step span,
# busy time (overlapping streams counted once), short and long gaps, an update split over two
# kernels, --skip, and bad input (exit 2 naming the file and line; 1 when no step is left).
# usage: tools_gaps.sh TOOLS_DIR
set -u
tools=${1:?usage: tools_gaps.sh TOOLS_DIR}
. "$(dirname "$0")/check_lib.sh"

# times in ns. Step 1: a kernel, the update (ends at 2 ms). Step 2: kernels 5 us and 10 us
# apart (one on a second stream overlapping two others), then 30 ms idle before a copy and the
# update (ends at 41 ms). Step 3: 2 us idle, then the update as two kernels (ends at 52 ms).
cat >"$tmp/trace.csv" <<'CSV'
Processing [run.sqlite] with [cuda_gpu_trace.py]...
"Start (ns)","Duration (ns)","CorrId","Strm","Name"
0,1000000,1,7,"void embedding_kernel(int const*, float*)"
1000000,1000000,2,7,"void adamw_kernel(float*, float*, float*, float const*, unsigned long)"
2005000,2995000,3,7,"void flash_forward_kernel<unsigned short, 96, 96, 1, 1>(unsigned short*)"
4000000,2000000,4,13,"ncclDevKernel_ReduceScatter_Sum_f32_RING_LL(ncclDevKernelArgsStorage<4096ul>)"
6010000,2990000,5,7,"nvjet_sm90_tst_128x256_64x4_2x1_v_bz_coopB_NTN"
39000000,1000000,6,7,"[CUDA memcpy Host-to-Device]"
40000000,1000000,7,7,"void adamw_kernel(float*, float*, float*, float const*, unsigned long)"
41002000,8998000,8,7,"void rmsnorm_forward_kernel(float*)"
50000000,1000000,9,7,"void adamw_kernel(float*, float*, float*, float const*, unsigned long)"
51000000,1000000,10,7,"void adamw_kernel(float*, float*, float*, float const*, unsigned long)"
CSV
"$py" "$tools/gpu_gaps.py" "$tmp/trace.csv" >"$tmp/all.out" 2>&1 || bad "gpu_gaps exited $?"
cat "$tmp/all.out"
#             step   span    busy  idle %  small   ms  large   ms  largest
has "$tmp/all.out" "   2    39.000     8.985   76.96          2     0.015          1    30.000     30.000"
has "$tmp/all.out" "   3    11.000    10.998    0.02          1     0.002          0     0.000      0.002"
has "$tmp/all.out" "GAPS steps 2 span_ms 25.000"
[ "$(grep -c '^ *[0-9]' "$tmp/all.out")" = 2 ] || bad "expected 2 step lines"

"$py" "$tools/gpu_gaps.py" "$tmp/trace.csv" --skip 2 --small-us 5 >"$tmp/skip.out" 2>&1 ||
  bad "--skip 2 exited $?"
has "$tmp/skip.out" "   3    11.000    10.998    0.02          1     0.002          0     0.000      0.002"
has "$tmp/skip.out" "GAPS steps 1 span_ms 11.000 busy_ms 10.998"
# with an 8 us threshold, step 2's 10 us gap counts as long
"$py" "$tools/gpu_gaps.py" "$tmp/trace.csv" --small-us 8 >"$tmp/thr.out" 2>&1
has "$tmp/thr.out" "   2    39.000     8.985   76.96          1     0.005          2    30.010     30.000"

"$py" "$tools/gpu_gaps.py" "$tmp/trace.csv" --skip 3 >"$tmp/none.out" 2>&1
rc=$?; [ $rc = 1 ] || bad "no step left: exit $rc, expected 1"
has "$tmp/none.out" "no step left"

sed 's/^6010000,/60x0000,/' "$tmp/trace.csv" >"$tmp/badrow.csv"
"$py" "$tools/gpu_gaps.py" "$tmp/badrow.csv" >"$tmp/badrow.out" 2>&1
rc=$?; [ $rc = 2 ] || bad "bad row: exit $rc, expected 2"
has "$tmp/badrow.out" "badrow.csv:7: not a trace row"

grep -v Start "$tmp/trace.csv" >"$tmp/nohead.csv"
"$py" "$tools/gpu_gaps.py" "$tmp/nohead.csv" >"$tmp/nohead.out" 2>&1
rc=$?; [ $rc = 2 ] || bad "no header: exit $rc, expected 2"
has "$tmp/nohead.out" "nohead.csv: no header line"

finish tools_gaps
