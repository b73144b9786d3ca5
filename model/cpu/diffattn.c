/* Differential attention V1 (SPEC sections 2 and 3), flash-style; tile kernels in attn_tile.h.
 *
 * DIFF head h: branch c in {0, 1} pairs q-head 2h + c with k-head 2g + c of kv group
 * g = h / (H / Hkv) (NOT the repeated k-heads 2h + c of the naive public module, which pairs the
 * wrong k-halves under GQA), and both branches read v-head g of width 2d. Both branches walk the
 * key tiles together, so each k/v tile is visited once for the two of them.
 *
 * Backward, three passes, each gradient element written by one task in a fixed order (race-free
 * and bit-identical for any thread count):
 *   pass 0, per row (b, t, h): subln backward dY -> dO, and the reductions dgamma, dlambda in
 *           double over a fixed chunking of the rows (independent of the thread count). dO has the
 *           shape of dq, (B, T, H*2d) = (B, T, 2H*d), and dq is written last, so dO is kept in
 *           dq: the interface gives ops no workspace, and this needs none (dq must therefore not
 *           alias dout, q, k, v, o1 or o2, which no caller has reason to do);
 *   pass 1, per (b, kv group, key tile): dk (both k-heads) and dv, over the heads of the group,
 *           the query tiles at or below the diagonal, and both branches;
 *   pass 2, per (b, DIFF head, query tile): dq of both branches into a tile-local accumulator,
 *           copied over the tile's dO (which only this task reads in pass 2) at the end.
 * Branch c has output gradient dO_c = dscale_c * dO with dscale = (1, -lambda), and its own row
 * term delta_c = rowsum(dO_c * o_c) (SPEC trap: the combined O gives wrong gradients). */
#include <math.h>

#include "model/cpu/attn_tile.h"
#include "model/cpu/cpu_ops.h"

void cpu_diffattn_forward(float *out, float *o1, float *o2, float *lse, float *rstd,
                          const float *q, const float *k, const float *v, const float *lambda,
                          const float *gamma, float lambda_init, float eps, int B, int T, int H,
                          int Hkv, int d) {
    const int n_rep = H / Hkv;
    const int d2 = 2 * d;
    const int n_qt = (T + ATTN_BR - 1) / ATTN_BR;
    const float scale = 1.0f / sqrtf((float)d); /* 1/sqrt(d), not 1/sqrt(2d) (SPEC 2) */
    const float lam = *lambda;
    const float out_scale = 1.0f - lambda_init;
    const size_t qs = (size_t)2 * H * d, ks = (size_t)2 * Hkv * d, vs = (size_t)Hkv * d2;
    const size_t os = (size_t)H * d2;

#pragma omp parallel for collapse(3) schedule(dynamic)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            for (int qt = 0; qt < n_qt; qt++) {
                const int g = h / n_rep;
                const float *qc[2], *kc[2];
                float *oc[2], *lsec[2];
                for (int c = 0; c < 2; c++) {
                    qc[c] = q + (size_t)b * T * qs + (size_t)(2 * h + c) * d;   /* (T, d) view */
                    kc[c] = k + (size_t)b * T * ks + (size_t)(2 * g + c) * d;   /* (T, d) view */
                    oc[c] = (c ? o2 : o1) + (size_t)b * T * os + (size_t)h * d2; /* (T, 2d) */
                    lsec[c] = lse + ((size_t)b * 2 * H + 2 * h + c) * T;       /* (T) */
                }
                const float *vh = v + (size_t)b * T * vs + (size_t)g * d2; /* (T, 2d) view */
                float S[ATTN_BR * ATTN_BC], m[2][ATTN_BR], l[2][ATTN_BR];
                float kT[(size_t)d * ATTN_BC];
                const int i0 = qt * ATTN_BR, nr = attn_imin(ATTN_BR, T - i0);

                for (int c = 0; c < 2; c++) attn_online_init(oc[c], os, m[c], l[c], i0, nr, d2);
                for (int j0 = 0; j0 < i0 + nr; j0 += ATTN_BC) {
                    const int nc = attn_imin(ATTN_BC, T - j0);
                    for (int c = 0; c < 2; c++) {
                        attn_tile_transpose(kT, kc[c], ks, j0, nc, d);
                        attn_tile_scores(S, qc[c], qs, kT, i0, nr, j0, nc, d, scale);
                        attn_online_update(oc[c], os, m[c], l[c], S, vh, vs, i0, nr, j0, nc, d2);
                    }
                }
                for (int c = 0; c < 2; c++)
                    attn_online_finish(oc[c], os, lsec[c], m[c], l[c], i0, nr, d2);

                /* O = o1 - lambda o2, then subln and the (1 - lambda_init) factor */
                for (int r = 0; r < nr; r++) {
                    const size_t t = (size_t)b * T + i0 + r;
                    const float *a1 = o1 + t * os + (size_t)h * d2; /* (2d) */
                    const float *a2 = o2 + t * os + (size_t)h * d2; /* (2d) */
                    float *y = out + t * os + (size_t)h * d2;       /* (2d) */
                    if (gamma) {
                        double ss = 0.0;
                        for (int e = 0; e < d2; e++) {
                            float oe = a1[e] - lam * a2[e];
                            ss += (double)oe * oe;
                        }
                        const float rs = (float)(1.0 / sqrt(ss / d2 + (double)eps));
                        if (rstd) rstd[t * H + h] = rs;
                        for (int e = 0; e < d2; e++)
                            y[e] = out_scale * ((a1[e] - lam * a2[e]) * rs) * gamma[e];
                    } else {
                        for (int e = 0; e < d2; e++) y[e] = out_scale * (a1[e] - lam * a2[e]);
                    }
                }
            }
        }
    }
}

/* Fixed number of row chunks for the dgamma/dlambda reductions of pass 0: the chunking, hence
 * the order of every addition, does not depend on the number of threads. */
#define DIFFATTN_CHUNKS 16

void cpu_diffattn_backward(float *dq, float *dk, float *dv, float *dgamma, float *dlambda,
                           const float *dout, const float *q, const float *k, const float *v,
                           const float *o1, const float *o2, const float *lse, const float *rstd,
                           const float *lambda, const float *gamma, float lambda_init, int B,
                           int T, int H, int Hkv, int d) {
    const int n_rep = H / Hkv;
    const int d2 = 2 * d;
    const int n_qt = (T + ATTN_BR - 1) / ATTN_BR;
    const int n_kt = (T + ATTN_BC - 1) / ATTN_BC;
    const float scale = 1.0f / sqrtf((float)d);
    const float lam = *lambda;
    const float out_scale = 1.0f - lambda_init;
    const float dscale[2] = {1.0f, -lam}; /* dO_1 = dO, dO_2 = -lambda dO */
    const size_t qs = (size_t)2 * H * d, ks = (size_t)2 * Hkv * d, vs = (size_t)Hkv * d2;
    const size_t os = (size_t)H * d2; /* == qs: dO (in dq) and o1, o2 share the row layout */

    /* pass 0: dO into dq; dgamma, dlambda partial sums per chunk of rows */
    const size_t n_rows = (size_t)B * T * H;
    const int pw = d2 + 1; /* per chunk: dgamma (2d), then dlambda */
    double part[DIFFATTN_CHUNKS * pw];
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < DIFFATTN_CHUNKS; ch++) {
        double *pg = part + (size_t)ch * pw; /* (2d + 1) */
        for (int e = 0; e <= d2; e++) pg[e] = 0.0;
        const size_t n0 = n_rows * ch / DIFFATTN_CHUNKS, n1 = n_rows * (ch + 1) / DIFFATTN_CHUNKS;
        for (size_t n = n0; n < n1; n++) { /* n = (b*T + t)*H + h */
            const float *a1 = o1 + n * d2;   /* (2d) */
            const float *a2 = o2 + n * d2;   /* (2d) */
            const float *dy = dout + n * d2; /* (2d) */
            float *dO = dq + n * d2;         /* (2d) */
            if (gamma) {
                /* Ohat = O r, dOhat = (1 - li) dY gamma, dO = r (dOhat - Ohat (Ohat.dOhat) / 2d) */
                const float rs = rstd[n];
                double dot = 0.0;
                for (int e = 0; e < d2; e++) {
                    const float ohat = (a1[e] - lam * a2[e]) * rs;
                    const float dohat = out_scale * dy[e] * gamma[e];
                    pg[e] += (double)out_scale * dy[e] * ohat;
                    dot += (double)ohat * dohat;
                }
                const float coef = (float)(dot / d2);
                for (int e = 0; e < d2; e++) {
                    const float ohat = (a1[e] - lam * a2[e]) * rs;
                    const float dohat = out_scale * dy[e] * gamma[e];
                    dO[e] = rs * (dohat - ohat * coef);
                }
            } else {
                for (int e = 0; e < d2; e++) dO[e] = out_scale * dy[e];
            }
            double dl = 0.0;
            for (int e = 0; e < d2; e++) dl += (double)dO[e] * a2[e];
            pg[d2] -= dl;
        }
    }
    {
        double dl = 0.0;
        for (int ch = 0; ch < DIFFATTN_CHUNKS; ch++) dl += part[(size_t)ch * pw + d2];
        *dlambda += (float)dl;
        if (gamma && dgamma) {
            for (int e = 0; e < d2; e++) {
                double s = 0.0;
                for (int ch = 0; ch < DIFFATTN_CHUNKS; ch++) s += part[(size_t)ch * pw + e];
                dgamma[e] += (float)s;
            }
        }
    }

    /* pass 1: dk, dv */
#pragma omp parallel for collapse(3) schedule(dynamic)
    for (int b = 0; b < B; b++) {
        for (int g = 0; g < Hkv; g++) {
            for (int kt = 0; kt < n_kt; kt++) {
                const float *kc[2];
                float *dkc[2];
                for (int c = 0; c < 2; c++) {
                    kc[c] = k + (size_t)b * T * ks + (size_t)(2 * g + c) * d;
                    dkc[c] = dk + (size_t)b * T * ks + (size_t)(2 * g + c) * d;
                }
                const float *vh = v + (size_t)b * T * vs + (size_t)g * d2;
                float *dvh = dv + (size_t)b * T * vs + (size_t)g * d2;
                float S[ATTN_BR * ATTN_BC], P[ATTN_BR * ATTN_BC], dS[ATTN_BR * ATTN_BC];
                float delta[ATTN_BR];
                float kT[2][(size_t)d * ATTN_BC], vT[(size_t)d2 * ATTN_BC];
                const int j0 = kt * ATTN_BC, nc = attn_imin(ATTN_BC, T - j0);

                for (int c = 0; c < 2; c++) attn_tile_transpose(kT[c], kc[c], ks, j0, nc, d);
                attn_tile_transpose(vT, vh, vs, j0, nc, d2);
                for (int c = 0; c < 2; c++) attn_rows_zero(dkc[c], ks, j0, nc, d);
                attn_rows_zero(dvh, vs, j0, nc, d2);
                for (int h = g * n_rep; h < (g + 1) * n_rep; h++) {
                    const float *dOh = dq + (size_t)b * T * qs + (size_t)h * d2; /* (T, 2d) */
                    for (int i0 = (j0 / ATTN_BR) * ATTN_BR; i0 < T; i0 += ATTN_BR) {
                        const int nr = attn_imin(ATTN_BR, T - i0);
                        for (int c = 0; c < 2; c++) {
                            const float *qh = q + (size_t)b * T * qs + (size_t)(2 * h + c) * d;
                            const float *oh = (c ? o2 : o1) + (size_t)b * T * os + (size_t)h * d2;
                            const float *lseh = lse + ((size_t)b * 2 * H + 2 * h + c) * T;
                            attn_tile_delta(delta, dOh, qs, oh, os, dscale[c], i0, nr, d2);
                            attn_tile_scores(S, qh, qs, kT[c], i0, nr, j0, nc, d, scale);
                            attn_tile_probs(P, dS, S, lseh, dOh, qs, vT, dscale[c], delta, i0, nr,
                                            j0, nc, d2);
                            attn_tile_dkdv(dkc[c], ks, dvh, vs, P, dS, qh, qs, dOh, qs, dscale[c],
                                           scale, i0, nr, j0, nc, d, d2);
                        }
                    }
                }
            }
        }
    }

    /* pass 2: dq (over the dO kept in dq) */
#pragma omp parallel for collapse(3) schedule(dynamic)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            for (int qt = 0; qt < n_qt; qt++) {
                const int g = h / n_rep;
                const float *qc[2], *kc[2], *oc[2], *lsec[2];
                for (int c = 0; c < 2; c++) {
                    qc[c] = q + (size_t)b * T * qs + (size_t)(2 * h + c) * d;
                    kc[c] = k + (size_t)b * T * ks + (size_t)(2 * g + c) * d;
                    oc[c] = (c ? o2 : o1) + (size_t)b * T * os + (size_t)h * d2;
                    lsec[c] = lse + ((size_t)b * 2 * H + 2 * h + c) * T;
                }
                const float *vh = v + (size_t)b * T * vs + (size_t)g * d2;
                float *dOh = dq + (size_t)b * T * qs + (size_t)h * d2; /* dO in, dq out */
                float S[ATTN_BR * ATTN_BC], P[ATTN_BR * ATTN_BC], dS[ATTN_BR * ATTN_BC];
                float delta[2][ATTN_BR];
                float kT[(size_t)d * ATTN_BC], vT[(size_t)d2 * ATTN_BC];
                float acc[2 * ATTN_BR * d]; /* dq of branch c, row r at (c*ATTN_BR + r)*d */
                const int i0 = qt * ATTN_BR, nr = attn_imin(ATTN_BR, T - i0);

                for (size_t e = 0; e < (size_t)2 * ATTN_BR * d; e++) acc[e] = 0.0f;
                for (int c = 0; c < 2; c++)
                    attn_tile_delta(delta[c], dOh, qs, oc[c], os, dscale[c], i0, nr, d2);
                for (int j0 = 0; j0 < i0 + nr; j0 += ATTN_BC) {
                    const int nc = attn_imin(ATTN_BC, T - j0);
                    attn_tile_transpose(vT, vh, vs, j0, nc, d2); /* shared by both branches */
                    for (int c = 0; c < 2; c++) {
                        attn_tile_transpose(kT, kc[c], ks, j0, nc, d);
                        attn_tile_scores(S, qc[c], qs, kT, i0, nr, j0, nc, d, scale);
                        attn_tile_probs(P, dS, S, lsec[c], dOh, qs, vT, dscale[c], delta[c], i0,
                                        nr, j0, nc, d2);
                        attn_tile_dq(acc + (size_t)c * ATTN_BR * d, d, dS, kc[c], ks, scale, i0,
                                     nr, j0, nc, d);
                    }
                }
                /* q-head 2h + c sits at columns [c*d, (c+1)*d) of DIFF head h's 2d columns */
                for (int r = 0; r < nr; r++)
                    for (int c = 0; c < 2; c++)
                        for (int e = 0; e < d; e++)
                            dOh[(size_t)(i0 + r) * qs + (size_t)c * d + e] =
                                acc[((size_t)c * ATTN_BR + r) * d + e];
            }
        }
    }
}
