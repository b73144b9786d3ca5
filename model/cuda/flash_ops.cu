/* The fused attention ops of flash.h: head mapping, workspace, and the kernels of
 * flash_forward.cu, flash_prep.cu and flash_backward.cu in order. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/backend.h"
#include "model/cuda/cuda_ops.h"
#include "model/cuda/flash.h"
#include "model/cuda/flash_backward.cuh"
#include "model/cuda/flash_core.cuh"
#include "model/cuda/flash_sm90.cuh"
#include "model/cuda/flash_test.h"
#include "model/cuda/rope.cuh"

/* Aborts unless the n tensors (names[i] at ptrs[i]) are 16-byte aligned: the kernels move 16
 * bytes at a time (a misaligned one would fault on the GPU, far from its cause). */
static void flash_aligned(const char *const *names, const void *const *ptrs, int n) {
    for (int i = 0; i < n; i++)
        if ((uintptr_t)ptrs[i] % 16 != 0) {
            fprintf(stderr, "difftrain: error: CUDA fused attention: tensor %s at %p is not "
                    "16-byte aligned\n", names[i], ptrs[i]);
            fflush(stderr);
            abort();
        }
}

/* The ops' out is bf16: the bf16 backend's operand format (flash.h). */
static void flash_require_bf16(void) {
    if (cuda_operand_bf16()) return;
    fprintf(stderr, "difftrain: error: CUDA fused attention called with fp32 operands (the "
            "backend is not in bf16 mode)\n");
    fflush(stderr);
    abort();
}

static int g_f32_staging; /* flash_test.h */

extern "C" void cuda_flash_test_f32_staging(int on) { g_f32_staging = on != 0; }

static int g_sm90_mode = -1; /* flash_test.h: -1 the environment, 0 off, 1 on */

extern "C" void cuda_flash_test_sm90(int mode) { g_sm90_mode = mode < 0 ? -1 : mode != 0; }

/* The build has sm_90a code and the device is compute capability 9.0 (asked once). */
static bool flash_sm90_capable(void) {
    static int capable = -1;
    if (capable < 0) {
#if defined(DT_CUDA_SM90A) || defined(DT_CUDA_EMULATOR)
        int dev = 0;
        cudaDeviceProp p;
        CUDA_CHECK(cudaGetDevice(&dev));
        CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
        capable = p.major == 9 && p.minor == 0;
#else
        capable = 0;
#endif
    }
    return capable != 0;
}

/* Whether an opt-in set of kernels is asked for: by the test switch's mode where set (0 or 1),
 * else by the environment variable var being "1" (read once into *env, -1 until then). */
static bool flash_asked(int mode, const char *var, int *env) {
    if (mode >= 0) return mode != 0;
    if (*env < 0) {
        const char *e = getenv(var);
        *env = e && strcmp(e, "1") == 0;
    }
    return *env != 0;
}

/* Where capable, the wgmma kernels run only when asked for: DIFFTRAIN_FLASH_SM90=1. On an H100
 * they measured slower than the mma.sync kernels (docs/gpu-performance.md), so those are the
 * default. Their largest block (dk/dv at d = 128, DIFF: 230,912 B) needs the H100's 227 KiB of
 * shared memory, which a lower test cap (flash_test.h) takes away. */
bool flash_sm90_usable(void) {
    static int env = -1;
    return flash_sm90_capable() && flash_asked(g_sm90_mode, "DIFFTRAIN_FLASH_SM90", &env) &&
           flash_smem_limit() >= 227 * 1024;
}

extern "C" int cuda_flash_sm90_capable(void) { return flash_sm90_capable(); }
extern "C" int cuda_flash_sm90(void) { return flash_sm90_usable(); }

static int g_tma_mode = -1; /* flash_test.h: -1 the environment, 0 off, 1 on */

extern "C" void cuda_flash_test_tma(int mode) { g_tma_mode = mode < 0 ? -1 : mode != 0; }

/* DIFFTRAIN_FLASH_TMA=1 asks for the warp-specialised forward (never run on a GPU yet:
 * docs/gpu-performance.md), so it is off by default. */
bool flash_tma_usable(int d, bool diff) {
    static int env = -1;
    return flash_asked(g_tma_mode, "DIFFTRAIN_FLASH_TMA", &env) && flash_sm90_capable() &&
           flash_forward_tma_smem(d, diff) <= flash_smem_limit();
}

extern "C" int cuda_flash_tma(int d, int diff) {
    return !g_f32_staging && flash_tma_usable(d, diff != 0);
}

static int g_tma_bwd_mode = -1; /* flash_test.h: -1 the environment, 0 off, 1 on */

extern "C" void cuda_flash_test_tma_bwd(int mode) {
    g_tma_bwd_mode = mode < 0 ? -1 : mode != 0;
}

/* DIFFTRAIN_FLASH_TMA_BWD=1 asks for the warp-specialised dk/dv (never run on a GPU yet:
 * docs/gpu-performance.md), so it is off by default. */
bool flash_tma_bwd_usable(int d, bool diff) {
    static int env = -1;
    const size_t smem = diff ? flash_dkdv_diff_tma_smem(d) : flash_dkdv_tma_smem(d);
    return flash_asked(g_tma_bwd_mode, "DIFFTRAIN_FLASH_TMA_BWD", &env) &&
           flash_sm90_capable() && smem <= flash_smem_limit();
}

extern "C" int cuda_flash_tma_bwd(int d, int diff) {
    return !g_f32_staging && !flash_sm90_usable() && (!diff || flash_diff_paired()) &&
           flash_tma_bwd_usable(d, diff != 0);
}

static int flash_dq_mode(bool f32_path);

/* The backward's check takes the recomputing dq's plan where dq may do either (auto): its
 * kernels need at least the shared memory of the one that reads stored tiles. */
extern "C" int cuda_flash_usable(int d, int dv, int diff, int backward, const void *const *ptrs,
                                 int n) {
    if (!(d == 64 || d == 96 || d == 128) || dv != (diff ? 2 * d : d)) return 0;
    for (int i = 0; i < n; i++)
        if ((uintptr_t)ptrs[i] % 16 != 0) return 0;
    if (!g_f32_staging && flash_sm90_usable()) return 1; /* they fit an H100: every d */
    if (!g_f32_staging && !backward && flash_tma_usable(d, diff != 0)) return 1;
    return backward ? flash_backward_fits(d, diff != 0,
                                          flash_dq_mode(g_f32_staging != 0) == FLASH_DQ_STORED)
                    : flash_forward_fits(d, diff != 0);
}

/* A kernel choice from the environment variable var: the index of its value among the n
 * values, 0 (the default) also when unset or empty; anything else is an error that names the
 * variable and what it takes. Read at each op (a getenv: nothing beside the kernels). */
static int flash_env_pick(const char *var, const char *const *values, int n) {
    const char *e = getenv(var);
    if (!e || !*e) return 0;
    for (int i = 0; i < n; i++)
        if (strcmp(e, values[i]) == 0) return i;
    fprintf(stderr, "difftrain: error: %s is '%s': expected", var, e);
    for (int i = 0; i < n; i++)
        fprintf(stderr, "%s '%s'", i == 0 ? "" : i == n - 1 ? " or" : ",", values[i]);
    fprintf(stderr, "\n");
    fflush(stderr);
    abort();
}

static int g_dq_mode = -1;        /* flash_test.h: -1 the environment, else a FLASH_DQ_* mode */
static size_t g_dq_auto_bytes = 0; /* flash_test.h: the auto mode's cap, 0 the default */

extern "C" void cuda_flash_test_dq_mode(int mode) {
    g_dq_mode = mode == FLASH_DQ_RECOMPUTE || mode == FLASH_DQ_STORED || mode == FLASH_DQ_AUTO
                    ? mode : -1;
}
extern "C" void cuda_flash_test_dq_auto_bytes(size_t bytes) { g_dq_auto_bytes = bytes; }

/* DIFFTRAIN_FLASH_DQ: "auto" (the default), "stored" (the mma.sync backward's dq reads the dS
 * tiles that dk/dv stores: flash_backward.cu) or "recompute" (dq recomputes them). */
static int flash_dq_env(void) {
    static const char *const values[] = {"auto", "stored", "recompute"};
    static const int modes[] = {FLASH_DQ_AUTO, FLASH_DQ_STORED, FLASH_DQ_RECOMPUTE};
    return modes[flash_env_pick("DIFFTRAIN_FLASH_DQ", values, 3)];
}

/* How the backward's dq gets dS: as asked (the test switch, else the environment) on the
 * mma.sync kernels (the fp32-staging path's, or the bf16 path's where the wgmma ones do not
 * run); the wgmma ones recompute. */
static int flash_dq_mode(bool f32_path) {
    if (!f32_path && flash_sm90_usable()) return FLASH_DQ_RECOMPUTE;
    return g_dq_mode < 0 ? flash_dq_env() : g_dq_mode;
}

/* Whether the backward of m reads stored dS tiles: always (stored), never (recompute), or
 * (auto) where they take at most FLASH_DQ_AUTO_BYTES (flash_test.h), so that their workspace,
 * quadratic in T, stays a bounded cost: at 830M 0.55 GB for 8 x 2048 tokens and 1.09 GB for
 * 4 x 4096; at 3B (4096 x 1, one GPU) 0.41 GB; 3B at 16,384 tokens (6.5 GB) recomputes. */
static bool flash_dq_stored(const attn_map &m, bool f32_path) {
    const int mode = flash_dq_mode(f32_path);
    const size_t cap = g_dq_auto_bytes ? g_dq_auto_bytes : FLASH_DQ_AUTO_BYTES;
    return mode == FLASH_DQ_STORED || (mode == FLASH_DQ_AUTO && flash_ds_tiles_size(m) <= cap);
}

extern "C" int cuda_flash_dq_mode(void) { return flash_dq_mode(g_f32_staging != 0); }

extern "C" int cuda_flash_dq_stored_at(int B, int T, int nq) {
    attn_map m = attn_map_standard(B, T, nq, nq, 64, 64);
    return flash_dq_stored(m, g_f32_staging != 0);
}

static int g_fwd_rows = -1; /* flash_test.h: -1 the environment, else 16 or 32 */

extern "C" void cuda_flash_test_fwd_rows(int rows) {
    g_fwd_rows = rows == 16 || rows == 32 ? rows : -1;
}

/* DIFFTRAIN_FLASH_FWD_ROWS: "32" (the default: the standard forward on flash_forward_rows32.cu's
 * kernel) or "16" (flash_forward.cu's). */
static int flash_fwd_rows_env(void) {
    static const char *const values[] = {"32", "16"};
    return flash_env_pick("DIFFTRAIN_FLASH_FWD_ROWS", values, 2) ? 16 : 32;
}

bool flash_fwd_rows32(void) {
    return (g_fwd_rows < 0 ? flash_fwd_rows_env() : g_fwd_rows) == 32;
}

/* The rows a warp the standard forward would take now: the mma.sync kernels' choice, 16 where
 * the wgmma ones run (their warpgroups take 64) */
extern "C" int cuda_flash_fwd_rows(void) {
    return !g_f32_staging && flash_sm90_usable() ? 16 : flash_fwd_rows32() ? 32 : 16;
}

static int g_diff_fwd = -1; /* flash_test.h: -1 the environment, 0 per branch, 1 split */

extern "C" void cuda_flash_test_diff_fwd_split(int mode) {
    g_diff_fwd = mode < 0 ? -1 : mode != 0;
}

/* DIFFTRAIN_FLASH_DIFF_FWD: "split" (the default: DIFF V1's forward on flash_forward_diff.cu's
 * kernel, V's columns split between the branch warps) or "branch" (flash_forward.cu's, each
 * branch's warps over all of V: the kernel it replaced, the same bits). */
bool flash_diff_fwd_split(void) {
    static const char *const values[] = {"split", "branch"};
    return g_diff_fwd < 0 ? !flash_env_pick("DIFFTRAIN_FLASH_DIFF_FWD", values, 2)
                          : g_diff_fwd != 0;
}

/* 1 when DIFF V1's forward would run the split kernel now: the mma.sync kernels' choice, 0 where
 * the wgmma ones run (their own DIFF forward) */
extern "C" int cuda_flash_diff_fwd_split(void) {
    return !(!g_f32_staging && flash_sm90_usable()) && flash_diff_fwd_split();
}

static int g_diff_paired = 1; /* flash_test.h */

extern "C" void cuda_flash_test_diff_paired(int on) { g_diff_paired = on != 0; }

bool flash_diff_paired(void) { return g_diff_paired != 0; }

/* The workspace bytes of the stored dS tiles for m (0 where dq recomputes them) */
static size_t flash_ds_bytes(const attn_map &m, bool f32_path) {
    return flash_dq_stored(m, f32_path) ? attn_ws_align(flash_ds_tiles_size(m)) : 0;
}

/* The backward's dq and dk (flash_qk_grad): the fp32 dq_, dk_ (rope NULL), or rope's operands
 * with RoPE's backward fused into the kernels' stores (its table for positions 0..T-1) */
static void flash_qk_grads(flash_qk_grad *dq, flash_qk_grad *dk, float *dq_, float *dk_,
                           const dt_rope_grads *rope, const attn_map &m) {
    if (!rope) {
        *dq = {dq_, NULL, NULL};
        *dk = {dk_, NULL, NULL};
        return;
    }
    const float2 *cs = m.T > 0 ? cuda_rope_table(rope->theta, m.d, m.T) : NULL;
    *dq = {NULL, (operand_bf16 *)rope->dq, cs};
    *dk = {NULL, (operand_bf16 *)rope->dk, cs};
}
/* where x is stored */
static const void *flash_qk_dst(const flash_qk_grad &x) {
    return x.rot ? (const void *)x.rot : (const void *)x.f32;
}

/* The bf16 forward and backward on the kernels flash_sm90_usable selects, the forward on the
 * warp-specialised one where flash_tma_usable says. */
static void flash_forward_bf16(operand_bf16 *out, float *o1, float *o2, float *lse,
                               const flash_bf16 *const qkv[3], const attn_map &m,
                               const flash_diff_epi &epi) {
    if (flash_tma_usable(m.d, m.diff))
        flash_forward_tma(out, o1, o2, lse, qkv[0], qkv[1], qkv[2], m, epi);
    else if (flash_sm90_usable())
        flash_core_forward_sm90(out, o1, o2, lse, qkv[0], qkv[1], qkv[2], m, epi);
    else
        flash_core_forward<flash_bf16>(out, o1, o2, lse, qkv[0], qkv[1], qkv[2], m, epi);
}
/* ds_tiles: the stored dS tiles' workspace where flash_dq_stored(false), else NULL */
static void flash_backward_bf16(flash_qk_grad dq, flash_qk_grad dk, operand_bf16 *dv,
                                flash_bf16 *ds_tiles, const flash_bf16 *G, const float *delta,
                                const flash_bf16 *const qkv[3], const float *lse,
                                const float *lambda, const attn_map &m) {
    if (flash_sm90_usable())
        flash_core_backward_sm90(dq, dk, dv, G, delta, qkv[0], qkv[1], qkv[2], lse, lambda, m);
    else
        flash_core_backward<flash_bf16>(dq, dk, dv, ds_tiles, G, delta, qkv[0], qkv[1], qkv[2],
                                        lse, lambda, m);
}

/* The test path's (flash_test.h) fp32 copies of the bf16 q, k, v (src, len elements each),
 * widened, carved in order from ws, each aligned (attn_ws_align); returns the bytes they take
 * (ws NULL: only that). */
static size_t flash_widened(char *ws, float **dst, const flash_bf16 *const *src,
                            const size_t *len) {
    size_t at = 0;
    for (int i = 0; i < 3; i++) {
        if (ws) dst[i] = (float *)(ws + at);
        at += attn_ws_align(len[i] * sizeof(float));
    }
    if (ws) flash_to_f32(dst, src, len, 3);
    return at;
}

extern "C" void cuda_flash_attention_forward(dt_operand *out_, float *lse, const dt_operand *q_,
                                             const dt_operand *k_, const dt_operand *v_, int B,
                                             int T, int Hq, int Hkv, int d, int dv) {
    flash_require_bf16();
    operand_bf16 *out = (operand_bf16 *)out_;
    const flash_bf16 *qkv[] = {(const flash_bf16 *)q_, (const flash_bf16 *)k_,
                               (const flash_bf16 *)v_};
    const char *names[] = {"out", "q", "k", "v"};
    const void *ptrs[] = {out, qkv[0], qkv[1], qkv[2]};
    flash_aligned(names, ptrs, 4);
    const attn_map m = attn_map_standard(B, T, Hq, Hkv, d, dv);
    flash_check(m);
    const flash_diff_epi none = {NULL, NULL, NULL, 0.0f, 0.0f};
    if (g_f32_staging) { /* workspace: fp32 q | k | v */
        const size_t len[] = {(size_t)B * T * Hq * d, (size_t)B * T * Hkv * d,
                              (size_t)B * T * Hkv * dv};
        float *f[3];
        flash_widened((char *)cuda_workspace(flash_widened(NULL, f, qkv, len)), f, qkv, len);
        flash_core_forward<float>(out, NULL, NULL, lse, f[0], f[1], f[2], m, none);
        return;
    }
    flash_forward_bf16(out, NULL, NULL, lse, qkv, m, none);
}

extern "C" void cuda_flash_attention_backward(float *dq_, float *dk_, dt_operand *dv_,
                                              const float *dout, const dt_operand *q_,
                                              const dt_operand *k_, const dt_operand *v_,
                                              const dt_operand *out, const float *lse, int B,
                                              int T, int Hq, int Hkv, int d, int d_v,
                                              const dt_rope_grads *rope) {
    flash_require_bf16();
    operand_bf16 *dv = (operand_bf16 *)dv_;
    const attn_map m = attn_map_standard(B, T, Hq, Hkv, d, d_v);
    flash_check(m);
    const flash_bf16 *qkv[] = {(const flash_bf16 *)q_, (const flash_bf16 *)k_,
                               (const flash_bf16 *)v_};
    flash_qk_grad dq, dk;
    flash_qk_grads(&dq, &dk, dq_, dk_, rope, m);
    const char *names[] = {"dq", "dk", "dv", "dout", "q", "k", "v"};
    const void *ptrs[] = {flash_qk_dst(dq), flash_qk_dst(dk), dv, dout, qkv[0], qkv[1], qkv[2]};
    flash_aligned(names, ptrs, 7);
    /* workspace: delta (B, Hq, T) | bf16 dout (the test path: fp32 q | k | v instead) | the
     * stored dS tiles (where dq reads them) */
    const size_t delta_bytes = attn_ws_align(sizeof(float) * ((size_t)B * Hq * T + 1));
    const size_t len[] = {(size_t)B * T * Hq * d, (size_t)B * T * Hkv * d,
                          (size_t)B * T * Hkv * d_v};
    float *f[3];
    const size_t rest =
        g_f32_staging ? flash_widened(NULL, f, qkv, len)
                      : attn_ws_align((size_t)B * T * Hq * d_v * sizeof(flash_bf16));
    const size_t ds_bytes = flash_ds_bytes(m, g_f32_staging != 0);
    char *ws = (char *)cuda_workspace(delta_bytes + rest + ds_bytes);
    float *delta = (float *)ws;
    flash_bf16 *g16 = g_f32_staging ? NULL : (flash_bf16 *)(ws + delta_bytes);
    flash_bf16 *ds_tiles = ds_bytes ? (flash_bf16 *)(ws + delta_bytes + rest) : NULL;
    /* bf16(G_i) . o_i, as the kernels read G, and that bf16 G (the bf16 path's) in the same pass
     * over dout; o (out) is bf16 */
    attn_delta<operand_bf16>(delta, g16, dout, (const operand_bf16 *)out, NULL, NULL, m, true);
    if (g_f32_staging) {
        flash_widened(ws + delta_bytes, f, qkv, len);
        flash_core_backward<float>(dq, dk, dv, ds_tiles, dout, delta, f[0], f[1], f[2], lse,
                                   NULL, m);
        return;
    }
    flash_backward_bf16(dq, dk, dv, ds_tiles, g16, delta, qkv, lse, NULL, m);
}

extern "C" void cuda_flash_diffattn_forward(dt_operand *out_, float *o1, float *o2, float *lse,
                                            float *rstd, const dt_operand *q_,
                                            const dt_operand *k_, const dt_operand *v_,
                                            const float *lambda, const float *gamma,
                                            float lambda_init, float eps, int B, int T, int H,
                                            int Hkv, int d) {
    flash_require_bf16();
    operand_bf16 *out = (operand_bf16 *)out_;
    const flash_bf16 *qkv[] = {(const flash_bf16 *)q_, (const flash_bf16 *)k_,
                               (const flash_bf16 *)v_};
    const char *names[] = {"out", "o1", "o2", "q", "k", "v"};
    const void *ptrs[] = {out, o1, o2, qkv[0], qkv[1], qkv[2]};
    flash_aligned(names, ptrs, 6);
    const attn_map m = attn_map_diff(B, T, H, Hkv, d);
    flash_check(m);
    const flash_diff_epi epi = {rstd, lambda, gamma, 1.0f - lambda_init, eps};
    if (g_f32_staging) { /* workspace: fp32 q | k | v */
        const size_t len[] = {(size_t)B * T * 2 * H * d, (size_t)B * T * 2 * Hkv * d,
                              (size_t)B * T * Hkv * 2 * d};
        float *f[3];
        flash_widened((char *)cuda_workspace(flash_widened(NULL, f, qkv, len)), f, qkv, len);
        flash_core_forward<float>(out, o1, o2, lse, f[0], f[1], f[2], m, epi);
        return;
    }
    flash_forward_bf16(out, o1, o2, lse, qkv, m, epi);
}

extern "C" void cuda_flash_diffattn_backward(float *dq_, float *dk_, dt_operand *dv_,
                                             float *dgamma, float *dlambda, const float *dout,
                                             const dt_operand *q_, const dt_operand *k_,
                                             const dt_operand *v_, const float *o1,
                                             const float *o2, const float *lse,
                                             const float *rstd, const float *lambda,
                                             const float *gamma, float lambda_init, int B, int T,
                                             int H, int Hkv, int d, const dt_rope_grads *rope) {
    flash_require_bf16();
    operand_bf16 *dv = (operand_bf16 *)dv_;
    const attn_map m = attn_map_diff(B, T, H, Hkv, d);
    flash_check(m);
    const flash_bf16 *qkv[] = {(const flash_bf16 *)q_, (const flash_bf16 *)k_,
                               (const flash_bf16 *)v_};
    flash_qk_grad dq, dk;
    flash_qk_grads(&dq, &dk, dq_, dk_, rope, m);
    const char *names[] = {"dq", "dk", "dv", "q", "k", "v"};
    const void *ptrs[] = {flash_qk_dst(dq), flash_qk_dst(dk), dv, qkv[0], qkv[1], qkv[2]};
    flash_aligned(names, ptrs, 6);
    const size_t n_rows = (size_t)B * T * H;
    if (n_rows == 0) return;
    /* workspace: part (chunks, 2d + 1) doubles | G (B, T, H*2d) in bf16 | delta (B, 2H, T) | the
     * stored dS tiles (where dq reads them); the test path: G as rounded floats, and fp32
     * q | k | v after the tiles */
    const bool f32 = g_f32_staging != 0;
    const size_t part_bytes =
        attn_ws_align(diff_chunks(n_rows) * (size_t)(2 * d + 1) * sizeof(double));
    const size_t G_bytes =
        attn_ws_align(n_rows * (size_t)(2 * d) * (f32 ? sizeof(float) : sizeof(flash_bf16)));
    const size_t delta_bytes = attn_ws_align((size_t)B * 2 * H * T * sizeof(float));
    const size_t len[] = {(size_t)B * T * 2 * H * d, (size_t)B * T * 2 * Hkv * d,
                          (size_t)B * T * Hkv * 2 * d};
    float *f[3];
    const size_t ds_bytes = flash_ds_bytes(m, f32), head = part_bytes + G_bytes + delta_bytes;
    char *ws = (char *)cuda_workspace(head + ds_bytes +
                                      (f32 ? flash_widened(NULL, f, qkv, len) : 0));
    double *part = (double *)ws;
    float *delta = (float *)(ws + part_bytes + G_bytes);
    flash_bf16 *ds_tiles = ds_bytes ? (flash_bf16 *)(ws + head) : NULL;
    if (f32) {
        float *G = (float *)(ws + part_bytes);
        flash_diff_prep(G, delta, part, dgamma, dlambda, dout, o1, o2, rstd, lambda, gamma,
                        lambda_init, m);
        flash_widened(ws + head + ds_bytes, f, qkv, len);
        flash_core_backward<float>(dq, dk, dv, ds_tiles, (const float *)G, delta, f[0], f[1],
                                   f[2], lse, lambda, m);
        return;
    }
    flash_bf16 *G = (flash_bf16 *)(ws + part_bytes);
    flash_diff_prep(G, delta, part, dgamma, dlambda, dout, o1, o2, rstd, lambda, gamma,
                    lambda_init, m);
    flash_backward_bf16(dq, dk, dv, ds_tiles, G, delta, qkv, lse, lambda, m);
}
