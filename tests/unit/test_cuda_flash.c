/* The fused bf16 tensor-core attention (model/cuda/flash.h) on all three attention kinds:
 * standard causal attention with GQA (the baseline's, and DIFF V2's over 2H q-heads) and DIFF V1
 * (both branches in one pass, subln epilogue, per-branch delta), forward and backward, against
 *   (a) the CPU oracle (model/cpu, fp32) on the same fp32 inputs, with bf16 tolerances, and
 *   (b) the tiled fp32 CUDA kernels run on the inputs rounded to bf16 here, i.e. on exactly the
 *       values the fused kernels multiply: what remains is their rounding of P (and in the
 *       backward of dS and of the output gradient G) to bf16, so the tolerances are tighter and
 *       lse must agree to fp32 rounding;
 * for d in {64, 96, 128}, GQA (q-heads per kv-head 1, 2, 4; DIFF: H = Hkv and H = 2 Hkv), B = 2
 * and T in {1, 17, 64, 100, 130, 200, 257} (1 row; lengths that are not multiples of the 64-row
 * tile; up to five tiles: the double-buffered tile loops with a partial last tile, one tile,
 * one row). Outputs start as NaN (an element left unwritten fails), dgamma and dlambda start
 * nonzero (they accumulate), a second run must give identical bits, and so must a run on the
 * fp32-staging test path (flash_test.h: the kernels read fp32 tensors, q, k, v widened from
 * their bf16 operands and the fp32 output gradient, with plain loads, and round each tile while
 * staging it, synchronously, instead of the cp.async copies of bf16 tensors). Where the build
 * and device have the sm_90 wgmma kernels (flash_*_sm90.cu; always under the emulator), the
 * checks above are of them (switched on whatever the environment selects), the staging check
 * pairs the mma.sync kernels' bf16 run with the fp32 one, and the two sets of kernels must agree
 * within the tiled tolerances (on an H100 and under the emulator they give the same bits).
 * The mma.sync backward with dq read from the dS tiles that dk/dv stores (DIFFTRAIN_FLASH_DQ=
 * stored; auto, the default, stores them up to a cap of workspace: test_dq_auto) runs too, on
 * both staging paths: dk and dv must keep the recomputing run's bits (the same kernel math,
 * plus the tiles' stores), dq must be within the tiled tolerances of it and, under the
 * emulator, its bits (the same dS from the same products: S^T = K Q^T is S = Q K^T
 * element by element, and the emulated mma sums in a fixed order whichever operand is A), and
 * the fp32-staging run must give the bf16 run's bits.
 * DIFF's backward takes both branches of a head per query tile (flash_dkdv_diff.cu,
 * flash_dq_diff.cu); one more run takes each on its own (the kernels they replaced, flash_test.h):
 * dq, dk, dgamma and dlambda must keep their bits, dv (rounded as P_1 - lambda P_2 instead of
 * per branch) be within the tiled tolerances.
 * RoPE's backward in the stores (dt_rope_grads): one run of each set of backward kernels runs
 * again with it, and the rotated dq and dk it writes must be the bits that cuda_rope_backward
 * makes of that run's fp32 dq and dk (dv, dgamma and dlambda the run's bits too).
 * The standard forward with 32 query rows a warp (flash_forward_rows32.cu, flash_test.h) runs on
 * both staging paths and must give the 16-row runs' out and lse bits; DIFFTRAIN_FLASH_FWD_ROWS
 * selects it (the default) or the 16-row one when no test switch is set, and stops the program
 * on a value it does not know.
 * DIFF V1's mma.sync forward splits V's columns between the two branch warps of a row group
 * (flash_forward_diff.cu); the kernel it replaced (each branch's warps over all of V) runs on
 * both staging paths and must give out, o1, o2, lse and rstd bit for bit; so must
 * DIFFTRAIN_FLASH_DIFF_FWD select between them.
 * Then the backend table: under "bf16 products" the attention ops are the fused kernels where
 * the head dim and the alignment of q, k, v (bf16) allow (bit-identical to calling them), the
 * tiled ones elsewhere and in fp32 mode; with RoPE's backward (fused, or the tiled kernels then
 * cuda_rope_backward) the rotated gradients are cuda_rope_backward's bits of the direct call's.
 * Last, GPUs with less shared memory a block (test_smem_limits, flash_test.h's cap): with an
 * A100's and an L40S's limit, cuda_flash_usable says which ops run fused there (SMEM_GPUS), each
 * that does gives the bits of the device's own kernels (forward, backward, dq from stored dS
 * tiles), and the backend runs the tiled kernels for the others. A case of the matrix whose
 * kernels do not fit the device is skipped with a note (the L40S run of the emulator:
 * DT_EMU_GPU=l40s), and DIFF's per-branch backward where its dk/dv does not (an A100 at
 * d = 128).
 *
 * The fused ops are the bf16 mode's: they run with the backend in that mode, q, k, v are bf16
 * operands (the fp32 inputs rounded here, the values (b) gives the tiled kernels), and their
 * out and dv (dt_operands) are bf16, rounded from the fp32 value as stored; the tiled references
 * run in fp32 mode (fp32 operands, out, dv). So the checks of out and dv add that rounding, at
 * most half a bf16 ulp of the value: OUT_RTOL = 2^-8 relative on top of each tolerance; o1, o2,
 * lse, dq, dk, dgamma and dlambda are fp32 as before. That dv is rounded to nearest, not
 * truncated, only its mean error over many elements shows (rounding_bias). The standard
 * backward reads the bf16 out for its delta.
 *
 * Tolerances, with u = 2^-8 the unit roundoff of bf16 (8 significant bits, round to nearest
 * even: |bf16(x) - x| <= u |x|), per tensor: |got - ref| <= max(afrac * max|ref|, floor) +
 * rtol * |ref|.
 *   vs the tiled kernels (b): forward o (and o1, o2): each P_j is rounded by at most u P_j, so
 *     |dO| <= u sum_j P_j |v_j| <= u max|v|: afrac = 1.25 u (the 0.25 covers fp32 summation
 *     order; DIFF V1 normalises by the sum of the rounded P_j, whose errors then mostly cancel,
 *     the standard heads by the exact sum: flash_forward.cuh's flash_row_sum); lse: the
 *     standard heads' has no bf16 step at all (exact bf16 products summed in fp32 on both
 *     sides), so 1e-5 relative; DIFF V1's is the log of the rounded P's sum, (1 + e) times the
 *     exact one with |e| <= u: within ln(1 + u) < u, DIFF_LSE_ATOL = 1.25 u absolute. DIFF's
 *     out and rstd pass O through 1/rms(O), which amplifies where O = o1 - lambda o2 cancels,
 *     and the backward adds the roundings of G and dS to bf16 (each <= u of an O(1) term,
 *     summed over up to T keys or rows with random signs): 4 u for those.
 *   vs the CPU oracle (a): also the rounding of q, k, v (and G) themselves: a score moves by up
 *     to 2u sum_e |q_e k_e| / sqrt(d), ~ 6e-3 typically for inputs in (-2, 2), and a probability
 *     by as much relatively: afrac = 4 u forward, 8 u backward, rtol 1e-2.
 *   Gradients have a floor of 1e-5 for T = 1, where dq = dk = 0 exactly and both sides hold only
 *     fp32 noise. dlambda sums G . o2 over every row with heavy cancellation, so the forward's
 *     bf16 error in o2 does not shrink with the sum (it moved dlambda by up to 14%): dgamma and
 *     dlambda are checked against the oracle's backward run on the fused forward's own o1, o2,
 *     rstd (identical inputs to the same fp32 row expressions, summed in double: rtol 1e-4),
 *     dgamma also end to end.
 * Measured under the emulator over this matrix (worst element / tolerance): vs tiled, forward
 * 0.58, lse 0.63 (DIFF V1's; the standard heads' 0.03), backward 0.68; vs the oracle, forward
 * 0.55, backward 0.33; dgamma/dlambda on the same inputs 0.009. Any indexing, pairing, masking,
 * scaling or delta error is O(1) of max|ref|, far outside these (a shared instead of
 * per-branch delta: 10 to 85 times the tolerance). The cases with spikes (spike_inputs) are the
 * ones that move a row's running maximum after its first key tile: with the row sums left
 * unrescaled there, they fail by 4 to 200 times the tolerance, and only they do.
 * Exits 77 (skipped) without a device; under the host emulator (DT_CUDA_EMULATED) it runs the
 * same matrix, the stored-dS runs included (~65 s). */
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cuda_ops_test_util.h"
#include "model/backend.h"
#include "model/cpu/cpu_ops.h"
#include "model/cuda/flash.h"
#include "model/cuda/flash_test.h"

#define U_BF16 (1.0 / 256.0)
/* (b) against the tiled kernels on bf16-rounded inputs */
#define TILED_O_AFRAC (1.25 * U_BF16)
#define TILED_LSE_RTOL 1e-5
#define DIFF_LSE_ATOL (1.25 * U_BF16)
#define TILED_AFRAC (4 * U_BF16)
#define TILED_RTOL 1e-3
/* (a) against the CPU oracle on the fp32 inputs */
#define CPU_FWD_AFRAC (4 * U_BF16)
#define CPU_BWD_AFRAC (8 * U_BF16)
#define CPU_RTOL 1e-2
#define BWD_FLOOR 1e-5
/* dgamma, dlambda against the CPU oracle's backward run on the fused forward's o1, o2, rstd:
 * the same inputs to the same per-row fp32 expressions, summed in double on both sides */
#define RED_RTOL 1e-4
#define RED_FLOOR 1e-4
/* the run on fp32 tensors rounded while staged by plain loads (flash_test.h): the asynchronous
 * staging of the bf16 tensors must change no bit */
#define F32_RUN "fp32-staging run"
/* out and dv, stored in bf16: their own rounding, relative (|bf16(x) - x| <= 2^-8 |x|) */
#define OUT_RTOL (1.0 / 256.0)

static float *host_alloc(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    assert_non_null(p);
    return p;
}
static float *rounded_copy(const float *x, size_t n) {
    float *r = host_alloc(n);
    for (size_t i = 0; i < n; i++) r[i] = cut_bf16_round(x[i]);
    return r;
}

/* 1 when the device tensor is out of tolerance against ref (cot_out_of_tol, no floor). */
static int check(const char *what, const float *dev, const float *ref, size_t n, double afrac,
                 double rtol) {
    return cot_out_of_tol(what, dev, ref, n, afrac, rtol, 1e-30);
}
/* Gradients: the floor covers T = 1, where the softmax is constant and dq = dk = 0 exactly, and
 * both sides hold only the fp32 noise of dP - delta (~1e-7 |dP|). */
static int check_grad(const char *what, const float *dev, const float *ref, size_t n,
                      double afrac, double rtol) {
    return cot_out_of_tol(what, dev, ref, n, afrac, rtol, BWD_FLOOR);
}
static int same_bits(const char *what, const float *a, const float *b, size_t n) {
    return cot_bits_differ(what, "rerun", a, b, n);
}
static float *to_host(const float *dev, size_t n) { return cut_to_host(dev, n); }

/* The backend in bf16 (the fused ops', bf16 operands) or fp32 mode (the tiled references). */
static void set_mode(int bf16) {
    assert_int_equal(cuda_backend_init(0, bf16), 0);
    assert_int_equal(cuda_operand_bytes(), bf16 ? 2 : 4);
}
/* The fused runs of each case: 0 and 1 the production path (twice: reruns give the same bits)
 * with the sm_90 wgmma kernels on, 2 the fp32-staging test path (flash_test.h) and 3 the
 * production path with the wgmma kernels off. Where the build and device have the wgmma kernels
 * (cuda_flash_sm90_capable), runs 0 and 1 are on them and run 3 on the mma.sync kernels, which
 * the staging check pairs with run 2 (the fp32 path has only mma.sync kernels); elsewhere runs
 * 0 and 3 are alike. MMA: the bf16 run on the mma.sync kernels. Runs 0 to 3 recompute dq's dS;
 * STORED (4) is run 3 and STORED + 1 (5) run 2 with dq reading the tiles dk/dv stores. DIFF
 * has one more: BRANCHES (6) is run 3 with the backward taking each of DIFF's branches on its
 * own (flash_test.h), where every other run pairs them. */
#define STD_RUNS 6
#define RUNS 7
#define MMA 3
#define STORED 4
#define BRANCHES 6
/* The runs whose backward runs again with RoPE's backward in its stores (check_rope): one of
 * each set of backward kernels (the wgmma ones where capable, mma.sync recomputing dq's dS,
 * storing it, and DIFF's per-branch kernels); the fp32-staging runs use the same stores. */
static int rope_run(int run) {
    return run == 0 || run == MMA || run == STORED || run == BRANCHES;
}
static void set_run(int run) {
    cuda_flash_test_f32_staging(run == 2 || run == STORED + 1);
    cuda_flash_test_sm90(run < 3);
    cuda_flash_test_fwd_rows(16); /* check_fwd_rows32 runs the other forward */
    cuda_flash_test_diff_fwd_split(1); /* check_diff_fwd_branch runs DIFF's other forward */
    cuda_flash_test_tma(0); /* check_fwd_tma, check_diff_fwd_tma run the warp-specialised one */
    cuda_flash_test_tma_bwd(0); /* check_bwd_tma, check_diff_bwd_tma the warp-specialised dk/dv */
    cuda_flash_test_dq_mode(run == STORED || run == STORED + 1);
    cuda_flash_test_diff_paired(run != BRANCHES);
}

/* 1 when run's kernels (set_run) have a forward and a backward for head dim d (DIFF V1 when
 * diff) that fit the device's shared memory (cuda_flash_usable; test_smem_limits checks what
 * runs where they do not) */
static int run_fits(int run, int d, int diff) {
    set_run(run);
    const int dv = diff ? 2 * d : d;
    const int fits = cuda_flash_usable(d, dv, diff, 0, NULL, 0) &&
                     cuda_flash_usable(d, dv, diff, 1, NULL, 0);
    set_run(0);
    return fits;
}
/* 0 with a note when the device has no fused kernels for a case (run_fits) */
static int case_fits(const char *what, int d, int diff) {
    if (run_fits(MMA, d, diff)) return 1;
    printf("-- %s d=%d: skipped, no fused kernels fit the device's %zu bytes of shared memory a "
           "block\n", what, d, cuda_flash_smem_limit());
    return 0;
}

/* The stored-dS runs (STORED, STORED + 1) against the recomputing mma.sync run (MMA): index 0
 * MMA, 1 STORED, 2 STORED + 1 (the header says what each must hold). */
static int check_stored_ds(const float *const dq[3], const float *const dk[3],
                           const dt_operand *const dv[3], size_t nq, size_t nk, size_t nv) {
    int fails = cot_bits_differ("dk", "stored-dS run", dk[0], dk[1], nk);
    fails += cot_operand_bits_differ("dv", "stored-dS run", dv[0], dv[1], nv);
    float *ref = cut_to_host(dq[0], nq);
    fails += check_grad("dq stored vs recomputed", dq[1], ref, nq, TILED_AFRAC, TILED_RTOL);
    free(ref);
#ifdef DT_CUDA_EMULATED
    fails += cot_bits_differ("dq", "stored-dS run", dq[0], dq[1], nq);
#endif
    fails += cot_bits_differ("dq", "stored-dS " F32_RUN, dq[1], dq[2], nq);
    fails += cot_bits_differ("dk", "stored-dS " F32_RUN, dk[1], dk[2], nk);
    fails += cot_operand_bits_differ("dv", "stored-dS " F32_RUN, dv[1], dv[2], nv);
    return fails;
}
/* RoPE's backward in the fused backward's stores (dt_rope_grads): a run done again with rope
 * given must write as its dq and dk (rq, rk: nqh q-heads, nkh k-heads of width d) the bits that
 * cuda_rope_backward makes of the run's fp32 dq and dk (the op is passed NULL for those: it must
 * not write them), and its dv (rdv) must be the run's. */
#define ROPE_THETA 10000.0f
static int check_rope(const dt_operand *rq, const dt_operand *rk, const dt_operand *rdv,
                      const float *dq, const float *dk, const dt_operand *dv, int B, int T,
                      int nqh, int nkh, int d, size_t nv) {
    const size_t nq = (size_t)B * T * nqh * d, nk = (size_t)B * T * nkh * d;
    dt_operand *eq = cot_operand_nan(nq), *ek = cot_operand_nan(nk);
    cuda_rope_backward(eq, dq, B, T, nqh, d, ROPE_THETA, 0);
    cuda_rope_backward(ek, dk, B, T, nkh, d, ROPE_THETA, 0);
    int fails = cot_operand_bits_differ("dq", "RoPE-fused run", eq, rq, nq);
    fails += cot_operand_bits_differ("dk", "RoPE-fused run", ek, rk, nk);
    fails += cot_operand_bits_differ("dv", "RoPE-fused run", dv, rdv, nv);
    cuda_free(eq);
    cuda_free(ek);
    return fails;
}

/* The bf16 operands of a standard case (device) and its shape */
typedef struct std_args {
    const dt_operand *q, *k, *v;
    int B, T, Hq, Hkv, d;
} std_args;

/* The number of outputs (out, lse) of a forward run now, as the test switches say, whose bits
 * differ from out0's and lse0's (a line each, naming the run) */
static int std_forward_differs(const std_args *a, const dt_operand *out0, const float *lse0,
                               const char *run) {
    const size_t no = (size_t)a->B * a->T * a->Hq * a->d, nl = (size_t)a->B * a->Hq * a->T;
    dt_operand *out = cot_operand_nan(no);
    float *lse = cot_dev_nan(nl);
    cuda_flash_attention_forward(out, lse, a->q, a->k, a->v, a->B, a->T, a->Hq, a->Hkv, a->d,
                                 a->d);
    int fails = cot_operand_bits_differ("out", run, out0, out, no);
    fails += cot_bits_differ("lse", run, lse0, lse, nl);
    cuda_free(out);
    cuda_free(lse);
    return fails;
}

/* The standard forward with 32 query rows a warp (flash_test.h) on the mma.sync kernels must
 * give the bits of the 16-row runs, on the bf16 path (out16[0], lse16[0]: run MMA) and the
 * fp32-staging one (out16[1], lse16[1]: run 2). */
static int check_fwd_rows32(const std_args *a, const dt_operand *const out16[2],
                            const float *const lse16[2]) {
    int fails = 0;
    for (int f32 = 0; f32 < 2; f32++) {
        set_run(f32 ? 2 : MMA);
        cuda_flash_test_fwd_rows(32);
        assert_int_equal(cuda_flash_fwd_rows(), 32);
        fails += std_forward_differs(a, out16[f32], lse16[f32],
                                     f32 ? "32-row " F32_RUN : "32-row run");
    }
    set_run(0);
    return fails;
}

/* The test switch of the warp-specialised (TMA) forward on, over run 0's settings: 1 when it
 * then runs for head dim d (DIFF V1 when diff), which it must where the build and device have
 * the sm_90 kernels; 0, the switch off again, where they have not, and then it must not
 * (cuda_flash_tma). */
static void tma_switch_off(void) {
    cuda_flash_test_tma(-1);
    set_run(0);
}
static int tma_switch_on(int d, int diff) {
    set_run(0);
    cuda_flash_test_tma(1);
    const int capable = cuda_flash_sm90_capable();
    assert_int_equal(cuda_flash_tma(d, diff), capable);
    if (!capable) tma_switch_off();
    return capable;
}

/* The warp-specialised forward (flash_test.h: TMA loads, 128 rows a block, a consumer warpgroup
 * for each 64) must give the bits of the wgmma forward (out0, lse0: run 0), which the runs check
 * against the CPU oracle, the tiled kernels and the mma.sync ones. Where the build and device
 * have no sm_90 kernels it must not run (cuda_flash_tma). */
static int check_fwd_tma(const std_args *a, const dt_operand *out0, const float *lse0) {
    if (!tma_switch_on(a->d, 0)) return 0;
    int fails = std_forward_differs(a, out0, lse0, "TMA forward");
    fails += std_forward_differs(a, out0, lse0, "TMA forward rerun");
    tma_switch_off();
    return fails;
}

/* The outputs of a standard case's runs (device), indexed by run (set_run) */
typedef struct std_runs {
    dt_operand **out, **dv, **rq, **rk, **rdv;
    float **lse, **dq, **dk;
} std_runs;

/* The standard heads' warp-specialised dk/dv (flash_test.h: TMA loads, a consumer warpgroup a
 * key tile) must give the bits of the mma.sync dk/dv in the runs MMA (dq recomputing dS) and
 * STORED (dq reading the dS tiles it stores), on their forward outputs: dq, dk, dv, and in
 * STORED with RoPE's backward in the stores (the run's RoPE-fused dq, dk, dv). Where the build
 * and device have no sm_90 kernels it must not run (cuda_flash_tma_bwd). */
static int check_bwd_tma(const std_args *a, const float *dout, const std_runs *r) {
    static const int runs[2] = {MMA, STORED};
    const int B = a->B, T = a->T, Hq = a->Hq, Hkv = a->Hkv, d = a->d;
    const size_t nq = (size_t)B * T * Hq * d, nk = (size_t)B * T * Hkv * d, nv = nk;
    int fails = 0;
    for (int i = 0; i < 2; i++) {
        const int run = runs[i];
        const char *name = i ? "TMA dk/dv, stored dS" : "TMA dk/dv";
        set_run(run);
        cuda_flash_test_tma_bwd(1);
        const int capable = cuda_flash_sm90_capable();
        assert_int_equal(cuda_flash_tma_bwd(d, 0), capable);
        if (!capable) break;
        float *dq = cot_dev_nan(nq), *dk = cot_dev_nan(nk);
        dt_operand *dv = cot_operand_nan(nv);
        cuda_flash_attention_backward(dq, dk, dv, dout, a->q, a->k, a->v, r->out[run],
                                      r->lse[run], B, T, Hq, Hkv, d, d, NULL);
        fails += cot_bits_differ("dq", name, r->dq[run], dq, nq);
        fails += cot_bits_differ("dk", name, r->dk[run], dk, nk);
        fails += cot_operand_bits_differ("dv", name, r->dv[run], dv, nv);
        if (i) { /* RoPE's backward in the stores */
            dt_operand *rq = cot_operand_nan(nq), *rk = cot_operand_nan(nk);
            dt_operand *rdv = cot_operand_nan(nv);
            const dt_rope_grads rope = {rq, rk, ROPE_THETA};
            cuda_flash_attention_backward(NULL, NULL, rdv, dout, a->q, a->k, a->v, r->out[run],
                                          r->lse[run], B, T, Hq, Hkv, d, d, &rope);
            fails += cot_operand_bits_differ("RoPE-fused dq", name, r->rq[run], rq, nq);
            fails += cot_operand_bits_differ("RoPE-fused dk", name, r->rk[run], rk, nk);
            fails += cot_operand_bits_differ("RoPE-fused dv", name, r->rdv[run], rdv, nv);
            cuda_free(rq);
            cuda_free(rk);
            cuda_free(rdv);
        }
        cuda_free(dq);
        cuda_free(dk);
        cuda_free(dv);
    }
    cuda_flash_test_tma_bwd(-1);
    set_run(0);
    return fails;
}

/* out, an operand buffer in bf16 mode, against a host reference */
static int check_out(const char *what, const dt_operand *dev, const float *ref, size_t n,
                     double afrac, double rtol) {
    return cot_operand_out_of_tol(what, dev, ref, n, afrac, rtol + OUT_RTOL, 1e-30);
}
/* dv, an operand buffer in bf16 mode, against a host reference: check_out with the gradients'
 * floor (check_grad) */
static int check_grad_out(const char *what, const dt_operand *dev, const float *ref, size_t n,
                          double afrac, double rtol) {
    return cot_operand_out_of_tol(what, dev, ref, n, afrac, rtol + OUT_RTOL, BWD_FLOOR);
}

/* 1 unless dv, stored in bf16, is rounded to nearest rather than truncated: its error against the
 * fp32 reference, signed towards the reference's sign, summed and divided by the sum of the
 * reference's bf16 ulps, must be near 0 (|bias| < 0.2; truncation gives about -0.5). The fused
 * fp32 value differs from the reference by the bf16 rounding of P and dO inside the kernel, a
 * zero-mean noise that these sums average out over thousands of elements; no tolerance on single
 * elements can tell the two storage roundings apart. */
static int rounding_bias(const char *what, const dt_operand *dev, const float *ref, size_t n) {
    float *got = cot_operand_to_host(dev, n);
    double err = 0.0, ulps = 0.0;
    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        if (!(fabsf(ref[i]) > 1e-20f)) continue;
        int e;
        frexp(ref[i], &e);
        ulps += ldexp(1.0, e - 8); /* bf16: 8 significant bits */
        err += ref[i] > 0 ? (double)got[i] - ref[i] : (double)ref[i] - got[i];
        count++;
    }
    free(got);
    const double bias = ulps > 0.0 ? err / ulps : 0.0;
    printf("%-28s n=%-8zu error towards the sign %+.3f bf16 ulp\n", what, count, bias);
    if (count >= 1000 && !(fabs(bias) < 0.2)) {
        printf("%s: stored dv is biased by %.3f ulp: not rounded to nearest\n", what, bias);
        return 1;
    }
    return 0;
}

/* ---- inputs whose row maxima jump: the forward's running maximum (FLASH_MAX_SLACK) ----
 * The forward moves a row's running maximum only when a key tile's scores pass it by more than
 * 8 (log2 units), so random scores (std ~1.9 in those units) never take that path after a row's
 * first tile. A case with spikes (std_case, diff_case) sets the keys at SPIKE_T to
 * +-SPIKE_SCALE[i] (the sign pattern of w, |q . w| / sqrt(d) ~ 1.15 for q in (-2, 2)), so the
 * rows see scores tens of units above everything before them, tile after tile, or a few units
 * (the running maximum stays, probabilities up to 2^8), or far below, by the sign and size of
 * q . w. q and k are rounded to bf16 first: the oracle then scores the values the kernels
 * multiply (unrounded, a spike's score would move by ~2 units under bf16 rounding). */
static const int SPIKE_T[3] = {70, 140, 210};     /* in key tiles 1, 2 and 3 */
static const float SPIKE_SCALE[3] = {4.0f, 8.0f, 16.0f};
#define SLACK_LOG2 8.0 /* flash_forward.cuh's FLASH_MAX_SLACK */

/* q (B, T, nq, d) and k (B, T, nk, d) rounded to bf16, then the spikes written into k */
static void spike_inputs(float *q, float *k, int B, int T, int nq, int nk, int d) {
    for (size_t i = 0; i < (size_t)B * T * nq * d; i++) q[i] = cut_bf16_round(q[i]);
    for (size_t i = 0; i < (size_t)B * T * nk * d; i++) k[i] = cut_bf16_round(k[i]);
    for (int b = 0; b < B; b++)
        for (int s = 0; s < 3; s++) {
            if (SPIKE_T[s] >= T) continue;
            for (int h = 0; h < nk; h++)
                for (int e = 0; e < d; e++)
                    k[(((size_t)b * T + SPIKE_T[s]) * nk + h) * d + e] =
                        (e % 3 == 0 ? 1.0f : -1.0f) * SPIKE_SCALE[s];
        }
}

/* Over every row, the key tiles after its first whose largest score (log2 units) passes the
 * row's running maximum by more than the slack (jumps: O rescaled) or by less (stays: the
 * probabilities exceed 1), the forward's rule replayed in double on the host. kv_of maps a
 * q-head to its k-head (GQA; DIFF's branch heads). */
static void count_max_moves(const float *q, const float *k, int B, int T, int nq, int nk, int d,
                            int diff, int *jumps, int *stays) {
    const double scale = 1.4426950408889634 / sqrt((double)d);
    *jumps = *stays = 0;
    for (int b = 0; b < B; b++)
        for (int j = 0; j < nq; j++) {
            const int hk = diff ? 2 * ((j / 2) / ((nq / 2) / (nk / 2))) + j % 2 : j / (nq / nk);
            for (int i = 0; i < T; i++) {
                const float *qi = q + (((size_t)b * T + i) * nq + j) * d;
                double m = 0.0;
                for (int j0 = 0; j0 <= i; j0 += 64) {
                    double tile = -INFINITY;
                    for (int t = j0; t <= i && t < j0 + 64; t++) {
                        const float *kt = k + (((size_t)b * T + t) * nk + hk) * d;
                        double sc = 0.0;
                        for (int e = 0; e < d; e++) sc += (double)qi[e] * kt[e];
                        tile = fmax(tile, sc * scale);
                    }
                    if (j0 == 0) m = tile;
                    else if (tile > m + SLACK_LOG2) (*jumps)++, m = tile;
                    else if (tile > m) (*stays)++;
                }
            }
        }
}

/* 1 unless a case with spikes takes both paths of the running maximum, printed */
static int check_spikes(const float *q, const float *k, int B, int T, int nq, int nk, int d,
                        int diff) {
    int jumps, stays;
    count_max_moves(q, k, B, T, nq, nk, d, diff, &jumps, &stays);
    printf("spikes: %d row tiles move the running max, %d pass it within the slack\n", jumps,
           stays);
    if (jumps > 0 && stays > 0) return 0;
    printf("spikes: the inputs no longer take both paths of the running max\n");
    return 1;
}

/* ---- standard / GQA attention (baseline; DIFF V2 over 2H q-heads) ---- */

typedef struct std_case {
    int T, Hq, Hkv, d, spikes;
} std_case;

static int run_standard(const std_case *c, unsigned seed) {
    const int B = 2, T = c->T, Hq = c->Hq, Hkv = c->Hkv, d = c->d, dv = d;
    set_mode(1);
    if (!case_fits("attention", d, 0)) return 0;
    const size_t nq = (size_t)B * T * Hq * d, nk = (size_t)B * T * Hkv * d;
    const size_t nv = (size_t)B * T * Hkv * dv, no = (size_t)B * T * Hq * dv;
    const size_t nl = (size_t)B * Hq * T;
    float *q = host_alloc(nq), *k = host_alloc(nk), *v = host_alloc(nv), *dout = host_alloc(no);
    cut_fill(q, nq, seed + 1, -2.0f, 2.0f); /* scores of std ~1.3: peaked, not flat */
    cut_fill(k, nk, seed + 2, -2.0f, 2.0f);
    cut_fill(v, nv, seed + 3, -1.0f, 1.0f);
    cut_fill(dout, no, seed + 4, -1.0f, 1.0f);
    if (c->spikes) spike_inputs(q, k, B, T, Hq, Hkv, d);

    /* (a) the CPU oracle on the fp32 inputs */
    float *out = host_alloc(no), *lse = host_alloc(nl);
    float *dq = host_alloc(nq), *dk = host_alloc(nk), *dvv = host_alloc(nv);
    cpu_attention_forward(out, lse, q, k, v, B, T, Hq, Hkv, d, dv);
    cpu_attention_backward(dq, dk, dvv, dout, q, k, v, out, lse, B, T, Hq, Hkv, d, dv);

    /* (b) the tiled kernels on the bf16-rounded inputs */
    float *qr = rounded_copy(q, nq), *kr = rounded_copy(k, nk), *vr = rounded_copy(v, nv);
    float *doutr = rounded_copy(dout, no);
    float *tdout = cot_dev(doutr, no), *tout = cot_dev_nan(no), *tlse = cot_dev_nan(nl);
    float *tdq = cot_dev_nan(nq), *tdk = cot_dev_nan(nk), *tdv = cot_dev_nan(nv);
    set_mode(0); /* fp32 operands and out */
    dt_operand *tq = cot_operand_dev(qr, nq), *tk = cot_operand_dev(kr, nk);
    dt_operand *tv = cot_operand_dev(vr, nv);
    cuda_attention_forward((dt_operand *)tout, tlse, tq, tk, tv, B, T, Hq, Hkv, d, dv);
    cuda_attention_backward(tdq, tdk, (dt_operand *)tdv, tdout, tq, tk, tv,
                            (const dt_operand *)tout, tlse, B, T, Hq, Hkv, d, dv);
    float *t_out = to_host(tout, no), *t_lse = to_host(tlse, nl), *t_dq = to_host(tdq, nq);
    float *t_dk = to_host(tdk, nk), *t_dv = to_host(tdv, nv);

    /* the fused kernels on the bf16 operands of the inputs, twice, then on the fp32-staging test
     * path, then with the sm_90 kernels off (RUNS) */
    float *dout_d = cot_dev(dout, no);
    dt_operand *o_d[STD_RUNS], *dv_d[STD_RUNS], *rq[STD_RUNS], *rk[STD_RUNS], *rdv[STD_RUNS];
    float *l_d[STD_RUNS], *dq_d[STD_RUNS], *dk_d[STD_RUNS];
    set_mode(1); /* bf16 operands: q, k, v rounded, out, dv */
    dt_operand *q_d = cot_operand_dev(q, nq), *k_d = cot_operand_dev(k, nk);
    dt_operand *v_d = cot_operand_dev(v, nv);
    const int sm90 = cuda_flash_sm90_capable();
    for (int run = 0; run < STD_RUNS; run++) {
        set_run(run);
        o_d[run] = cot_operand_nan(no);
        l_d[run] = cot_dev_nan(nl);
        dq_d[run] = cot_dev_nan(nq);
        dk_d[run] = cot_dev_nan(nk);
        dv_d[run] = cot_operand_nan(nv);
        cuda_flash_attention_forward(o_d[run], l_d[run], q_d, k_d, v_d, B, T, Hq, Hkv, d, dv);
        cuda_flash_attention_backward(dq_d[run], dk_d[run], dv_d[run], dout_d, q_d, k_d, v_d,
                                      o_d[run], l_d[run], B, T, Hq, Hkv, d, dv, NULL);
        rq[run] = rk[run] = rdv[run] = NULL;
        if (!rope_run(run)) continue;
        rq[run] = cot_operand_nan(nq);
        rk[run] = cot_operand_nan(nk);
        rdv[run] = cot_operand_nan(nv);
        const dt_rope_grads rope = {rq[run], rk[run], ROPE_THETA};
        cuda_flash_attention_backward(NULL, NULL, rdv[run], dout_d, q_d, k_d, v_d, o_d[run],
                                      l_d[run], B, T, Hq, Hkv, d, dv, &rope);
    }
    set_run(0);
    cuda_synchronize();

    printf("-- attention B=%d T=%d Hq=%d Hkv=%d d=%d%s (kernels: %s)\n", B, T, Hq, Hkv, d,
           c->spikes ? " spikes" : "", sm90 ? "wgmma" : "mma.sync");
    int fails = c->spikes ? check_spikes(q, k, B, T, Hq, Hkv, d, 0) : 0;
    fails += check_out("out vs cpu", o_d[0], out, no, CPU_FWD_AFRAC, CPU_RTOL);
    fails += check("lse vs cpu", l_d[0], lse, nl, CPU_FWD_AFRAC, 0.0);
    fails += check_grad("dq vs cpu", dq_d[0], dq, nq, CPU_BWD_AFRAC, CPU_RTOL);
    fails += check_grad("dk vs cpu", dk_d[0], dk, nk, CPU_BWD_AFRAC, CPU_RTOL);
    fails += check_grad_out("dv vs cpu", dv_d[0], dvv, nv, CPU_BWD_AFRAC, CPU_RTOL);
    fails += check_out("out vs tiled", o_d[0], t_out, no, TILED_O_AFRAC, 0.0);
    fails += check("lse vs tiled", l_d[0], t_lse, nl, 1e-6, TILED_LSE_RTOL);
    fails += check_grad("dq vs tiled", dq_d[0], t_dq, nq, TILED_AFRAC, TILED_RTOL);
    fails += check_grad("dk vs tiled", dk_d[0], t_dk, nk, TILED_AFRAC, TILED_RTOL);
    fails += check_grad_out("dv vs tiled", dv_d[0], t_dv, nv, TILED_AFRAC, TILED_RTOL);
    fails += rounding_bias("dv rounding vs tiled", dv_d[0], t_dv, nv);
    fails += cot_operand_bits_differ("out", "rerun", o_d[0], o_d[1], no);
    fails += same_bits("lse", l_d[0], l_d[1], nl);
    fails += same_bits("dq", dq_d[0], dq_d[1], nq);
    fails += same_bits("dk", dk_d[0], dk_d[1], nk);
    fails += cot_operand_bits_differ("dv", "rerun", dv_d[0], dv_d[1], nv);
    fails += cot_operand_bits_differ("out", F32_RUN, o_d[MMA], o_d[2], no);
    fails += cot_bits_differ("lse", F32_RUN, l_d[MMA], l_d[2], nl);
    fails += cot_bits_differ("dq", F32_RUN, dq_d[MMA], dq_d[2], nq);
    fails += cot_bits_differ("dk", F32_RUN, dk_d[MMA], dk_d[2], nk);
    fails += cot_operand_bits_differ("dv", F32_RUN, dv_d[MMA], dv_d[2], nv);
    {
        const float *dqs[3] = {dq_d[MMA], dq_d[STORED], dq_d[STORED + 1]};
        const float *dks[3] = {dk_d[MMA], dk_d[STORED], dk_d[STORED + 1]};
        const dt_operand *dvs[3] = {dv_d[MMA], dv_d[STORED], dv_d[STORED + 1]};
        fails += check_stored_ds(dqs, dks, dvs, nq, nk, nv);
    }
    for (int run = 0; run < STD_RUNS; run++)
        if (rope_run(run))
            fails += check_rope(rq[run], rk[run], rdv[run], dq_d[run], dk_d[run], dv_d[run], B,
                                T, Hq, Hkv, d, nv);
    {
        const std_args args = {q_d, k_d, v_d, B, T, Hq, Hkv, d};
        const dt_operand *outs[2] = {o_d[MMA], o_d[2]};
        const float *lses[2] = {l_d[MMA], l_d[2]};
        fails += check_fwd_rows32(&args, outs, lses);
        fails += check_fwd_tma(&args, o_d[0], l_d[0]);
        const std_runs runs = {o_d, dv_d, rq, rk, rdv, l_d, dq_d, dk_d};
        fails += check_bwd_tma(&args, dout_d, &runs);
    }
    if (sm90) { /* the wgmma kernels (run 0) against the mma.sync ones (run 3) */
        float *m_out = cot_operand_to_host(o_d[3], no), *m_lse = to_host(l_d[3], nl);
        float *m_dq = to_host(dq_d[3], nq), *m_dk = to_host(dk_d[3], nk);
        float *m_dv = cot_operand_to_host(dv_d[3], nv);
        fails += check_out("out vs mma.sync", o_d[0], m_out, no, TILED_O_AFRAC, 0.0);
        fails += check("lse vs mma.sync", l_d[0], m_lse, nl, 1e-6, TILED_LSE_RTOL);
        fails += check_grad("dq vs mma.sync", dq_d[0], m_dq, nq, TILED_AFRAC, TILED_RTOL);
        fails += check_grad("dk vs mma.sync", dk_d[0], m_dk, nk, TILED_AFRAC, TILED_RTOL);
        fails += check_grad_out("dv vs mma.sync", dv_d[0], m_dv, nv, TILED_AFRAC, TILED_RTOL);
        free(m_out), free(m_lse), free(m_dq), free(m_dk), free(m_dv);
    }

    void *dev[] = {tq, tk, tv, tdout, tout, tlse, tdq, tdk, tdv, q_d, k_d, v_d, dout_d};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) cuda_free(dev[i]);
    for (int run = 0; run < STD_RUNS; run++) {
        void *r[] = {o_d[run], l_d[run], dq_d[run], dk_d[run], dv_d[run], rq[run], rk[run],
                     rdv[run]};
        for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) cuda_free(r[i]);
    }
    float *host[] = {q, k, v, dout, out, lse, dq, dk, dvv, qr, kr, vr, doutr,
                     t_out, t_lse, t_dq, t_dk, t_dv};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
    return fails;
}

static void test_attention(void **state) {
    (void)state;
    static const std_case cases[] = { /* T, Hq, Hkv, d, spikes */
        {1, 2, 2, 64, 0},    {17, 4, 2, 96, 0},   {100, 4, 1, 128, 0}, {130, 2, 2, 64, 0},
        {100, 2, 2, 96, 0},  {17, 4, 4, 128, 0},  {130, 4, 2, 128, 0}, {64, 4, 1, 96, 0},
        {257, 4, 2, 64, 0},  {257, 4, 2, 96, 1},  {200, 2, 1, 128, 1},
    };
    int fails = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        fails += run_standard(&cases[i], 100 + 10 * (unsigned)i);
    assert_int_equal(fails, 0);
}

/* ---- differential attention V1 ---- */

typedef struct diff_case {
    int T, H, Hkv, d, subln;
    float lambda;
    int spikes;
} diff_case;

/* The outputs of one diffattn forward + backward (device buffers; out and dv in the operand
 * format of the mode diff_out_alloc ran in). */
typedef struct diff_out {
    dt_operand *out, *dv;
    float *o1, *o2, *lse, *rstd, *dq, *dk, *dgamma, *dlambda;
} diff_out;

static void diff_out_alloc(diff_out *o, size_t no, size_t nl, size_t nr, size_t nq, size_t nk,
                           size_t nv, const float *dgamma0, int d2, float dlambda0) {
    o->out = cot_operand_nan(no);
    o->o1 = cot_dev_nan(no);
    o->o2 = cot_dev_nan(no);
    o->lse = cot_dev_nan(nl);
    o->rstd = cot_dev_nan(nr);
    o->dq = cot_dev_nan(nq);
    o->dk = cot_dev_nan(nk);
    o->dv = cot_operand_nan(nv);
    o->dgamma = cot_dev(dgamma0, (size_t)d2);
    o->dlambda = cot_dev(&dlambda0, 1);
}
static void diff_out_free(diff_out *o) {
    void *b[] = {o->out, o->o1, o->o2, o->lse, o->rstd, o->dq, o->dk, o->dv, o->dgamma,
                 o->dlambda};
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) cuda_free(b[i]);
}

/* The per-branch run (x, BRANCHES) against the paired one (p, MMA): the forward and the prep are
 * the same kernels and dq and dk the same expressions on the same products (the same bits);
 * dv sums bf16(P_1) G + bf16(-lambda P_2) G there against bf16(P_1 - lambda P_2) G here, in
 * another order: within the tiled tolerances. */
static int check_branches(const diff_out *p, const diff_out *x, size_t nq, size_t nk, size_t nv,
                          int d2) {
    int fails = cot_bits_differ("dq", "per-branch run", p->dq, x->dq, nq);
    fails += cot_bits_differ("dk", "per-branch run", p->dk, x->dk, nk);
    fails += cot_bits_differ("dgamma", "per-branch run", p->dgamma, x->dgamma, (size_t)d2);
    fails += cot_bits_differ("dlambda", "per-branch run", p->dlambda, x->dlambda, 1);
    float *ref = cot_operand_to_host(x->dv, nv);
    fails += check_grad_out("dv paired vs per-branch", p->dv, ref, nv, TILED_AFRAC, TILED_RTOL);
    free(ref);
    return fails;
}

/* The inputs and sizes of a DIFF V1 case, as run_diff holds them */
typedef struct diff_args {
    const dt_operand *q, *k, *v;
    const float *lambda, *gamma; /* device */
    float lambda_init, eps;
    int B, T, H, Hkv, d;
    size_t no, nl, nr;
} diff_args;

/* DIFF V1's forward on a's inputs with the switches as set: the number of its outputs (out, o1,
 * o2, lse, rstd) whose bits differ from ref's, each reported as of `run` */
static int diff_forward_differs(const diff_args *a, const diff_out *ref, const char *run) {
    diff_out o;
    const float zero = 0.0f;
    diff_out_alloc(&o, a->no, a->nl, a->nr, 1, 1, 1, &zero, 1, 0.0f);
    cuda_flash_diffattn_forward(o.out, o.o1, o.o2, o.lse, o.rstd, a->q, a->k, a->v, a->lambda,
                                a->gamma, a->lambda_init, a->eps, a->B, a->T, a->H, a->Hkv, a->d);
    int fails = cot_operand_bits_differ("out", run, ref->out, o.out, a->no);
    fails += cot_bits_differ("o1", run, ref->o1, o.o1, a->no);
    fails += cot_bits_differ("o2", run, ref->o2, o.o2, a->no);
    fails += cot_bits_differ("lse", run, ref->lse, o.lse, a->nl);
    if (a->gamma) fails += cot_bits_differ("rstd", run, ref->rstd, o.rstd, a->nr);
    diff_out_free(&o);
    return fails;
}

/* DIFF V1's mma.sync forward with each branch's warps over all of V's columns (flash_test.h: the
 * kernel that the split one, which the runs take, replaced) must give the bits of the runs, out,
 * o1, o2, lse and rstd, on the bf16 path (ref[0]: run MMA) and the fp32-staging one (ref[1]:
 * run 2). */
static int check_diff_fwd_branch(const diff_args *a, const diff_out *const ref[2]) {
    int fails = 0;
    for (int f32 = 0; f32 < 2; f32++) {
        set_run(f32 ? 2 : MMA);
        cuda_flash_test_diff_fwd_split(0);
        assert_int_equal(cuda_flash_diff_fwd_split(), 0);
        fails += diff_forward_differs(a, ref[f32], f32 ? "per-branch forward " F32_RUN
                                                       : "per-branch forward");
    }
    set_run(0);
    return fails;
}

/* DIFF V1's warp-specialised forward (flash_test.h: TMA loads, a consumer warpgroup per branch)
 * must give the bits of the wgmma forward (ref: run 0), which the runs check against the CPU
 * oracle, the tiled kernels and the mma.sync ones: out, o1, o2, lse and rstd. Where the build
 * and device have no sm_90 kernels it must not run (cuda_flash_tma). */
static int check_diff_fwd_tma(const diff_args *a, const diff_out *ref) {
    if (!tma_switch_on(a->d, 1)) return 0;
    int fails = diff_forward_differs(a, ref, "TMA forward");
    fails += diff_forward_differs(a, ref, "TMA forward rerun");
    tma_switch_off();
    return fails;
}

/* What a DIFF V1 backward takes beside diff_args: the output gradient (device), the values
 * dgamma and dlambda accumulate onto, the sizes of dq, dk, dv */
typedef struct diff_bwd_args {
    const float *dout, *dgamma0;
    float dlambda0;
    size_t nq, nk, nv;
} diff_bwd_args;

/* DIFF V1's backward with the switches as set, on ref's forward outputs: the number of its
 * outputs (dq, dk, dv, dgamma, dlambda) whose bits differ from ref's, each reported as of `run`.
 * With rq0, rk0 it runs again with RoPE's backward in its stores, whose dq and dk must be rq0's
 * and rk0's bits (the RoPE-fused run of ref's settings) and its dv ref's. */
static int diff_backward_differs(const diff_args *a, const diff_bwd_args *g, const diff_out *ref,
                                 const dt_operand *rq0, const dt_operand *rk0, const char *run) {
    const int d2 = 2 * a->d;
    diff_out o;
    diff_out_alloc(&o, 1, 1, 1, g->nq, g->nk, g->nv, g->dgamma0, d2, g->dlambda0);
    cuda_flash_diffattn_backward(o.dq, o.dk, o.dv, o.dgamma, o.dlambda, g->dout, a->q, a->k,
                                 a->v, ref->o1, ref->o2, ref->lse, ref->rstd, a->lambda,
                                 a->gamma, a->lambda_init, a->B, a->T, a->H, a->Hkv, a->d, NULL);
    int fails = cot_bits_differ("dq", run, ref->dq, o.dq, g->nq);
    fails += cot_bits_differ("dk", run, ref->dk, o.dk, g->nk);
    fails += cot_operand_bits_differ("dv", run, ref->dv, o.dv, g->nv);
    fails += cot_bits_differ("dgamma", run, ref->dgamma, o.dgamma, (size_t)d2);
    fails += cot_bits_differ("dlambda", run, ref->dlambda, o.dlambda, 1);
    diff_out_free(&o);
    if (!rq0) return fails;
    diff_out_alloc(&o, 1, 1, 1, 1, 1, g->nv, g->dgamma0, d2, g->dlambda0);
    dt_operand *rq = cot_operand_nan(g->nq), *rk = cot_operand_nan(g->nk);
    const dt_rope_grads rope = {rq, rk, ROPE_THETA};
    cuda_flash_diffattn_backward(NULL, NULL, o.dv, o.dgamma, o.dlambda, g->dout, a->q, a->k,
                                 a->v, ref->o1, ref->o2, ref->lse, ref->rstd, a->lambda,
                                 a->gamma, a->lambda_init, a->B, a->T, a->H, a->Hkv, a->d, &rope);
    fails += cot_operand_bits_differ("RoPE-fused dq", run, rq0, rq, g->nq);
    fails += cot_operand_bits_differ("RoPE-fused dk", run, rk0, rk, g->nk);
    fails += cot_operand_bits_differ("RoPE-fused dv", run, ref->dv, o.dv, g->nv);
    diff_out_free(&o);
    cuda_free(rq);
    cuda_free(rk);
    return fails;
}

/* DIFF V1's warp-specialised dk/dv (flash_test.h: TMA loads, a consumer warpgroup a branch)
 * must give the bits of the mma.sync paired kernel in the runs MMA (dq recomputing dS) and
 * STORED (dq reading the dS tiles it stores), on their forward outputs: dq, dk, dv, dgamma,
 * dlambda, and in STORED with RoPE's backward in the stores (rq, rk: the runs' RoPE-fused dq
 * and dk). Where the build and device have no sm_90 kernels it must not run
 * (cuda_flash_tma_bwd). */
static int check_diff_bwd_tma(const diff_args *a, const diff_bwd_args *g, const diff_out *f,
                              dt_operand *const *rq, dt_operand *const *rk) {
    static const int runs[2] = {MMA, STORED};
    int fails = 0;
    for (int i = 0; i < 2; i++) {
        set_run(runs[i]);
        cuda_flash_test_tma_bwd(1);
        const int capable = cuda_flash_sm90_capable();
        assert_int_equal(cuda_flash_tma_bwd(a->d, 1), capable);
        if (!capable) break;
        fails += diff_backward_differs(a, g, &f[runs[i]], i ? rq[STORED] : NULL,
                                       i ? rk[STORED] : NULL,
                                       i ? "TMA dk/dv, stored dS" : "TMA dk/dv");
    }
    cuda_flash_test_tma_bwd(-1);
    set_run(0);
    return fails;
}

static int run_diff(const diff_case *c, unsigned seed) {
    const int B = 2, T = c->T, H = c->H, Hkv = c->Hkv, d = c->d, d2 = 2 * d;
    set_mode(1);
    if (!case_fits("diffattn", d, 1)) return 0;
    /* the per-branch kernels' dk/dv needs 173,056 B at d = 128: more than an A100 has */
    const int branches = run_fits(BRANCHES, d, 1);
    const float lambda_init = 0.356f, eps = 1e-5f; /* layer 1's lambda_init (SPEC 2) */
    const size_t nq = (size_t)B * T * 2 * H * d, nk = (size_t)B * T * 2 * Hkv * d;
    const size_t nv = (size_t)B * T * Hkv * d2, no = (size_t)B * T * H * d2;
    const size_t nl = (size_t)B * 2 * H * T, nr = (size_t)B * T * H;
    float *q = host_alloc(nq), *k = host_alloc(nk), *v = host_alloc(nv), *dout = host_alloc(no);
    float gamma[256], dgamma0[256], lambda = c->lambda, dlambda0 = 1.5f;
    cut_fill(q, nq, seed + 1, -2.0f, 2.0f);
    cut_fill(k, nk, seed + 2, -2.0f, 2.0f);
    cut_fill(v, nv, seed + 3, -1.0f, 1.0f);
    cut_fill(dout, no, seed + 4, -1.0f, 1.0f);
    cut_fill(gamma, (size_t)d2, seed + 5, 0.5f, 1.5f);
    cut_fill(dgamma0, (size_t)d2, seed + 6, -2.0f, 2.0f); /* nonzero: dgamma accumulates */
    if (c->spikes) spike_inputs(q, k, B, T, 2 * H, 2 * Hkv, d);
    const float *gamma_h = c->subln ? gamma : NULL;

    /* (a) the CPU oracle */
    float *out = host_alloc(no), *o1 = host_alloc(no), *o2 = host_alloc(no);
    float *lse = host_alloc(nl), *rstd = host_alloc(nr);
    float *dq = host_alloc(nq), *dk = host_alloc(nk), *dvv = host_alloc(nv);
    float dgamma[256], dlambda = dlambda0;
    memcpy(dgamma, dgamma0, sizeof(float) * d2);
    cpu_diffattn_forward(out, o1, o2, lse, rstd, q, k, v, &lambda, gamma_h, lambda_init, eps, B,
                         T, H, Hkv, d);
    cpu_diffattn_backward(dq, dk, dvv, dgamma, &dlambda, dout, q, k, v, o1, o2, lse, rstd,
                          &lambda, gamma_h, lambda_init, B, T, H, Hkv, d);

    float *lambda_d = cot_dev(&lambda, 1);
    float *gamma_d = c->subln ? cot_dev(gamma, (size_t)d2) : NULL;
    /* (b) the tiled kernels on bf16-rounded inputs */
    float *qr = rounded_copy(q, nq), *kr = rounded_copy(k, nk), *vr = rounded_copy(v, nv);
    float *doutr = rounded_copy(dout, no);
    float *tdout = cot_dev(doutr, no);
    diff_out t;
    set_mode(0); /* fp32 operands and out */
    dt_operand *tq = cot_operand_dev(qr, nq), *tk = cot_operand_dev(kr, nk);
    dt_operand *tv = cot_operand_dev(vr, nv);
    diff_out_alloc(&t, no, nl, nr, nq, nk, nv, dgamma0, d2, dlambda0);
    cuda_diffattn_forward(t.out, t.o1, t.o2, t.lse, t.rstd, tq, tk, tv, lambda_d, gamma_d,
                          lambda_init, eps, B, T, H, Hkv, d);
    cuda_diffattn_backward(t.dq, t.dk, t.dv, t.dgamma, t.dlambda, tdout, tq, tk, tv, t.o1, t.o2,
                           t.lse, t.rstd, lambda_d, gamma_d, lambda_init, B, T, H, Hkv, d);
    float *th[10];
    const float *tdev[10] = {NULL, t.o1, t.o2, t.lse, t.rstd, t.dq, t.dk, NULL, t.dgamma,
                             t.dlambda};
    const size_t tn[10] = {no, no, no, nl, nr, nq, nk, nv, (size_t)d2, 1};
    th[0] = cot_operand_to_host(t.out, no); /* the operands (fp32 here) */
    th[7] = cot_operand_to_host(t.dv, nv);
    for (int i = 1; i < 10; i++)
        if (tdev[i]) th[i] = to_host(tdev[i], tn[i]);

    /* the fused kernels on the bf16 operands of the inputs, twice, then on the fp32-staging test
     * path, then with the sm_90 kernels off (RUNS) */
    float *dout_d = cot_dev(dout, no);
    diff_out f[RUNS], r[RUNS]; /* r: the RoPE-fused backward of each run (no forward) */
    dt_operand *rq[RUNS], *rk[RUNS];
    set_mode(1); /* bf16 operands: q, k, v rounded, out, dv */
    dt_operand *q_d = cot_operand_dev(q, nq), *k_d = cot_operand_dev(k, nk);
    dt_operand *v_d = cot_operand_dev(v, nv);
    const int sm90 = cuda_flash_sm90_capable();
    for (int run = 0; run < RUNS; run++) {
        diff_out *o = &f[run];
        memset(&r[run], 0, sizeof r[run]);
        rq[run] = rk[run] = NULL;
        if (run == BRANCHES && !branches) {
            memset(o, 0, sizeof *o);
            continue;
        }
        set_run(run);
        diff_out_alloc(o, no, nl, nr, nq, nk, nv, dgamma0, d2, dlambda0);
        cuda_flash_diffattn_forward(o->out, o->o1, o->o2, o->lse, o->rstd, q_d, k_d, v_d,
                                    lambda_d, gamma_d, lambda_init, eps, B, T, H, Hkv, d);
        cuda_flash_diffattn_backward(o->dq, o->dk, o->dv, o->dgamma, o->dlambda, dout_d, q_d, k_d,
                                     v_d, o->o1, o->o2, o->lse, o->rstd, lambda_d, gamma_d,
                                     lambda_init, B, T, H, Hkv, d, NULL);
        if (!rope_run(run)) continue;
        diff_out_alloc(&r[run], 1, 1, 1, 1, 1, nv, dgamma0, d2, dlambda0);
        rq[run] = cot_operand_nan(nq);
        rk[run] = cot_operand_nan(nk);
        const dt_rope_grads rope = {rq[run], rk[run], ROPE_THETA};
        cuda_flash_diffattn_backward(NULL, NULL, r[run].dv, r[run].dgamma, r[run].dlambda, dout_d,
                                     q_d, k_d, v_d, o->o1, o->o2, o->lse, o->rstd, lambda_d,
                                     gamma_d, lambda_init, B, T, H, Hkv, d, &rope);
    }
    set_run(0);
    cuda_synchronize();

    printf("-- diffattn B=%d T=%d H=%d Hkv=%d d=%d subln=%d lambda=%g%s (kernels: %s)%s\n",
           B, T, H, Hkv, d, c->subln, (double)lambda, c->spikes ? " spikes" : "",
           sm90 ? "wgmma" : "mma.sync",
           branches ? "" : "; no per-branch backward: it does not fit the shared memory");
    const diff_out *F = &f[0];
    int fails = c->spikes ? check_spikes(q, k, B, T, 2 * H, 2 * Hkv, d, 1) : 0;
    fails += check_out("out vs cpu", F->out, out, no, CPU_FWD_AFRAC, CPU_RTOL);
    fails += check("o1 vs cpu", F->o1, o1, no, CPU_FWD_AFRAC, CPU_RTOL);
    fails += check("o2 vs cpu", F->o2, o2, no, CPU_FWD_AFRAC, CPU_RTOL);
    fails += check("lse vs cpu", F->lse, lse, nl, CPU_FWD_AFRAC, 0.0);
    if (c->subln) fails += check("rstd vs cpu", F->rstd, rstd, nr, CPU_FWD_AFRAC, CPU_RTOL);
    fails += check_grad("dq vs cpu", F->dq, dq, nq, CPU_BWD_AFRAC, CPU_RTOL);
    fails += check_grad("dk vs cpu", F->dk, dk, nk, CPU_BWD_AFRAC, CPU_RTOL);
    fails += check_grad_out("dv vs cpu", F->dv, dvv, nv, CPU_BWD_AFRAC, CPU_RTOL);
    /* accumulated onto dgamma0 / dlambda0 (subln off: dgamma untouched). dlambda sums G . o2
     * over all rows with much cancellation, so its forward's bf16 error (in o2, rstd) does not
     * shrink with the sum: checked on the same forward outputs as the oracle (below) */
    fails += check("dgamma vs cpu", F->dgamma, dgamma, (size_t)d2, CPU_BWD_AFRAC, CPU_RTOL);
    fails += check_out("out vs tiled", F->out, th[0], no, TILED_AFRAC, TILED_RTOL);
    fails += check("o1 vs tiled", F->o1, th[1], no, TILED_O_AFRAC, 0.0);
    fails += check("o2 vs tiled", F->o2, th[2], no, TILED_O_AFRAC, 0.0);
    fails += cot_out_of_tol("lse vs tiled", F->lse, th[3], nl, 0.0, TILED_LSE_RTOL,
                            DIFF_LSE_ATOL);
    if (c->subln) fails += check("rstd vs tiled", F->rstd, th[4], nr, TILED_AFRAC, TILED_RTOL);
    fails += check_grad("dq vs tiled", F->dq, th[5], nq, TILED_AFRAC, TILED_RTOL);
    fails += check_grad("dk vs tiled", F->dk, th[6], nk, TILED_AFRAC, TILED_RTOL);
    fails += check_grad_out("dv vs tiled", F->dv, th[7], nv, TILED_AFRAC, TILED_RTOL);
    fails += rounding_bias("dv rounding vs tiled", F->dv, th[7], nv);
    fails += check("dgamma vs tiled", F->dgamma, th[8], (size_t)d2, TILED_AFRAC, TILED_RTOL);
    { /* the reductions on identical inputs: the oracle's backward from the fused forward */
        float *fo1 = to_host(F->o1, no), *fo2 = to_host(F->o2, no), *flse = to_host(F->lse, nl);
        float *frstd = to_host(F->rstd, nr), *xq = host_alloc(nq), *xk = host_alloc(nk);
        float *xv = host_alloc(nv), rg[256], rl = dlambda0;
        memcpy(rg, dgamma0, sizeof(float) * d2);
        cpu_diffattn_backward(xq, xk, xv, rg, &rl, dout, q, k, v, fo1, fo2, flse,
                              c->subln ? frstd : NULL, &lambda, gamma_h, lambda_init, B, T, H,
                              Hkv, d);
        fails += cot_out_of_tol("dgamma, same o1 o2", F->dgamma, rg, (size_t)d2, 0.0, RED_RTOL,
                                RED_FLOOR);
        fails +=
            cot_out_of_tol("dlambda, same o1 o2", F->dlambda, &rl, 1, 0.0, RED_RTOL, RED_FLOOR);
        free(fo1), free(fo2), free(flse), free(frstd), free(xq), free(xk), free(xv);
    }
    const diff_out *M = &f[MMA];
    fails += cot_operand_bits_differ("out", "rerun", f[0].out, f[1].out, no);
    fails += cot_operand_bits_differ("out", F32_RUN, M->out, f[2].out, no);
    fails += cot_operand_bits_differ("dv", "rerun", f[0].dv, f[1].dv, nv);
    fails += cot_operand_bits_differ("dv", F32_RUN, M->dv, f[2].dv, nv);
    const float *a[10] = {NULL, f[0].o1, f[0].o2, f[0].lse, f[0].rstd,
                          f[0].dq,  f[0].dk, NULL, f[0].dgamma, f[0].dlambda};
    const float *b[10] = {NULL, f[1].o1, f[1].o2, f[1].lse, f[1].rstd,
                          f[1].dq,  f[1].dk, NULL, f[1].dgamma, f[1].dlambda};
    static const char *names[10] = {"out", "o1", "o2", "lse", "rstd",
                                    "dq", "dk", "dv", "dgamma", "dlambda"};
    const float *m[10] = {NULL, M->o1, M->o2, M->lse, M->rstd,
                          M->dq,  M->dk, NULL, M->dgamma, M->dlambda};
    const float *x[10] = {NULL, f[2].o1, f[2].o2, f[2].lse, f[2].rstd,
                          f[2].dq,  f[2].dk, NULL, f[2].dgamma, f[2].dlambda};
    for (int i = 1; i < 10; i++) /* the operands out (i = 0) and dv (i = 7): above */
        if (i != 7 && (i != 4 || c->subln)) {
            fails += same_bits(names[i], a[i], b[i], tn[i]);
            fails += cot_bits_differ(names[i], F32_RUN, m[i], x[i], tn[i]);
        }
    {
        const float *dqs[3] = {M->dq, f[STORED].dq, f[STORED + 1].dq};
        const float *dks[3] = {M->dk, f[STORED].dk, f[STORED + 1].dk};
        const dt_operand *dvs[3] = {M->dv, f[STORED].dv, f[STORED + 1].dv};
        fails += check_stored_ds(dqs, dks, dvs, nq, nk, nv);
        for (int run = STORED; run <= STORED + 1; run++) /* dgamma, dlambda: the prep's */
            fails += cot_bits_differ("dgamma", "stored-dS run", M->dgamma, f[run].dgamma,
                                     (size_t)d2) +
                     cot_bits_differ("dlambda", "stored-dS run", M->dlambda, f[run].dlambda, 1);
    }
    if (branches) fails += check_branches(M, &f[BRANCHES], nq, nk, nv, d2);
    {
        const diff_args args = {q_d,         k_d, v_d, lambda_d, gamma_d, lambda_init, eps, B, T,
                                H,           Hkv, d,   no,       nl,      nr};
        const diff_out *refs[2] = {M, &f[2]};
        fails += check_diff_fwd_branch(&args, refs);
        fails += check_diff_fwd_tma(&args, F);
        const diff_bwd_args bargs = {dout_d, dgamma0, dlambda0, nq, nk, nv};
        fails += check_diff_bwd_tma(&args, &bargs, f, rq, rk);
    }
    for (int run = 0; run < RUNS; run++) { /* and dgamma, dlambda: the prep's, unchanged */
        if (!rope_run(run) || (run == BRANCHES && !branches)) continue;
        fails += check_rope(rq[run], rk[run], r[run].dv, f[run].dq, f[run].dk, f[run].dv, B, T,
                            2 * H, 2 * Hkv, d, nv);
        fails += cot_bits_differ("dgamma", "RoPE-fused run", f[run].dgamma, r[run].dgamma,
                                 (size_t)d2) +
                 cot_bits_differ("dlambda", "RoPE-fused run", f[run].dlambda, r[run].dlambda, 1);
    }
    if (sm90) { /* the wgmma kernels (run 0) against the mma.sync ones, as against the tiled */
        float *mh[8];
        for (int i = 1; i < 7; i++) mh[i] = to_host(m[i], tn[i]);
        mh[0] = cot_operand_to_host(M->out, no);
        mh[7] = cot_operand_to_host(M->dv, nv);
        fails += check_out("out vs mma.sync", F->out, mh[0], no, TILED_AFRAC, TILED_RTOL);
        fails += check("o1 vs mma.sync", F->o1, mh[1], no, TILED_O_AFRAC, 0.0);
        fails += check("o2 vs mma.sync", F->o2, mh[2], no, TILED_O_AFRAC, 0.0);
        fails += check("lse vs mma.sync", F->lse, mh[3], nl, 1e-6, TILED_LSE_RTOL);
        if (c->subln)
            fails += check("rstd vs mma.sync", F->rstd, mh[4], nr, TILED_AFRAC, TILED_RTOL);
        fails += check_grad("dq vs mma.sync", F->dq, mh[5], nq, TILED_AFRAC, TILED_RTOL);
        fails += check_grad("dk vs mma.sync", F->dk, mh[6], nk, TILED_AFRAC, TILED_RTOL);
        fails += check_grad_out("dv vs mma.sync", F->dv, mh[7], nv, TILED_AFRAC, TILED_RTOL);
        for (int i = 0; i < 8; i++) free(mh[i]);
    }

    diff_out_free(&t);
    for (int run = 0; run < RUNS; run++) {
        diff_out_free(&f[run]);
        diff_out_free(&r[run]);
        cuda_free(rq[run]);
        cuda_free(rk[run]);
    }
    void *dev[] = {tq, tk, tv, tdout, q_d, k_d, v_d, dout_d, lambda_d, gamma_d};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) cuda_free(dev[i]);
    for (int i = 0; i < 10; i++) free(th[i]);
    float *host[] = {q, k, v, dout, out, o1, o2, lse, rstd, dq, dk, dvv, qr, kr, vr, doutr};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
    return fails;
}

static void test_diffattn(void **state) {
    (void)state;
    static const diff_case cases[] = { /* T, H, Hkv, d, subln, lambda, spikes */
        {1, 2, 2, 64, 1, 0.35f, 0},     {17, 2, 1, 96, 1, -0.45f, 0},
        {100, 2, 2, 128, 0, 0.8f, 0},   {130, 2, 1, 64, 1, 0.8f, 0},
        {100, 2, 1, 96, 0, 0.35f, 0},   {17, 2, 2, 128, 1, -0.2f, 0},
        {130, 2, 2, 128, 1, -0.45f, 0}, {64, 2, 1, 128, 0, 0.35f, 0},
        {200, 2, 1, 96, 1, 0.8f, 0},    {257, 2, 1, 96, 1, 0.8f, 1},
        {200, 2, 2, 128, 0, 0.35f, 1},
    };
    int fails = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        fails += run_diff(&cases[i], 5000 + 10 * (unsigned)i);
    assert_int_equal(fails, 0);
}

/* ---- the backend table under bf16 and fp32 products ---- */

/* Which kernels a backend op must match: FUSED_FWD the forward's fused ones, FUSED_BWD the
 * backward's (each else the tiled ones) */
#define FUSED_FWD 1
#define FUSED_BWD 2
#define FUSED (FUSED_FWD | FUSED_BWD)

/* 1 unless the backend's standard attention forward and backward (bf16 products) give the bits
 * of the kernels fused says (FUSED_*). q_off: q starts that many bf16 elements into its buffer
 * (4: 8 bytes, not the 16-byte alignment the fused kernels need). */
static int dispatch_standard(const dt_backend *be, int d, int fused, int q_off) {
    const int B = 1, T = 33, Hq = 2, Hkv = 1;
    const size_t nq = (size_t)B * T * Hq * d, nk = (size_t)B * T * Hkv * d, nl = (size_t)B * Hq * T;
    float *h = host_alloc(nq), *hq = host_alloc(nq + (size_t)q_off);
    cut_fill(h, nq, 11 + d, -1.0f, 1.0f);
    memcpy(hq + q_off, h, nq * sizeof(float));
    dt_operand *q_buf = cot_operand_dev(hq, nq + (size_t)q_off), *k = cot_operand_dev(h, nk);
    const dt_operand *q = dt_operand_at(be, q_buf, (size_t)q_off);
    dt_operand *v = cot_operand_dev(h + nk, nk);
    float *dout = cot_dev(h, nq);
    dt_operand *o[2], *dv[2];
    float *l[2], *dq[2], *dk[2];
    for (int i = 0; i < 2; i++) {
        o[i] = cot_operand_nan(nq), l[i] = cot_dev_nan(nl), dq[i] = cot_dev_nan(nq);
        dk[i] = cot_dev_nan(nk), dv[i] = cot_operand_nan(nk);
    }
    be->attention_forward(o[0], l[0], q, k, v, B, T, Hq, Hkv, d, d);
    be->attention_backward(dq[0], dk[0], dv[0], dout, q, k, v, o[0], l[0], B, T, Hq, Hkv, d, d,
                           NULL);
    /* with RoPE's backward: into rq, rk (scratch sq, sk) */
    dt_operand *rq = cot_operand_nan(nq), *rk = cot_operand_nan(nk), *rdv = cot_operand_nan(nk);
    float *sq = cot_dev_nan(nq), *sk = cot_dev_nan(nk);
    const dt_rope_grads rope = {rq, rk, ROPE_THETA};
    be->attention_backward(sq, sk, rdv, dout, q, k, v, o[0], l[0], B, T, Hq, Hkv, d, d, &rope);
    (fused & FUSED_FWD ? cuda_flash_attention_forward
                       : cuda_attention_forward)(o[1], l[1], q, k, v, B, T, Hq, Hkv, d, d);
    if (fused & FUSED_BWD)
        cuda_flash_attention_backward(dq[1], dk[1], dv[1], dout, q, k, v, o[1], l[1], B, T, Hq,
                                      Hkv, d, d, NULL);
    else
        cuda_attention_backward(dq[1], dk[1], dv[1], dout, q, k, v, o[1], l[1], B, T, Hq, Hkv, d,
                                d);
    printf("-- %s products, attention d=%d, q %d bytes into its buffer: the %s forward and %s "
           "backward kernels\n", be->operand_bytes == 2 ? "bf16" : "fp32", d, 2 * q_off,
           fused & FUSED_FWD ? "fused" : "tiled", fused & FUSED_BWD ? "fused" : "tiled");
    int fails = cot_operand_bits_differ("out", "the direct call", o[0], o[1], nq);
    fails += same_bits("lse", l[0], l[1], nl);
    fails += same_bits("dq", dq[0], dq[1], nq) + same_bits("dk", dk[0], dk[1], nk);
    fails += cot_operand_bits_differ("dv", "the direct call", dv[0], dv[1], nk);
    fails += check_rope(rq, rk, rdv, dq[1], dk[1], dv[1], B, T, Hq, Hkv, d, nk);
    void *dev[] = {q_buf, k,     v,     dout,  o[0],  o[1],  l[0], l[1], dq[0], dq[1],
                   dk[0], dk[1], dv[0], dv[1], rq,    rk,    rdv,  sq,   sk};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) cuda_free(dev[i]);
    free(h), free(hq);
    return fails;
}

/* The same for DIFF V1 (subln on). */
static int dispatch_diff(const dt_backend *be, int d, int fused) {
    const int B = 1, T = 33, H = 2, Hkv = 1, d2 = 2 * d;
    const size_t nq = (size_t)B * T * 2 * H * d, nk = (size_t)B * T * 2 * Hkv * d;
    const size_t no = (size_t)B * T * H * d2, nl = (size_t)B * 2 * H * T, nr = (size_t)B * T * H;
    float *h = host_alloc(nq), gamma[256], lam = 0.3f;
    cut_fill(h, nq, 21 + d, -1.0f, 1.0f);
    cut_fill(gamma, (size_t)d2, 22, 0.5f, 1.5f);
    dt_operand *q = cot_operand_dev(h, nq), *k = cot_operand_dev(h, nk);
    dt_operand *v = cot_operand_dev(h + nk, nk);
    float *dout = cot_dev(h, no), *lam_d = cot_dev(&lam, 1), *gamma_d = cot_dev(gamma, d2);
    diff_out f[2];
    const float zeros[256] = {0.0f};
    for (int i = 0; i < 2; i++) diff_out_alloc(&f[i], no, nl, nr, nq, nk, nk, zeros, d2, 0.0f);
    be->diffattn_forward(f[0].out, f[0].o1, f[0].o2, f[0].lse, f[0].rstd, q, k, v, lam_d, gamma_d,
                         0.2f, 1e-5f, B, T, H, Hkv, d);
    be->diffattn_backward(f[0].dq, f[0].dk, f[0].dv, f[0].dgamma, f[0].dlambda, dout, q, k, v,
                          f[0].o1, f[0].o2, f[0].lse, f[0].rstd, lam_d, gamma_d, 0.2f, B, T, H,
                          Hkv, d, NULL);
    /* with RoPE's backward: into rq, rk (scratch: r's dq, dk) */
    diff_out r;
    diff_out_alloc(&r, 1, 1, 1, nq, nk, nk, zeros, d2, 0.0f);
    dt_operand *rq = cot_operand_nan(nq), *rk = cot_operand_nan(nk);
    const dt_rope_grads rope = {rq, rk, ROPE_THETA};
    be->diffattn_backward(r.dq, r.dk, r.dv, r.dgamma, r.dlambda, dout, q, k, v, f[0].o1, f[0].o2,
                          f[0].lse, f[0].rstd, lam_d, gamma_d, 0.2f, B, T, H, Hkv, d, &rope);
    void (*fwd)(dt_operand *, float *, float *, float *, float *, const dt_operand *,
                const dt_operand *, const dt_operand *, const float *, const float *, float, float,
                int, int, int, int, int) =
        fused & FUSED_FWD ? cuda_flash_diffattn_forward : cuda_diffattn_forward;
    fwd(f[1].out, f[1].o1, f[1].o2, f[1].lse, f[1].rstd, q, k, v, lam_d, gamma_d, 0.2f, 1e-5f, B,
        T, H, Hkv, d);
    if (fused & FUSED_BWD)
        cuda_flash_diffattn_backward(f[1].dq, f[1].dk, f[1].dv, f[1].dgamma, f[1].dlambda, dout, q,
                                     k, v, f[1].o1, f[1].o2, f[1].lse, f[1].rstd, lam_d, gamma_d,
                                     0.2f, B, T, H, Hkv, d, NULL);
    else
        cuda_diffattn_backward(f[1].dq, f[1].dk, f[1].dv, f[1].dgamma, f[1].dlambda, dout, q, k,
                               v, f[1].o1, f[1].o2, f[1].lse, f[1].rstd, lam_d, gamma_d, 0.2f, B,
                               T, H, Hkv, d);
    printf("-- %s products, diffattn d=%d: the %s forward and %s backward kernels\n",
           be->operand_bytes == 2 ? "bf16" : "fp32", d, fused & FUSED_FWD ? "fused" : "tiled",
           fused & FUSED_BWD ? "fused" : "tiled");
    int fails = cot_operand_bits_differ("out", "the direct call", f[0].out, f[1].out, no);
    fails += same_bits("lse", f[0].lse, f[1].lse, nl);
    fails += same_bits("dq", f[0].dq, f[1].dq, nq) + same_bits("dk", f[0].dk, f[1].dk, nk);
    fails += cot_operand_bits_differ("dv", "the direct call", f[0].dv, f[1].dv, nk);
    fails += same_bits("dgamma", f[0].dgamma, f[1].dgamma, d2);
    fails += same_bits("dlambda", f[0].dlambda, f[1].dlambda, 1);
    fails += check_rope(rq, rk, r.dv, f[1].dq, f[1].dk, f[1].dv, B, T, 2 * H, 2 * Hkv, d, nk);
    fails += same_bits("dgamma", f[0].dgamma, r.dgamma, d2);
    fails += same_bits("dlambda", f[0].dlambda, r.dlambda, 1);
    diff_out_free(&f[0]);
    diff_out_free(&f[1]);
    diff_out_free(&r);
    void *dev[] = {q, k, v, dout, lam_d, gamma_d, rq, rk};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) cuda_free(dev[i]);
    free(h);
    return fails;
}

/* 1 when a child process that calls ask() with the environment variable var=value dies of
 * SIGABRT (the op's error for a value it does not know), 0 when it returns */
static int env_aborts(const char *var, const char *value, int (*ask)(void)) {
    fflush(stdout);
    const pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setenv(var, value, 1);
        (void)ask();
        _exit(0);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT;
}

/* A kernel choice that an environment variable makes when its test switch (flash_test.h) is
 * unset: ask() reports the choice (got_off for the default, got_on for the other), set(arg) is
 * the test switch (set(-1) defers to the environment), and the wgmma kernels, where they run,
 * always take got_wgmma. */
typedef struct env_choice {
    const char *var, *off, *on; /* the variable, its default value and the other one */
    int (*ask)(void);
    void (*set)(int);
    int set_off, got_off, got_on, got_wgmma;
    const char *bad[2]; /* values it does not know */
} env_choice;

/* Unset, empty and the default value give the default, the other value the other choice; the
 * test switch wins over the environment; the wgmma kernels keep their own (the fp32-staging
 * path has only the mma.sync ones); an unknown value stops the program. */
static void check_env_choice(const env_choice *c) {
    set_mode(1);
    cuda_flash_test_f32_staging(0);
    cuda_flash_test_sm90(0);
    c->set(-1);
    const char *values[] = {NULL, "", c->off, c->on};
    for (int i = 0; i < 4; i++) {
        if (values[i]) setenv(c->var, values[i], 1);
        else unsetenv(c->var);
        assert_int_equal(c->ask(), i == 3 ? c->got_on : c->got_off);
    }
    c->set(c->set_off); /* the test switch wins */
    assert_int_equal(c->ask(), c->got_off);
    c->set(-1);
    if (cuda_flash_sm90_capable()) {
        cuda_flash_test_sm90(1);
        assert_int_equal(c->ask(), c->got_wgmma);
        cuda_flash_test_f32_staging(1);
        assert_int_equal(c->ask(), c->got_on);
        cuda_flash_test_f32_staging(0);
        cuda_flash_test_sm90(0);
    }
    unsetenv(c->var);
    assert_int_equal(env_aborts(c->var, c->on, c->ask), 0);
    assert_int_equal(env_aborts(c->var, c->bad[0], c->ask), 1);
    assert_int_equal(env_aborts(c->var, c->bad[1], c->ask), 1);
    cuda_flash_test_sm90(-1);
}

/* DIFFTRAIN_FLASH_DQ selects where the mma.sync backward's dq gets dS (auto, the default;
 * recompute; stored); the wgmma kernels always recompute. */
static void test_dq_env(void **state) {
    (void)state;
    const env_choice c = {"DIFFTRAIN_FLASH_DQ", "auto", "recompute", cuda_flash_dq_mode,
                          cuda_flash_test_dq_mode, FLASH_DQ_AUTO, FLASH_DQ_AUTO,
                          FLASH_DQ_RECOMPUTE, FLASH_DQ_RECOMPUTE, {"Stored", "1"}};
    check_env_choice(&c);
    setenv("DIFFTRAIN_FLASH_DQ", "stored", 1); /* the third value */
    assert_int_equal(cuda_flash_dq_mode(), FLASH_DQ_STORED);
    assert_int_equal(env_aborts("DIFFTRAIN_FLASH_DQ", "stored", cuda_flash_dq_mode), 0);
    unsetenv("DIFFTRAIN_FLASH_DQ");
}

/* The auto mode stores the dS tiles of an op while they take at most its cap (FLASH_DQ_AUTO_BYTES,
 * or the test's): 64 x 64 bf16 tiles, the causal triangle of each (b, q-head); stored and
 * recompute hold at every size; the wgmma kernels recompute. */
static void test_dq_auto(void **state) {
    (void)state;
    set_mode(1);
    cuda_flash_test_f32_staging(0);
    cuda_flash_test_sm90(0);
    cuda_flash_test_dq_mode(FLASH_DQ_AUTO);
    /* T = 128: 2 x 2 tiles, 3 in the triangle; 2 q-heads: 6 tiles of 8 KiB */
    cuda_flash_test_dq_auto_bytes(6 * 8192);
    assert_int_equal(cuda_flash_dq_stored_at(1, 128, 2), 1);
    assert_int_equal(cuda_flash_dq_stored_at(1, 64, 2), 1);
    assert_int_equal(cuda_flash_dq_stored_at(1, 129, 2), 0); /* 6 tiles in the triangle */
    assert_int_equal(cuda_flash_dq_stored_at(2, 128, 2), 0);
    assert_int_equal(cuda_flash_dq_stored_at(1, 128, 3), 0);
    cuda_flash_test_dq_auto_bytes(6 * 8192 - 1);
    assert_int_equal(cuda_flash_dq_stored_at(1, 128, 2), 0);
    cuda_flash_test_dq_auto_bytes(0); /* the default cap, 2 GiB */
    assert_int_equal(cuda_flash_dq_stored_at(8, 2048, 16), 1); /* 830M, 8 x 2048: 0.55 GB */
    assert_int_equal(cuda_flash_dq_stored_at(4, 4096, 16), 1); /* 830M, 4 x 4096: 1.09 GB */
    assert_int_equal(cuda_flash_dq_stored_at(1, 8192, 24), 1); /* 3B, 1 x 8192: 1.62 GB */
    assert_int_equal(cuda_flash_dq_stored_at(1, 16384, 24), 0); /* 3B, 1 x 16384: 6.5 GB */
    assert_int_equal(cuda_flash_dq_stored_at(2, 8192, 24), 0);  /* 3.2 GB */
    cuda_flash_test_dq_mode(FLASH_DQ_STORED);
    assert_int_equal(cuda_flash_dq_stored_at(1, 16384, 24), 1);
    cuda_flash_test_dq_mode(FLASH_DQ_RECOMPUTE);
    assert_int_equal(cuda_flash_dq_stored_at(1, 64, 1), 0);
    cuda_flash_test_dq_mode(FLASH_DQ_AUTO);
    if (cuda_flash_sm90_capable()) {
        cuda_flash_test_sm90(1);
        assert_int_equal(cuda_flash_dq_stored_at(1, 64, 1), 0);
        assert_int_equal(cuda_flash_dq_mode(), FLASH_DQ_RECOMPUTE);
    }
    cuda_flash_test_sm90(-1);
    cuda_flash_test_dq_mode(-1);
}

/* DIFFTRAIN_FLASH_FWD_ROWS selects the mma.sync standard forward's rows a warp; the wgmma
 * kernels run their own forward (16 reported). */
static void test_fwd_rows_env(void **state) {
    (void)state;
    const env_choice c = {"DIFFTRAIN_FLASH_FWD_ROWS", "32", "16", cuda_flash_fwd_rows,
                          cuda_flash_test_fwd_rows, 32, 32, 16, 16, {"64", "wide"}};
    check_env_choice(&c);
}

/* DIFFTRAIN_FLASH_DIFF_FWD selects how DIFF V1's mma.sync forward splits V between the branch
 * warps; the wgmma kernels run their own forward (0 reported). */
static void test_diff_fwd_env(void **state) {
    (void)state;
    const env_choice c = {"DIFFTRAIN_FLASH_DIFF_FWD", "split", "branch",
                          cuda_flash_diff_fwd_split, cuda_flash_test_diff_fwd_split, 1, 1, 0, 0,
                          {"Split", "1"}};
    check_env_choice(&c);
}

static void test_backend_dispatch(void **state) {
    (void)state;
    float *buf = cut_to_device(NULL, 64 * sizeof(float));
    const void *ok[] = {buf, buf + 4}, *off[] = {buf, buf + 2}; /* 16 and 8 bytes in */
    assert_int_equal(cuda_flash_usable(64, 64, 0, 0, ok, 2), 1);
    assert_int_equal(cuda_flash_usable(64, 128, 1, 1, ok, 2), 1);
    assert_int_equal(cuda_flash_usable(96, 192, 1, 0, ok, 2), 1);
    assert_int_equal(cuda_flash_usable(128, 128, 0, 1, off, 2), 0); /* misaligned: the tiled path */
    assert_int_equal(cuda_flash_usable(64, 128, 0, 0, ok, 2), 0); /* dv = 2d is DIFF's */
    assert_int_equal(cuda_flash_usable(64, 64, 1, 0, ok, 2), 0);
    assert_int_equal(cuda_flash_usable(80, 80, 0, 1, ok, 2), 0);
    cuda_free(buf);
    uint16_t *b16 = cut_to_device(NULL, 64 * sizeof(uint16_t)); /* bf16 q, k, v */
    const void *ok16[] = {b16, b16 + 8}, *off16[] = {b16, b16 + 4}; /* 16 and 8 bytes in */
    assert_int_equal(cuda_flash_usable(64, 64, 0, 0, ok16, 2), 1);
    assert_int_equal(cuda_flash_usable(64, 64, 0, 1, off16, 2), 0);
    cuda_free(b16);
    set_mode(1);
    const dt_backend *be = dt_backend_cuda();
    assert_int_equal(be->operand_bytes, 2);
    int fails = dispatch_standard(be, 64, FUSED, 0) + dispatch_diff(be, 64, FUSED);
    fails += dispatch_standard(be, 32, 0, 0) + dispatch_diff(be, 32, 0); /* no fused kernel */
    fails += dispatch_standard(be, 64, 0, 4); /* a bf16 q 8 bytes off 16-byte alignment */
    set_mode(0); /* fp32 products: the exact tiled path */
    be = dt_backend_cuda();
    assert_int_equal(be->operand_bytes, 4);
    assert_true(be->attention_forward == cuda_attention_forward);
    assert_true(be->diffattn_forward == cuda_diffattn_forward);
    fails += dispatch_standard(be, 64, 0, 0) + dispatch_diff(be, 64, 0);
    assert_int_equal(fails, 0);
}

/* ---- GPUs with less shared memory than an H100 (flash_test.h's cap) ---- */

/* The shared memory a block may have after the opt-in, and where the fused kernels run there:
 * [diff][d = 64, 96, 128] (flash.h, cuda_flash_usable). An A100 runs them all (one K/V stage
 * where two do not fit, per-branch dq beside the paired dk/dv for DIFF at d = 96 and 128). */
typedef struct smem_gpu {
    const char *name;
    size_t bytes;
    int fwd[2][3], bwd[2][3];
} smem_gpu;
static const smem_gpu SMEM_GPUS[] = {
    {"A100", 166912, {{1, 1, 1}, {1, 1, 1}}, {{1, 1, 1}, {1, 1, 1}}},
    {"L40S", 101376, {{1, 1, 1}, {1, 1, 0}}, {{1, 1, 0}, {1, 0, 0}}},
};

/* The inputs of one capped case: standard attention (B 1, T 100, Hq 4, Hkv 2) or DIFF V1 (H 2,
 * Hkv 1, subln on) at head dim d; two query tiles, the second partial. */
typedef struct cap_case {
    int diff, d, B, T, H, Hkv;
    size_t nq, nk, nv, no, nl, nr;
    dt_operand *q, *k, *v;
    float *dout, *lambda, *gamma;
} cap_case;

static void cap_case_init(cap_case *c, int diff, int d) {
    const int B = 1, T = 100, H = diff ? 2 : 4, Hkv = diff ? 1 : 2, nb = diff ? 2 : 1;
    *c = (cap_case){diff, d, B, T, H, Hkv, (size_t)B * T * nb * H * d,
                    (size_t)B * T * nb * Hkv * d, (size_t)B * T * Hkv * nb * d,
                    (size_t)B * T * H * nb * d, (size_t)B * nb * H * T, (size_t)B * T * H,
                    NULL, NULL, NULL, NULL, NULL, NULL};
    float *h = host_alloc(c->nq + c->nk + c->nv + c->no), gamma[256], lambda = 0.4f;
    cut_fill(h, c->nq + c->nk + c->nv + c->no, 31 + d + diff, -1.5f, 1.5f);
    cut_fill(gamma, 2 * (size_t)d, 32, 0.5f, 1.5f);
    c->q = cot_operand_dev(h, c->nq);
    c->k = cot_operand_dev(h + c->nq, c->nk);
    c->v = cot_operand_dev(h + c->nq + c->nk, c->nv);
    c->dout = cot_dev(h + c->nq + c->nk + c->nv, c->no);
    c->lambda = cot_dev(&lambda, 1);
    c->gamma = cot_dev(gamma, 2 * (size_t)d);
    free(h);
}
static void cap_case_free(cap_case *c) {
    void *dev[] = {c->q, c->k, c->v, c->dout, c->lambda, c->gamma};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) cuda_free(dev[i]);
}

/* The case's forward and, when bwd, backward on the mma.sync kernels as set now (stored: dq from
 * the stored dS tiles), into o (allocated here) */
static void cap_pass(const cap_case *c, diff_out *o, int bwd, int stored) {
    const float zeros[256] = {0.0f};
    const int B = c->B, T = c->T, H = c->H, Hkv = c->Hkv, d = c->d;
    cuda_flash_test_dq_mode(stored);
    diff_out_alloc(o, c->no, c->nl, c->nr, c->nq, c->nk, c->nv, zeros, 2 * d, 0.0f);
    if (!c->diff) {
        cuda_flash_attention_forward(o->out, o->lse, c->q, c->k, c->v, B, T, H, Hkv, d, d);
        if (bwd)
            cuda_flash_attention_backward(o->dq, o->dk, o->dv, c->dout, c->q, c->k, c->v, o->out,
                                          o->lse, B, T, H, Hkv, d, d, NULL);
        return;
    }
    cuda_flash_diffattn_forward(o->out, o->o1, o->o2, o->lse, o->rstd, c->q, c->k, c->v,
                                c->lambda, c->gamma, 0.3f, 1e-5f, B, T, H, Hkv, d);
    if (bwd)
        cuda_flash_diffattn_backward(o->dq, o->dk, o->dv, o->dgamma, o->dlambda, c->dout, c->q,
                                     c->k, c->v, o->o1, o->o2, o->lse, o->rstd, c->lambda,
                                     c->gamma, 0.3f, B, T, H, Hkv, d, NULL);
}

/* 1 unless o (a capped run) has ref's bits in every output its pass wrote */
static int cap_same(const cap_case *c, const diff_out *ref, const diff_out *o, int bwd,
                    const char *run) {
    int fails = cot_operand_bits_differ("out", run, ref->out, o->out, c->no);
    fails += cot_bits_differ("lse", run, ref->lse, o->lse, c->nl);
    if (c->diff) {
        fails += cot_bits_differ("o1", run, ref->o1, o->o1, c->no);
        fails += cot_bits_differ("o2", run, ref->o2, o->o2, c->no);
        fails += cot_bits_differ("rstd", run, ref->rstd, o->rstd, c->nr);
    }
    if (!bwd) return fails;
    fails += cot_bits_differ("dq", run, ref->dq, o->dq, c->nq);
    fails += cot_bits_differ("dk", run, ref->dk, o->dk, c->nk);
    fails += cot_operand_bits_differ("dv", run, ref->dv, o->dv, c->nv);
    if (c->diff) {
        fails += cot_bits_differ("dgamma", run, ref->dgamma, o->dgamma, 2 * (size_t)c->d);
        fails += cot_bits_differ("dlambda", run, ref->dlambda, o->dlambda, 1);
    }
    return fails;
}

/* Under each cap: cuda_flash_usable answers as SMEM_GPUS says, the sm_90 kernels are off, every
 * fused op that runs there gives the uncapped run's bits (dq recomputing dS and from stored
 * tiles), every kernel it launches fits the cap (flash_smem_prepare aborts otherwise), and the
 * backend's ops run the fused kernels where usable, the tiled ones elsewhere. */
static void test_smem_limits(void **state) {
    (void)state;
    set_mode(1);
    const dt_backend *be = dt_backend_cuda();
    const size_t device = cuda_flash_smem_limit();
    printf("-- the device allows %zu bytes of shared memory a block\n", device);
    int fails = 0;
    for (int diff = 0; diff < 2; diff++)
        for (int di = 0; di < 3; di++) {
            const int d = 64 + 32 * di;
            cap_case c;
            cap_case_init(&c, diff, d);
            set_run(MMA);
            cuda_flash_test_smem_limit(0); /* the references: the device's own kernels */
            const int dv = diff ? 2 * d : d;
            const int ref_fwd = cuda_flash_usable(d, dv, diff, 0, NULL, 0);
            const int ref_bwd = cuda_flash_usable(d, dv, diff, 1, NULL, 0);
            diff_out ref[2];
            memset(ref, 0, sizeof ref);
            for (int stored = 0; ref_fwd && stored < 2; stored++)
                cap_pass(&c, &ref[stored], ref_bwd, stored);
            for (size_t g = 0; g < sizeof SMEM_GPUS / sizeof SMEM_GPUS[0]; g++) {
                const smem_gpu *gpu = &SMEM_GPUS[g];
                if (gpu->bytes > device) continue; /* not below this device's limit */
                cuda_flash_test_smem_limit(gpu->bytes);
                assert_int_equal(cuda_flash_smem_limit(), gpu->bytes);
                cuda_flash_test_sm90(1);
                assert_int_equal(cuda_flash_sm90(), 0);
                set_run(MMA);
                const void *aligned[] = {c.q, c.k};
                const int fwd = cuda_flash_usable(d, dv, diff, 0, aligned, 2);
                const int bwd = cuda_flash_usable(d, dv, diff, 1, aligned, 2);
                printf("-- %s (%zu bytes), %s d=%d: forward %s, backward %s\n", gpu->name,
                       gpu->bytes, diff ? "diffattn" : "attention", d,
                       fwd ? "fused" : "tiled", bwd ? "fused" : "tiled");
                assert_int_equal(fwd, gpu->fwd[diff][di]);
                assert_int_equal(bwd, gpu->bwd[diff][di]);
                for (int stored = 0; fwd && stored < 2; stored++) {
                    diff_out o;
                    cap_pass(&c, &o, bwd, stored);
                    fails += cap_same(&c, &ref[stored], &o, bwd,
                                      stored ? "the capped run, stored dS" : "the capped run");
                    diff_out_free(&o);
                }
                set_run(0);
                const int fused = (fwd ? FUSED_FWD : 0) | (bwd ? FUSED_BWD : 0);
                fails += diff ? dispatch_diff(be, d, fused) : dispatch_standard(be, d, fused, 0);
            }
            cuda_flash_test_smem_limit(0);
            diff_out_free(&ref[0]);
            diff_out_free(&ref[1]);
            cap_case_free(&c);
        }
    set_run(0);
    cuda_flash_test_sm90(-1);
    assert_int_equal(fails, 0);
}

int main(void) {
    cut_require_device();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_diffattn),
        cmocka_unit_test(test_backend_dispatch),
        cmocka_unit_test(test_dq_env),
        cmocka_unit_test(test_dq_auto),
        cmocka_unit_test(test_fwd_rows_env),
        cmocka_unit_test(test_diff_fwd_env),
        cmocka_unit_test(test_smem_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
