/* bench_attn: times the fused bf16 attention kernels (model/cuda/flash.h) of DIFF V1, DIFF V2 and
 * the baseline Transformer at the paper's 830M and 3B shapes on one GPU.
 *
 *   bench_attn [--iters=N] [--warmup=N] [--check=0|1] [--lines=main,tma,tmabwd]
 *
 * Shapes (the configs/paper files, tp 1): 830M: d_model 1536, 8 DIFF heads of d = 96 (baseline 16
 * heads); 3B: d_model 3072, 12 DIFF heads of d = 128 (baseline 24); n_kv_heads = n_heads. Per
 * layer:
 *   diff    DIFF V1: 2H q-heads and 2H k-heads of d, H v-heads of 2d (both branches fused);
 *   diff_v2 DIFF V2's attention: 2H q-heads, H kv-heads of d (GQA 2; the combine is not timed);
 *   base    the baseline: 2H heads of d.
 * Sequence 2048 and 4096 with B*T = 16384 tokens (B = 8 and 4).
 *
 * FLOPs (model FLOPs, causal: each product over the lower triangle counts T^2/2 rows x columns):
 * per q-head, forward = 2 T^2/2 (d + dv) (S = Q K^T and P V), backward = 2 T^2/2 (3d + 2dv) (S
 * recomputed, dP = dO V^T, dV = P^T dO, dQ = dS K, dK = dS^T Q): the FlashAttention papers'
 * count (backward = 2.5 x forward when dv = d). The kernels compute more than this (dq
 * recomputes S and dP, and whole diagonal tiles are multiplied before masking); the count is the
 * same for SDPA, so TFLOP/s compare directly.
 *
 * With --check=1 (default) each forward is first compared with the tiled kernels (fp32 math) on
 * the same inputs (max |fused - tiled| over out, which bf16 keeps near 1e-2 for these inputs).
 * The backend runs in bf16 mode, so q, k, v and out (dt_operands) are bf16 on both paths (out
 * widened to compare), and so is the backward's dv.
 *
 * Prints one line per case:
 *   RESULT kind size T B fwd_ms fwdbwd_ms fwd_tflops fwdbwd_tflops
 * (medians over --iters timed runs, each synchronised) on the kernels training runs (the
 * environment's choice: flash_test.h), and where the build and device also have the sm_90 wgmma
 * kernels (flash_*_sm90.cu) both kernel families timed in the same run:
 *   KERNELS kind size T mma_fwd_ms mma_fwdbwd_ms wgmma_fwd_ms wgmma_fwdbwd_ms
 *           wgmma/mma.sync_fwd wgmma/mma.sync_fwdbwd      (speed ratios: > 1, wgmma faster)
 * and the mma.sync backward's two ways to dq's dS, recomputed by the dq kernel
 * (DIFFTRAIN_FLASH_DQ=recompute) or read from the tiles dk/dv stores (stored; the default, auto,
 * up to 2 GiB of tiles: flash_test.h, flash_backward.cu), timed in the
 * same run, with the largest difference of the two dq relative to the largest |dq| (bf16
 * rounding at most; with --check=1 above 1e-2 fails the run):
 *   DQ kind size T recompute_fwdbwd_ms stored_fwdbwd_ms recompute/stored max_rel_diff
 *           (speed ratio: > 1, stored faster)
 * and for DIFF V1 the mma.sync dk/dv taking the two branches of a head one after the other
 * (each with its own dP^T and dV products) or both per query tile (the default;
 * flash_dkdv_diff.cu), timed in the same run, with the largest difference of the two dv
 * relative to the largest |dv| (bf16 rounding; above 1e-2 fails with --check=1) and of dk
 * (the same bits: anything but 0 fails):
 *   PAIRED diff size T per_branch_fwdbwd_ms paired_fwdbwd_ms per_branch/paired dv_rel dk_rel
 *           (speed ratio: > 1, paired faster)
 * and for the standard kinds (base, diff_v2) the mma.sync forward with 16 query rows a warp
 * (DIFFTRAIN_FLASH_FWD_ROWS=16) or 32 (the default; flash_forward_rows32.cu), timed in the same
 * run,
 * with the largest difference of the two outputs (the same bits: anything but 0 fails with
 * --check=1):
 *   ROWS kind size T rows16_fwd_ms rows32_fwd_ms rows16/rows32 out_rel (> 1: 32 rows faster)
 * and for DIFF V1 the mma.sync forward with each branch's warps over all 2d columns of V, then
 * with V's columns split between the two branch warps of a row group (the default;
 * DIFFTRAIN_FLASH_DIFF_FWD=branch selects the other; flash_forward_diff.cu), the same bits:
 *   SPLIT diff size T branch_fwd_ms split_fwd_ms branch/split out_rel (> 1: split faster)
 * and where the build and device have the sm_90 kernels, the forward on the wgmma kernel, then
 * on the warp-specialised one (TMA loads, two consumer warpgroups: DIFF V1's branches, or 128
 * rows of a standard head; DIFFTRAIN_FLASH_TMA=1 selects it; flash_forward_tma.cu), which must
 * give the same bits:
 *   TMA kind size T wgmma_fwd_ms tma_fwd_ms wgmma/tma tma_fwd_tflops out_rel
 *           (> 1: the warp-specialised kernel faster; bench/attn_report.py sets its TFLOP/s
 *           against SDPA's)
 * and there fwd+bwd with the mma.sync dk/dv (DIFF V1's paired one), then with the
 * warp-specialised one (DIFFTRAIN_FLASH_TMA_BWD=1 selects it; flash_dkdv_diff_tma.cu for DIFF
 * V1, flash_dkdv_tma.cu for the others), dq as the default reads it, with the largest
 * differences of dq, dk and dv (the same bits: anything but 0 fails):
 *   TMABWD kind size T mma_fwdbwd_ms tma_fwdbwd_ms mma/tma tma_fwdbwd_tflops dq_rel dk_rel
 *           dv_rel   (> 1: the warp-specialised dk/dv faster; attn_report.py against SDPA)
 * --lines picks the groups of lines (default all three): main (CHECK, RESULT, KERNELS, DQ, ROWS,
 * SPLIT, PAIRED), tma (TMA), tmabwd (TMABWD). bench_attn.sh runs each group in its own process,
 * so that a kernel that never ends or leaves the device unusable costs only its own group.
 * Exits 77 without a GPU. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/cuda/cuda_ops.h"
#include "model/cuda/cuda_probe.h"
#include "model/cuda/flash.h"
#include "model/cuda/flash_test.h"

typedef struct shape {
    const char *size;
    int H, d; /* DIFF heads (= kv groups) and head dim */
} shape;

typedef struct bufs { /* device buffers, sized for the largest kind */
    float *dout, *o1, *o2, *lse, *rstd, *dq, *dk, *gamma, *lambda, *dgamma, *dlambda, *ref_lse;
    dt_operand *q, *k, *v, *out, *ref, *dv; /* bf16 (the backend's operand format) */
} bufs;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* n uniform values in [lo, hi) on the host (malloc'd) */
static float *host_random(size_t n, uint64_t seed, float lo, float hi) {
    float *h = malloc((n ? n : 1) * sizeof(float));
    if (!h) {
        fprintf(stderr, "bench_attn: out of memory (%zu floats)\n", n);
        exit(1);
    }
    uint64_t s = 0x9E3779B97F4A7C15ull ^ seed;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        h[i] = lo + (hi - lo) * (float)((s >> 40) * (1.0 / 16777216.0));
    }
    return h;
}

static void *dev_upload(const void *h, size_t bytes) {
    void *d = cuda_alloc(bytes);
    if (!d) {
        fprintf(stderr, "bench_attn: out of device memory (%zu bytes)\n", bytes);
        exit(1);
    }
    cuda_copy_from_host(d, h, bytes);
    return d;
}

static float *dev_random(size_t n, uint64_t seed, float lo, float hi) {
    float *h = host_random(n, seed, lo, hi), *d = dev_upload(h, n * sizeof(float));
    free(h);
    return d;
}

/* the same values as a bf16 operand (rounded to nearest even; the values are finite) */
static dt_operand *dev_random_bf16(size_t n, uint64_t seed, float lo, float hi) {
    float *h = host_random(n, seed, lo, hi);
    uint16_t *b = malloc((n ? n : 1) * sizeof(uint16_t));
    if (!b) {
        fprintf(stderr, "bench_attn: out of memory (%zu bf16)\n", n);
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &h[i], sizeof u);
        b[i] = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
    dt_operand *d = dev_upload(b, n * sizeof(uint16_t));
    free(h);
    free(b);
    return d;
}

/* the fp32 value of bf16 bits */
static float bf16_widen(uint16_t b) {
    const uint32_t u = (uint32_t)b << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

enum { KIND_DIFF, KIND_V2, KIND_BASE };
static const char *kind_name[] = {"diff", "diff_v2", "base"};

/* One forward (and backward when bwd) of kind k; ref != 0 runs the tiled fp32 forward instead. */
static void run(int kind, const bufs *b, int B, int T, int H, int d, int bwd, int ref) {
    switch (kind) {
    case KIND_DIFF:
        (ref ? cuda_diffattn_forward : cuda_flash_diffattn_forward)(
            ref ? b->ref : b->out, b->o1, b->o2, ref ? b->ref_lse : b->lse, b->rstd, b->q, b->k,
            b->v, b->lambda, b->gamma, 0.2f, 1e-5f, B, T, H, H, d);
        if (bwd)
            cuda_flash_diffattn_backward(b->dq, b->dk, b->dv, b->dgamma, b->dlambda, b->dout,
                                         b->q, b->k, b->v, b->o1, b->o2, b->lse, b->rstd,
                                         b->lambda, b->gamma, 0.2f, B, T, H, H, d, NULL);
        break;
    case KIND_V2:
    case KIND_BASE: {
        const int Hkv = kind == KIND_V2 ? H : 2 * H;
        (ref ? cuda_attention_forward : cuda_flash_attention_forward)(
            ref ? b->ref : b->out, ref ? b->ref_lse : b->lse, b->q, b->k, b->v, B, T, 2 * H, Hkv,
            d, d);
        if (bwd)
            cuda_flash_attention_backward(b->dq, b->dk, b->dv, b->dout, b->q, b->k, b->v, b->out,
                                          b->lse, B, T, 2 * H, Hkv, d, d, NULL);
        break;
    }
    }
}

static double flops(int kind, int B, int T, int H, int d, int bwd) {
    const int nq = 2 * H, dv = kind == KIND_DIFF ? 2 * d : d;
    const double per = (double)B * nq * (double)T * T; /* 2 * T^2 / 2 per product column */
    return per * ((double)d + dv + (bwd ? 3.0 * d + 2.0 * dv : 0.0));
}

static double time_ms(int kind, const bufs *b, int B, int T, int H, int d, int bwd, int warmup,
                      int iters) {
    double t[64];
    for (int i = 0; i < warmup; i++) run(kind, b, B, T, H, d, bwd, 0);
    cuda_synchronize();
    for (int i = 0; i < iters; i++) {
        const double t0 = now_s();
        run(kind, b, B, T, H, d, bwd, 0);
        cuda_synchronize();
        t[i] = 1e3 * (now_s() - t0);
    }
    qsort(t, (size_t)iters, sizeof(double), cmp_double);
    return t[iters / 2];
}

/* max |a - b| / max |a| of two device tensors of n elements, fp32 (bf16 = 0) or bf16 (1); -1
 * when a value is not finite or host memory runs out */
static double rel_diff(const void *a, const void *b, size_t n, int bf16) {
    const size_t es = bf16 ? sizeof(uint16_t) : sizeof(float);
    void *x = malloc((n ? n : 1) * es), *y = malloc((n ? n : 1) * es);
    double worst = -1.0, big = 0.0;
    if (x && y) {
        cuda_copy_to_host(x, a, n * es);
        cuda_copy_to_host(y, b, n * es);
        worst = 0.0;
        for (size_t i = 0; i < n; i++) {
            const double u = bf16 ? bf16_widen(((const uint16_t *)x)[i]) : ((const float *)x)[i];
            const double v = bf16 ? bf16_widen(((const uint16_t *)y)[i]) : ((const float *)y)[i];
            const double e = fabs(u - v);
            if (!(e - e == 0.0)) { /* NaN or inf */
                worst = -1.0;
                break;
            }
            worst = fmax(worst, e);
            big = fmax(big, fabs(u));
        }
    }
    free(x);
    free(y);
    return worst > 0.0 && big > 0.0 ? worst / big : worst;
}

/* The forward (fwd+bwd when bwd) on the mma.sync kernels (sm90 0) or the wgmma ones (1) timed
 * into ms[on] with a test switch (flash_test.h) set(0), then set(1); the output src of the last
 * run with set(0) copied into ref (bytes) */
static void time_switch(int kind, const bufs *b, int B, int T, int H, int d, int bwd, int warmup,
                        int iters, int sm90, void (*set)(int), double ms[2], void *ref,
                        const void *src, size_t bytes) {
    cuda_flash_test_sm90(sm90);
    for (int on = 0; on < 2; on++) {
        set(on);
        ms[on] = time_ms(kind, b, B, T, H, d, bwd, warmup, iters);
        if (!on) cuda_copy(ref, src, bytes);
    }
    cuda_flash_test_sm90(-1);
    cuda_synchronize();
}

/* The DQ line (header): on the mma.sync kernels, fwd+bwd with dq's dS recomputed, then read from
 * the stored tiles; returns 1 when check and the two dq differ by more than 1e-2 of max |dq|. */
static int time_dq_modes(int kind, const bufs *b, float *dq_ref, int B, int T, int H, int d,
                         size_t n_dq, int warmup, int iters, int check, const char *size) {
    double ms[2];
    time_switch(kind, b, B, T, H, d, 1, warmup, iters, 0, cuda_flash_test_dq_mode, ms, dq_ref,
                b->dq, n_dq * sizeof(float));
    cuda_flash_test_dq_mode(-1);
    const double e = rel_diff(dq_ref, b->dq, n_dq, 0);
    printf("DQ %s %s %d %.3f %.3f %.2f %.3g\n", kind_name[kind], size, T, ms[0], ms[1],
           ms[0] / ms[1], e);
    if (check && (e < 0.0 || e > 1e-2)) {
        fprintf(stderr,
                "bench_attn: %s %s T=%d: dq from stored dS tiles off the recomputed one (%.3g of "
                "max |dq|)\n", kind_name[kind], size, T, e);
        return 1;
    }
    return 0;
}

static void set_fwd_rows32(int on) { cuda_flash_test_fwd_rows(on < 0 ? -1 : on ? 32 : 16); }

/* A forward line (header: ROWS for the standard kinds, SPLIT for DIFF V1): the forward on the
 * mma.sync kernels with the test switch set(0), then set(1) (set(-1) after: the environment's
 * choice); ref is scratch of n_out bf16. Returns 1 when check and the two outputs' bits
 * differ. */
static int time_fwd_switch(const char *tag, void (*set)(int), int kind, const bufs *b, void *ref,
                           int B, int T, int H, int d, size_t n_out, int warmup, int iters,
                           int check, const char *size) {
    double ms[2];
    time_switch(kind, b, B, T, H, d, 0, warmup, iters, 0, set, ms, ref, b->out,
                n_out * cuda_operand_bytes());
    set(-1);
    const double e = rel_diff(ref, b->out, n_out, 1);
    printf("%s %s %s %d %.3f %.3f %.2f %.3g\n", tag, kind_name[kind], size, T, ms[0], ms[1],
           ms[0] / ms[1], e);
    if (check && e != 0.0) {
        fprintf(stderr, "bench_attn: %s %s T=%d: the forward's out differs between the two "
                "kernels of the %s line (%.3g of the largest)\n", kind_name[kind], size, T, tag,
                e);
        return 1;
    }
    return 0;
}

/* The PAIRED line (header): DIFF V1 on the mma.sync kernels, fwd+bwd with the backward taking
 * each branch on its own, then both per query tile (the default); ref is scratch of n_dv
 * floats. Returns 1 when check and dk differs at all or dv by more than 1e-2 of max |dv|. */
static int time_diff_pairing(const bufs *b, float *ref, int B, int T, int H, int d, size_t n_dk,
                             size_t n_dv, int warmup, int iters, int check, const char *size) {
    double ms[2];
    time_switch(KIND_DIFF, b, B, T, H, d, 1, warmup, iters, 0, cuda_flash_test_diff_paired, ms,
                ref, b->dv, n_dv * cuda_operand_bytes());
    const double e = rel_diff(ref, b->dv, n_dv, 1);
    cuda_flash_test_diff_paired(0);
    run(KIND_DIFF, b, B, T, H, d, 1, 0);
    cuda_copy(ref, b->dk, n_dk * sizeof(float));
    cuda_flash_test_diff_paired(1);
    run(KIND_DIFF, b, B, T, H, d, 1, 0);
    cuda_synchronize();
    const double ek = rel_diff(ref, b->dk, n_dk, 0);
    printf("PAIRED diff %s %d %.3f %.3f %.2f %.3g %.3g\n", size, T, ms[0], ms[1], ms[0] / ms[1],
           e, ek);
    if (check && (e < 0.0 || e > 1e-2 || ek != 0.0)) {
        fprintf(stderr, "bench_attn: diff %s T=%d: paired dk/dv off the per-branch one (dv %.3g, "
                "dk %.3g of the largest)\n", size, T, e, ek);
        return 1;
    }
    return 0;
}

/* The TMA line (header): the forward of kind on the wgmma kernel, then on the warp-specialised
 * one; ref is scratch of n_out bf16. Returns 1 when check and the two outputs' bits differ. */
static int time_tma(int kind, const bufs *b, void *ref, int B, int T, int H, int d, size_t n_out,
                    int warmup, int iters, int check, const char *size) {
    double ms[2];
    time_switch(kind, b, B, T, H, d, 0, warmup, iters, 1, cuda_flash_test_tma, ms, ref, b->out,
                n_out * cuda_operand_bytes());
    cuda_flash_test_tma(-1);
    const double e = rel_diff(ref, b->out, n_out, 1);
    printf("TMA %s %s %d %.3f %.3f %.2f %.1f %.3g\n", kind_name[kind], size, T, ms[0], ms[1],
           ms[0] / ms[1], flops(kind, B, T, H, d, 0) / ms[1] * 1e-9, e);
    if (check && e != 0.0) {
        fprintf(stderr, "bench_attn: %s %s T=%d: the warp-specialised forward's out differs "
                "from the wgmma forward's (%.3g of the largest)\n", kind_name[kind], size, T, e);
        return 1;
    }
    return 0;
}

/* The TMABWD line (header): fwd+bwd on the mma.sync kernels (DIFF V1's paired ones) with their
 * dk/dv, then with the warp-specialised one; dq_ref is scratch of n floats (dq, dk: n; dv: n
 * bf16 in b->ref). Returns 1 when check and dq, dk or dv differ at all. */
static int time_tma_bwd(int kind, const bufs *b, float *dq_ref, int B, int T, int H, int d,
                        size_t n, int warmup, int iters, int check, const char *size) {
    double ms[2], e[3];
    time_switch(kind, b, B, T, H, d, 1, warmup, iters, 0, cuda_flash_test_tma_bwd, ms,
                dq_ref, b->dk, n * sizeof(float));
    e[1] = rel_diff(dq_ref, b->dk, n, 0);
    cuda_flash_test_sm90(0);
    cuda_flash_test_tma_bwd(0);
    run(kind, b, B, T, H, d, 1, 0);
    cuda_copy(dq_ref, b->dq, n * sizeof(float));
    cuda_copy(b->ref, b->dv, n * cuda_operand_bytes());
    cuda_flash_test_tma_bwd(1);
    run(kind, b, B, T, H, d, 1, 0);
    cuda_synchronize();
    e[0] = rel_diff(dq_ref, b->dq, n, 0);
    e[2] = rel_diff(b->ref, b->dv, n, 1);
    cuda_flash_test_tma_bwd(-1);
    cuda_flash_test_sm90(-1);
    printf("TMABWD %s %s %d %.3f %.3f %.2f %.1f %.3g %.3g %.3g\n", kind_name[kind], size, T,
           ms[0], ms[1], ms[0] / ms[1], flops(kind, B, T, H, d, 1) / ms[1] * 1e-9, e[0], e[1],
           e[2]);
    if (check && (e[0] != 0.0 || e[1] != 0.0 || e[2] != 0.0)) {
        fprintf(stderr, "bench_attn: %s %s T=%d: the warp-specialised dk/dv's backward differs "
                "from the mma.sync one's (dq %.3g, dk %.3g, dv %.3g of the largest)\n",
                kind_name[kind], size, T, e[0], e[1], e[2]);
        return 1;
    }
    return 0;
}

/* max |fused - tiled| of the forward output; -1 when a value is not finite */
static double check_vs_tiled(int kind, const bufs *b, int B, int T, int H, int d, size_t n_out) {
    run(kind, b, B, T, H, d, 0, 0);
    run(kind, b, B, T, H, d, 0, 1);
    uint16_t *x = malloc(n_out * sizeof(uint16_t)), *y = malloc(n_out * sizeof(uint16_t));
    cuda_copy_to_host(x, b->out, n_out * sizeof(uint16_t));
    cuda_copy_to_host(y, b->ref, n_out * sizeof(uint16_t));
    double worst = 0.0;
    for (size_t i = 0; i < n_out; i++) {
        const double e = (double)bf16_widen(x[i]) - (double)bf16_widen(y[i]);
        if (!(e == e) || (x[i] & 0x7f80u) == 0x7f80u) { /* NaN, or an inf in out */
            worst = -1.0;
            break;
        }
        worst = e > worst ? e : (-e > worst ? -e : worst);
    }
    free(x);
    free(y);
    return worst;
}

/* The main lines (header): CHECK and RESULT of kind on the kernels training runs, then KERNELS,
 * DQ, ROWS or SPLIT and PAIRED where they apply; n is the element count of q, out, dq. Returns
 * 1 when a check failed. */
static int time_main(int kind, const bufs *b, float *dq_ref, int B, int T, int H, int d,
                     size_t n, int warmup, int iters, int check, const char *size) {
    int status = 0;
    if (check) { /* out is N x 2Hd for every kind */
        const double e = check_vs_tiled(kind, b, B, T, H, d, n);
        printf("CHECK %s %s T=%d: max |fused - tiled| of out = %.3g\n", kind_name[kind], size, T,
               e);
        if (e < 0.0 || e > 0.1) {
            fprintf(stderr, "bench_attn: %s %s T=%d: fused output off the tiled kernels' (%.3g)\n",
                    kind_name[kind], size, T, e);
            status = 1;
        }
    }
    const double f = time_ms(kind, b, B, T, H, d, 0, warmup, iters);
    const double fb = time_ms(kind, b, B, T, H, d, 1, warmup, iters);
    printf("RESULT %s %s %d %d %.3f %.3f %.1f %.1f\n", kind_name[kind], size, T, B, f, fb,
           flops(kind, B, T, H, d, 0) / f * 1e-9, flops(kind, B, T, H, d, 1) / fb * 1e-9);
    if (cuda_flash_sm90_capable()) {
        double ms[2][2]; /* [mma.sync, wgmma][fwd, fwd+bwd] */
        for (int w = 0; w < 2; w++) {
            cuda_flash_test_sm90(w);
            for (int bwd = 0; bwd < 2; bwd++)
                ms[w][bwd] = time_ms(kind, b, B, T, H, d, bwd, warmup, iters);
        }
        cuda_flash_test_sm90(-1);
        printf("KERNELS %s %s %d %.3f %.3f %.3f %.3f %.2f %.2f\n", kind_name[kind], size, T,
               ms[0][0], ms[0][1], ms[1][0], ms[1][1], ms[0][0] / ms[1][0], ms[0][1] / ms[1][1]);
    }
    status |= time_dq_modes(kind, b, dq_ref, B, T, H, d, n, warmup, iters, check, size);
    if (kind != KIND_DIFF)
        status |= time_fwd_switch("ROWS", set_fwd_rows32, kind, b, b->ref, B, T, H, d, n, warmup,
                                  iters, check, size);
    if (kind == KIND_DIFF) {
        status |= time_fwd_switch("SPLIT", cuda_flash_test_diff_fwd_split, kind, b, b->ref, B, T,
                                  H, d, n, warmup, iters, check, size);
        status |= time_diff_pairing(b, dq_ref, B, T, H, d, n, n, warmup, iters, check, size);
    }
    return status;
}

/* The line groups of --lines (LINES_*): a comma-separated subset of main, tma, tmabwd; 0 when
 * a name is none of them. */
enum { LINES_MAIN = 1, LINES_TMA = 2, LINES_TMABWD = 4 };
static int parse_lines(const char *list) {
    static const char *names[] = {"main", "tma", "tmabwd"};
    int mask = 0;
    while (*list) {
        const size_t n = strcspn(list, ",");
        int bit = 0;
        for (int i = 0; i < 3; i++)
            if (strlen(names[i]) == n && strncmp(list, names[i], n) == 0) bit = 1 << i;
        if (!bit) return 0;
        mask |= bit;
        list += n + (list[n] == ',');
    }
    return mask;
}

int main(int argc, char **argv) {
    int iters = 10, warmup = 3, check = 1, lines = LINES_MAIN | LINES_TMA | LINES_TMABWD;
    for (int i = 1; i < argc; i++) {
        if (sscanf(argv[i], "--iters=%d", &iters) == 1 ||
            sscanf(argv[i], "--warmup=%d", &warmup) == 1 ||
            sscanf(argv[i], "--check=%d", &check) == 1)
            continue;
        if (strncmp(argv[i], "--lines=", 8) == 0 && (lines = parse_lines(argv[i] + 8)) != 0)
            continue;
        fprintf(stderr, "usage: bench_attn [--iters=N] [--warmup=N] [--check=0|1] "
                "[--lines=main,tma,tmabwd]\n");
        return 2;
    }
    if (iters < 1 || iters > 64 || warmup < 0) {
        fprintf(stderr, "bench_attn: --iters must be in 1..64, --warmup >= 0\n");
        return 2;
    }
    if (cuda_probe_device_count() == 0 || cuda_probe_roundtrip(0) != 0) {
        printf("bench_attn: no usable CUDA device: skipped\n");
        return 77;
    }
    if (cuda_backend_init(0, 1) != 0) return 1; /* bf16 mode: the fused kernels' */
    char name[256];
    if (cuda_probe_describe(0, name, sizeof name) == 0) printf("bench_attn: %s\n", name);

    static const shape shapes[] = {{"830m", 8, 96}, {"3b", 12, 128}};
    static const int seqs[] = {2048, 4096};
    const int tokens = 16384;
    int status = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int H = shapes[si].H, d = shapes[si].d;
        /* per token: q 2H d, k 2H d, v 2H d (every kind's largest), out/o1/o2 2H d */
        const size_t w = (size_t)2 * H * d, N = (size_t)tokens;
        bufs b;
        b.q = dev_random_bf16(N * w, 1, -1.0f, 1.0f);
        b.k = dev_random_bf16(N * w, 2, -1.0f, 1.0f);
        b.v = dev_random_bf16(N * w, 3, -1.0f, 1.0f);
        b.dout = dev_random(N * w, 4, -1.0f, 1.0f);
        b.gamma = dev_random((size_t)2 * d, 5, 0.5f, 1.5f);
        b.lambda = dev_random(1, 6, 0.2f, 0.3f);
        b.out = cuda_alloc(N * w * cuda_operand_bytes());
        b.o1 = cuda_alloc(N * w * sizeof(float));
        b.o2 = cuda_alloc(N * w * sizeof(float));
        b.ref = cuda_alloc(N * w * cuda_operand_bytes());
        b.lse = cuda_alloc(N * 2 * H * sizeof(float));
        b.ref_lse = cuda_alloc(N * 2 * H * sizeof(float));
        b.rstd = cuda_alloc(N * H * sizeof(float));
        b.dq = cuda_alloc(N * w * sizeof(float));
        float *dq_ref = cuda_alloc(N * w * sizeof(float)); /* the DQ line's */
        b.dk = cuda_alloc(N * w * sizeof(float));
        b.dv = cuda_alloc(N * w * cuda_operand_bytes());
        b.dgamma = cuda_alloc((size_t)2 * d * sizeof(float));
        b.dlambda = cuda_alloc(sizeof(float));
        if (!b.out || !b.o1 || !b.o2 || !b.ref || !b.lse || !b.ref_lse || !b.rstd || !b.dq ||
            !b.dk || !b.dv || !b.dgamma || !b.dlambda || !dq_ref) {
            fprintf(stderr, "bench_attn: out of device memory\n");
            return 1;
        }
        for (size_t ti = 0; ti < sizeof seqs / sizeof seqs[0]; ti++) {
            const int T = seqs[ti], B = tokens / T;
            for (int kind = 0; kind < 3; kind++) {
                if (lines & LINES_MAIN)
                    status |= time_main(kind, &b, dq_ref, B, T, H, d, N * w, warmup, iters, check,
                                        shapes[si].size);
                if ((lines & LINES_TMA) && cuda_flash_sm90_capable())
                    status |= time_tma(kind, &b, b.ref, B, T, H, d, N * w, warmup, iters, check,
                                       shapes[si].size);
                if ((lines & LINES_TMABWD) && cuda_flash_sm90_capable())
                    status |= time_tma_bwd(kind, &b, dq_ref, B, T, H, d, N * w, warmup, iters,
                                           check, shapes[si].size);
                fflush(stdout);
            }
        }
        void *all[] = {b.q, b.k, b.v, b.dout, b.gamma, b.lambda, b.out, b.o1, b.o2, b.ref,
                       b.lse, b.ref_lse, b.rstd, b.dq, b.dk, b.dv, b.dgamma, b.dlambda, dq_ref};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) cuda_free(all[i]);
    }
    cuda_backend_shutdown();
    return status;
}
