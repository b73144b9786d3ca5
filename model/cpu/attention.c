/* Causal softmax attention, flash-style (tile kernels and the masking rules in attn_tile.h).
 *
 * Forward: one task per (sequence b, q-head, query tile); the task owns its rows of out and lse,
 * accumulates straight into out (no scratch beyond one score tile) and walks the key tiles up to
 * the diagonal.
 *
 * Backward: two passes, so that every gradient element is written by exactly one task in a fixed
 * order (race-free and bit-identical for any thread count, without atomics or per-thread copies):
 *   pass 1, one task per (b, kv-head, key tile): dk, dv of those keys, summed over the q-heads of
 *           the group and over the query tiles at or below the diagonal;
 *   pass 2, one task per (b, q-head, query tile): dq of those rows.
 * Both recompute P = exp(s q k^T - lse) and dS = P (dP - delta); delta_i = dout_i . out_i is
 * recomputed per tile (O(T dv) per key tile, small next to the O(T d) tile products) instead of
 * being kept in a (B, Hq, T) buffer, since the backend interface gives ops no workspace. */
#include <math.h>

#include "model/cpu/attn_tile.h"
#include "model/cpu/cpu_ops.h"

void cpu_attention_forward(float *out, float *lse, const float *q, const float *k,
                           const float *v, int B, int T, int Hq, int Hkv, int d, int dv) {
    const int n_rep = Hq / Hkv;
    const int n_qt = (T + ATTN_BR - 1) / ATTN_BR;
    const float scale = 1.0f / sqrtf((float)d);
    const size_t qs = (size_t)Hq * d, ks = (size_t)Hkv * d, vs = (size_t)Hkv * dv;
    const size_t os = (size_t)Hq * dv;

#pragma omp parallel for collapse(3) schedule(dynamic)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < Hq; h++) {
            for (int qt = 0; qt < n_qt; qt++) {
                const int g = h / n_rep;
                const float *qh = q + (size_t)b * T * qs + (size_t)h * d;  /* (T, d) view */
                const float *kh = k + (size_t)b * T * ks + (size_t)g * d;  /* (T, d) view */
                const float *vh = v + (size_t)b * T * vs + (size_t)g * dv; /* (T, dv) view */
                float *oh = out + (size_t)b * T * os + (size_t)h * dv;     /* (T, dv) view */
                float *lseh = lse + ((size_t)b * Hq + h) * T;               /* (T) */
                float S[ATTN_BR * ATTN_BC], m[ATTN_BR], l[ATTN_BR];
                float kT[(size_t)d * ATTN_BC];
                const int i0 = qt * ATTN_BR, nr = attn_imin(ATTN_BR, T - i0);

                attn_online_init(oh, os, m, l, i0, nr, dv);
                for (int j0 = 0; j0 < i0 + nr; j0 += ATTN_BC) {
                    const int nc = attn_imin(ATTN_BC, T - j0);
                    attn_tile_transpose(kT, kh, ks, j0, nc, d);
                    attn_tile_scores(S, qh, qs, kT, i0, nr, j0, nc, d, scale);
                    attn_online_update(oh, os, m, l, S, vh, vs, i0, nr, j0, nc, dv);
                }
                attn_online_finish(oh, os, lseh, m, l, i0, nr, dv);
            }
        }
    }
}

void cpu_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                            const float *k, const float *v, const float *out, const float *lse,
                            int B, int T, int Hq, int Hkv, int d, int d_v) {
    const int n_rep = Hq / Hkv;
    const int n_qt = (T + ATTN_BR - 1) / ATTN_BR;
    const int n_kt = (T + ATTN_BC - 1) / ATTN_BC;
    const float scale = 1.0f / sqrtf((float)d);
    const size_t qs = (size_t)Hq * d, ks = (size_t)Hkv * d, vs = (size_t)Hkv * d_v;
    const size_t os = (size_t)Hq * d_v;

    /* pass 1: dk, dv */
#pragma omp parallel for collapse(3) schedule(dynamic)
    for (int b = 0; b < B; b++) {
        for (int g = 0; g < Hkv; g++) {
            for (int kt = 0; kt < n_kt; kt++) {
                const float *kh = k + (size_t)b * T * ks + (size_t)g * d;
                const float *vh = v + (size_t)b * T * vs + (size_t)g * d_v;
                float *dkh = dk + (size_t)b * T * ks + (size_t)g * d;
                float *dvh = dv + (size_t)b * T * vs + (size_t)g * d_v;
                float S[ATTN_BR * ATTN_BC], P[ATTN_BR * ATTN_BC], dS[ATTN_BR * ATTN_BC];
                float delta[ATTN_BR];
                float kT[(size_t)d * ATTN_BC], vT[(size_t)d_v * ATTN_BC];
                const int j0 = kt * ATTN_BC, nc = attn_imin(ATTN_BC, T - j0);

                attn_tile_transpose(kT, kh, ks, j0, nc, d);
                attn_tile_transpose(vT, vh, vs, j0, nc, d_v);
                attn_rows_zero(dkh, ks, j0, nc, d);
                attn_rows_zero(dvh, vs, j0, nc, d_v);
                for (int h = g * n_rep; h < (g + 1) * n_rep; h++) {
                    const float *qh = q + (size_t)b * T * qs + (size_t)h * d;
                    const float *gh = dout + (size_t)b * T * os + (size_t)h * d_v;
                    const float *oh = out + (size_t)b * T * os + (size_t)h * d_v;
                    const float *lseh = lse + ((size_t)b * Hq + h) * T;
                    /* query tiles from the one holding row j0: earlier rows see none of them */
                    for (int i0 = (j0 / ATTN_BR) * ATTN_BR; i0 < T; i0 += ATTN_BR) {
                        const int nr = attn_imin(ATTN_BR, T - i0);
                        attn_tile_delta(delta, gh, os, oh, os, 1.0f, i0, nr, d_v);
                        attn_tile_scores(S, qh, qs, kT, i0, nr, j0, nc, d, scale);
                        attn_tile_probs(P, dS, S, lseh, gh, os, vT, 1.0f, delta, i0, nr, j0, nc,
                                        d_v);
                        attn_tile_dkdv(dkh, ks, dvh, vs, P, dS, qh, qs, gh, os, 1.0f, scale, i0, nr,
                                       j0, nc, d, d_v);
                    }
                }
            }
        }
    }

    /* pass 2: dq */
#pragma omp parallel for collapse(3) schedule(dynamic)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < Hq; h++) {
            for (int qt = 0; qt < n_qt; qt++) {
                const int g = h / n_rep;
                const float *qh = q + (size_t)b * T * qs + (size_t)h * d;
                const float *kh = k + (size_t)b * T * ks + (size_t)g * d;
                const float *vh = v + (size_t)b * T * vs + (size_t)g * d_v;
                const float *gh = dout + (size_t)b * T * os + (size_t)h * d_v;
                const float *oh = out + (size_t)b * T * os + (size_t)h * d_v;
                const float *lseh = lse + ((size_t)b * Hq + h) * T;
                float *dqh = dq + (size_t)b * T * qs + (size_t)h * d;
                float S[ATTN_BR * ATTN_BC], P[ATTN_BR * ATTN_BC], dS[ATTN_BR * ATTN_BC];
                float delta[ATTN_BR];
                float kT[(size_t)d * ATTN_BC], vT[(size_t)d_v * ATTN_BC];
                const int i0 = qt * ATTN_BR, nr = attn_imin(ATTN_BR, T - i0);

                attn_rows_zero(dqh, qs, i0, nr, d);
                attn_tile_delta(delta, gh, os, oh, os, 1.0f, i0, nr, d_v);
                for (int j0 = 0; j0 < i0 + nr; j0 += ATTN_BC) {
                    const int nc = attn_imin(ATTN_BC, T - j0);
                    attn_tile_transpose(kT, kh, ks, j0, nc, d);
                    attn_tile_transpose(vT, vh, vs, j0, nc, d_v);
                    attn_tile_scores(S, qh, qs, kT, i0, nr, j0, nc, d, scale);
                    attn_tile_probs(P, dS, S, lseh, gh, os, vT, 1.0f, delta, i0, nr, j0, nc, d_v);
                    attn_tile_dq(dqh + (size_t)i0 * qs, qs, dS, kh, ks, scale, i0, nr, j0, nc, d);
                }
            }
        }
    }
}
