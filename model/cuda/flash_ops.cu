/* The fused attention ops of flash.h: head mapping, workspace, and the kernels of
 * flash_forward.cu, flash_prep.cu and flash_backward.cu in order. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "model/cuda/cuda_ops.h"
#include "model/cuda/flash.h"
#include "model/cuda/flash_core.cuh"

extern "C" int cuda_flash_usable(int d, int dv, int diff, const void *const *ptrs, int n) {
    if (!(d == 64 || d == 96 || d == 128) || dv != (diff ? 2 * d : d)) return 0;
    for (int i = 0; i < n; i++)
        if ((uintptr_t)ptrs[i] % 16 != 0) return 0;
    return 1;
}

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

extern "C" void cuda_flash_attention_forward(float *out, float *lse, const float *q,
                                             const float *k, const float *v, int B, int T, int Hq,
                                             int Hkv, int d, int dv) {
    const char *names[] = {"out", "q", "k", "v"};
    const void *ptrs[] = {out, q, k, v};
    flash_aligned(names, ptrs, 4);
    const flash_diff_epi none = {NULL, NULL, NULL, NULL, 0.0f, 0.0f};
    flash_core_forward(out, NULL, lse, q, k, v, attn_map_standard(B, T, Hq, Hkv, d, dv), none);
}

extern "C" void cuda_flash_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                                              const float *q, const float *k, const float *v,
                                              const float *out, const float *lse, int B, int T,
                                              int Hq, int Hkv, int d, int d_v) {
    const attn_map m = attn_map_standard(B, T, Hq, Hkv, d, d_v);
    flash_check(m);
    const char *names[] = {"dq", "dk", "dv", "dout", "q", "k", "v"};
    const void *ptrs[] = {dq, dk, dv, dout, q, k, v};
    flash_aligned(names, ptrs, 7);
    float *delta = (float *)cuda_workspace(sizeof(float) * ((size_t)B * Hq * T + 1)); /* (B,Hq,T) */
    flash_delta(delta, dout, out, m);
    flash_core_backward(dq, dk, dv, dout, delta, q, k, v, lse, NULL, m);
}

extern "C" void cuda_flash_diffattn_forward(float *out, float *o1, float *o2, float *lse,
                                            float *rstd, const float *q, const float *k,
                                            const float *v, const float *lambda,
                                            const float *gamma, float lambda_init, float eps,
                                            int B, int T, int H, int Hkv, int d) {
    const char *names[] = {"out", "o1", "o2", "q", "k", "v"};
    const void *ptrs[] = {out, o1, o2, q, k, v};
    flash_aligned(names, ptrs, 6);
    const flash_diff_epi epi = {out, rstd, lambda, gamma, 1.0f - lambda_init, eps};
    flash_core_forward(o1, o2, lse, q, k, v, attn_map_diff(B, T, H, Hkv, d),
                       epi);
}

extern "C" void cuda_flash_diffattn_backward(float *dq, float *dk, float *dv, float *dgamma,
                                             float *dlambda, const float *dout, const float *q,
                                             const float *k, const float *v, const float *o1,
                                             const float *o2, const float *lse,
                                             const float *rstd, const float *lambda,
                                             const float *gamma, float lambda_init, int B, int T,
                                             int H, int Hkv, int d) {
    const attn_map m = attn_map_diff(B, T, H, Hkv, d);
    flash_check(m);
    const char *names[] = {"dq", "dk", "dv", "q", "k", "v"};
    const void *ptrs[] = {dq, dk, dv, q, k, v};
    flash_aligned(names, ptrs, 6);
    const size_t n_rows = (size_t)B * T * H;
    if (n_rows == 0) return;
    /* workspace: part (chunks, 2d + 1) doubles | G (B, T, H*2d) | delta (B, 2H, T) */
    const size_t part_bytes =
        attn_ws_align(flash_diff_prep_chunks(n_rows) * (size_t)(2 * d + 1) * sizeof(double));
    const size_t G_bytes = attn_ws_align(n_rows * (size_t)(2 * d) * sizeof(float));
    const size_t delta_bytes = (size_t)B * 2 * H * T * sizeof(float);
    char *ws = (char *)cuda_workspace(part_bytes + G_bytes + delta_bytes);
    double *part = (double *)ws;
    float *G = (float *)(ws + part_bytes);
    float *delta = (float *)(ws + part_bytes + G_bytes);
    flash_diff_prep(G, delta, part, dgamma, dlambda, dout, o1, o2, rstd, lambda, gamma,
                    lambda_init, m);
    flash_core_backward(dq, dk, dv, G, delta, q, k, v, lse, lambda, m);
}
