/* Tile kernels shared by the CPU attention ops (attention.c: standard, diffattn.c: DIFF V1).
 * Internal to model/cpu; the ops themselves are declared in cpu_ops.h.
 *
 * Both ops follow the flash-attention scheme that the CUDA kernels implement: a query tile of
 * ATTN_BR rows walks the key tiles of ATTN_BC columns up to the causal limit with an online
 * softmax (running max m, running sum l, unnormalised output accumulator), and the backward
 * recomputes the probabilities from the saved log-sum-exp. No T x T buffer exists anywhere:
 * a task holds a few ATTN_BR x ATTN_BC tiles and the transposed k and v tiles on its stack.
 *
 * A "head view" is a pointer to row 0 of one head of one sequence plus a row stride (in floats):
 * row t of head j of sequence b in q (B, T, Hq*d) is q + (b*T + t)*Hq*d + j*d, so the view is
 * (q + b*T*Hq*d + j*d, Hq*d). Rows are indexed by absolute position t in every helper; m, l and
 * delta are tile-local (index r = t - i0).
 *
 * Causality: key j is visible to query i iff j <= i, so the visible keys of a row in a key tile
 * are a prefix of the tile. Masked entries of a score tile hold ATTN_MASKED (finite) and are never
 * exponentiated: their probability is exactly 0 and they leave m and l untouched, so a row that
 * sees none of a tile's keys is unchanged by it, a fully masked row can never produce NaN, and a
 * change to any key, value or query at position t cannot alter a bit of any row before t. */
#ifndef DT_CPU_ATTN_TILE_H
#define DT_CPU_ATTN_TILE_H

#include <math.h>
#include <stddef.h>

/* Query rows per tile and key columns per tile. They differ on purpose: with ATTN_BR > ATTN_BC
 * the diagonal band of a query tile spans several key tiles, some rows of which see none of a
 * key tile's keys, and the tests (T = 1, 5, 33, 70) exercise every partial-tile case. */
#define ATTN_BR 32
#define ATTN_BC 16
/* Score of a masked (future) key and initial running max: finite, so that no inf - inf exists. */
#define ATTN_MASKED (-1.0e30f)

static inline int attn_imin(int a, int b) { return a < b ? a : b; }

/* y (n) += a * x (n). y and x never overlap in these ops; the simd pragma has the loop
 * vectorised at -O2 whatever n (each element still gets one multiply and one add: no sum is
 * reassociated, so the result is that of the scalar loop). */
static inline void attn_axpy(float *restrict y, float a, const float *restrict x, int n) {
#pragma omp simd
    for (int e = 0; e < n; e++) y[e] += a * x[e];
}

/* Number of keys of the tile [j0, j0 + nc) that query row i may see (a prefix of the tile). */
static inline int attn_visible(int i, int j0, int nc) {
    int n = i - j0 + 1;
    return n < 0 ? 0 : (n > nc ? nc : n);
}

/* xT (w, ATTN_BC) = the rows [j0, j0 + nc) of a head view x (w wide), transposed; columns past
 * nc are zero. With the tile transposed, the products below run over the ATTN_BC columns in the
 * innermost loop, which the compiler vectorises without reassociating any sum: every dot
 * product is still accumulated in the order e = 0, 1, ..., w-1. */
static inline void attn_tile_transpose(float *xT, const float *x, size_t xs, int j0, int nc,
                                       int w) {
    for (int c = 0; c < nc; c++) {
        const float *xj = x + (size_t)(j0 + c) * xs; /* (w) */
        for (int e = 0; e < w; e++) xT[(size_t)e * ATTN_BC + c] = xj[e];
    }
    for (int c = nc; c < ATTN_BC; c++)
        for (int e = 0; e < w; e++) xT[(size_t)e * ATTN_BC + c] = 0.0f;
}

/* acc (ATTN_BC) = a . xT[:, c] for every column c of a transposed tile (w, ATTN_BC). */
static inline void attn_tile_dots(float *acc, const float *a, const float *xT, int w) {
    for (int c = 0; c < ATTN_BC; c++) acc[c] = 0.0f;
    for (int e = 0; e < w; e++) {
        const float ae = a[e];
        const float *xe = xT + (size_t)e * ATTN_BC;
        for (int c = 0; c < ATTN_BC; c++) acc[c] += ae * xe[c];
    }
}

/* S (nr, ATTN_BC) = scale * q_i . k_j for i in [i0, i0 + nr), j in [j0, j0 + nc), from the key
 * tile transposed by attn_tile_transpose, kT (d, ATTN_BC); masked entries (j > i) and columns
 * past nc are ATTN_MASKED. */
static inline void attn_tile_scores(float *S, const float *q, size_t qs, const float *kT, int i0,
                                    int nr, int j0, int nc, int d, float scale) {
    for (int r = 0; r < nr; r++) {
        float *Sr = S + (size_t)r * ATTN_BC;
        int nvis = attn_visible(i0 + r, j0, nc);
        attn_tile_dots(Sr, q + (size_t)(i0 + r) * qs, kT, d);
        for (int c = 0; c < nvis; c++) Sr[c] *= scale;
        for (int c = nvis; c < ATTN_BC; c++) Sr[c] = ATTN_MASKED;
    }
}

/* Starts the online softmax of rows [i0, i0 + nr): acc rows zeroed, m = ATTN_MASKED, l = 0. */
static inline void attn_online_init(float *acc, size_t as, float *m, float *l, int i0, int nr,
                                    int dv) {
    for (int r = 0; r < nr; r++) {
        float *a = acc + (size_t)(i0 + r) * as;
        for (int e = 0; e < dv; e++) a[e] = 0.0f;
        m[r] = ATTN_MASKED;
        l[r] = 0.0f;
    }
}

/* Adds one key tile to the online softmax: m' = max(m, max_j S_ij) over visible j; acc and l
 * are rescaled by exp(m - m') (exactly 1 when the max did not move), then acc += p_ij v_j and
 * l += p_ij with p_ij = exp(S_ij - m') <= 1, so nothing overflows whatever the logits. */
static inline void attn_online_update(float *acc, size_t as, float *m, float *l, const float *S,
                                      const float *v, size_t vs, int i0, int nr, int j0, int nc,
                                      int dv) {
    for (int r = 0; r < nr; r++) {
        int nvis = attn_visible(i0 + r, j0, nc);
        if (nvis == 0) continue;
        const float *Sr = S + (size_t)r * ATTN_BC;
        float *a = acc + (size_t)(i0 + r) * as; /* (dv) */
        float mx = m[r];
        for (int c = 0; c < nvis; c++) mx = Sr[c] > mx ? Sr[c] : mx;
        if (mx > m[r]) {
            float corr = expf(m[r] - mx); /* 0 on the first visible tile: m = ATTN_MASKED */
            l[r] *= corr;
            for (int e = 0; e < dv; e++) a[e] *= corr;
            m[r] = mx;
        }
        float lr = l[r];
        for (int c = 0; c < nvis; c++) {
            float p = expf(Sr[c] - mx);
            const float *vj = v + (size_t)(j0 + c) * vs; /* (dv) */
            lr += p;
            attn_axpy(a, p, vj, dv);
        }
        l[r] = lr;
    }
}

/* Ends the online softmax: acc /= l, lse_i = m + log(l). Every causal row sees key 0, so l >= 1
 * after the walk; the l == 0 branch only keeps a degenerate call finite. */
static inline void attn_online_finish(float *acc, size_t as, float *lse, const float *m,
                                      const float *l, int i0, int nr, int dv) {
    for (int r = 0; r < nr; r++) {
        float *a = acc + (size_t)(i0 + r) * as;
        float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
        for (int e = 0; e < dv; e++) a[e] *= inv;
        lse[i0 + r] = l[r] > 0.0f ? m[r] + logf(l[r]) : ATTN_MASKED;
    }
}

/* delta_r = dscale * (dout_i . o_i), the row term of the softmax backward for a branch whose
 * output gradient is dscale * dout (1 for standard attention, -lambda for DIFF branch 2).
 * Accumulated in double: it is subtracted from dP, where cancellation is common. */
static inline void attn_tile_delta(float *delta, const float *dout, size_t ds, const float *o,
                                   size_t os, float dscale, int i0, int nr, int dv) {
    for (int r = 0; r < nr; r++) {
        const float *g = dout + (size_t)(i0 + r) * ds;
        const float *oi = o + (size_t)(i0 + r) * os;
        double acc = 0.0;
        for (int e = 0; e < dv; e++) acc += (double)g[e] * oi[e];
        delta[r] = (float)(dscale * acc);
    }
}

/* From a score tile S (attn_tile_scores): P = exp(S - lse_i) on visible entries and 0 elsewhere,
 * dS = P * (dscale * dout_i . v_j - delta_r), with the value tile transposed, vT (dv, ATTN_BC).
 * Both tiles (nr, ATTN_BC). */
static inline void attn_tile_probs(float *P, float *dS, const float *S, const float *lse,
                                   const float *dout, size_t ds, const float *vT, float dscale,
                                   const float *delta, int i0, int nr, int j0, int nc, int dv) {
    for (int r = 0; r < nr; r++) {
        int i = i0 + r;
        int nvis = attn_visible(i, j0, nc);
        const float *Sr = S + (size_t)r * ATTN_BC;
        float *Pr = P + (size_t)r * ATTN_BC;
        float *dSr = dS + (size_t)r * ATTN_BC;
        float dp[ATTN_BC];
        attn_tile_dots(dp, dout + (size_t)i * ds, vT, dv);
        for (int c = 0; c < nvis; c++) {
            float p = expf(Sr[c] - lse[i]);
            Pr[c] = p;
            dSr[c] = p * (dscale * dp[c] - delta[r]);
        }
        for (int c = nvis; c < ATTN_BC; c++) Pr[c] = dSr[c] = 0.0f;
    }
}

/* dv_j += dscale * sum_r P_rj dout_i and dk_j += scale * sum_r dS_rj q_i for the key tile
 * [j0, j0 + nc); rows in increasing order, so the sums are the same for any thread count. */
static inline void attn_tile_dkdv(float *dk, size_t dks, float *dv, size_t dvs, const float *P,
                                  const float *dS, const float *q, size_t qs, const float *dout,
                                  size_t ds, float dscale, float scale, int i0, int nr, int j0,
                                  int nc, int d, int d_v) {
    for (int c = 0; c < nc; c++) {
        float *dkj = dk + (size_t)(j0 + c) * dks; /* (d) */
        float *dvj = dv + (size_t)(j0 + c) * dvs; /* (d_v) */
        for (int r = 0; r < nr; r++) {
            if (j0 + c > i0 + r) continue; /* masked: P = dS = 0 */
            float p = dscale * P[(size_t)r * ATTN_BC + c];
            float ds_ = scale * dS[(size_t)r * ATTN_BC + c];
            const float *g = dout + (size_t)(i0 + r) * ds;
            const float *qi = q + (size_t)(i0 + r) * qs;
            attn_axpy(dvj, p, g, d_v);
            attn_axpy(dkj, ds_, qi, d);
        }
    }
}

/* dq_i += scale * sum_j dS_rj k_j for the query rows [i0, i0 + nr). Unlike the other helpers,
 * dq points at row i0 (dq + r*dqs is row i0 + r), so that it may be a tile-local accumulator. */
static inline void attn_tile_dq(float *dq, size_t dqs, const float *dS, const float *k, size_t ks,
                                float scale, int i0, int nr, int j0, int nc, int d) {
    for (int r = 0; r < nr; r++) {
        float *dqi = dq + (size_t)r * dqs; /* (d) */
        int nvis = attn_visible(i0 + r, j0, nc);
        for (int c = 0; c < nvis; c++) {
            float ds_ = scale * dS[(size_t)r * ATTN_BC + c];
            const float *kj = k + (size_t)(j0 + c) * ks;
            attn_axpy(dqi, ds_, kj, d);
        }
    }
}

/* Zeroes rows [i0, i0 + n) of a head view of width w. */
static inline void attn_rows_zero(float *x, size_t xs, int i0, int n, int w) {
    for (int r = 0; r < n; r++) {
        float *xr = x + (size_t)(i0 + r) * xs;
        for (int e = 0; e < w; e++) xr[e] = 0.0f;
    }
}

#endif
