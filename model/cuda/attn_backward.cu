/* Backward of the causal softmax attention core (attn_core.cuh), three kernels:
 *   delta (B, nq, T) = dscale_j * (G_i . o_i), the row term of the softmax backward, per q-head
 *       (for DIFF per branch: delta_c = rowsum(dO_c * o_c), never from the combined O);
 *   dq, one block per (query tile, q-head, b): the rows walk the key tiles up to the diagonal;
 *   dk/dv, one block per (key tile, v-head, b): the keys walk the query tiles from the diagonal
 *       on, for every q-head that reads the v-head.
 * Both recompute P = exp(scale q.k - lse) with the same expression, and dS = P (dscale G.v -
 * delta). Every gradient element is accumulated by one thread in a fixed order and written once
 * (overwrite contract; no atomics: bit-identical reruns). dq and dk are fp32; dv is an operand
 * (operand.cuh) of q, k and v's element type TI, accumulated in fp32 and rounded only as stored. */
#include <math.h>

#include "model/cuda/attn_core.cuh"
#include "model/cuda/cuda_common.cuh"
#include "model/cuda/mma.cuh"

/* ---- delta (B, nq, T) = dscale_j * (G_i . o_i), one warp per row, summed in double as the CPU
 * oracle does (it is subtracted from dP, where cancellation is common); G_BF16: G rounded to bf16
 * first (the fused kernels' delta, flash_prep.cu), and those bf16 values stored into g16 unless
 * it is NULL (the fused kernels' G). A lane takes columns e = lane + 32u, u < U (U * 32 >= dv),
 * and loads all of its row's G and o before the first g16 store: loaded where used, after the
 * previous column's store (which may alias G and o, for all the compiler knows), each column
 * was a trip to memory of its own: 3.6 ms of the 830M baseline's step on an H100, some 40% of
 * DRAM bandwidth by its bytes. ---- */
template <bool G_BF16, typename TO, int U>
__global__ void attn_delta_kernel(float *delta, operand_bf16 *g16, const float *G, const TO *o_a,
                                  const TO *o_b, const float *lambda, attn_map m) {
    const size_t n_rows = (size_t)m.B * m.nq * m.T;
    const size_t n_warps = ((size_t)gridDim.x * blockDim.x) >> 5;
    const int lane = threadIdx.x & 31;
    /* n is the same for the 32 lanes of a warp: the loop and the shuffles are warp-uniform */
    for (size_t n = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5; n < n_rows;
         n += n_warps) {
        const int i = (int)(n % m.T), j = (int)((n / m.T) % m.nq);
        const int b = (int)(n / ((size_t)m.nq * m.T));
        const size_t row = ((size_t)b * m.T + i) * attn_o_stride(m) + attn_o_col(m, j);
        const float *g = G + row;                         /* (dv) */
        const TO *o = (attn_o_buf(m, j) ? o_b : o_a) + row; /* (dv) */
        float gv[U], ov[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int e = lane + 32 * u;
            gv[u] = e < m.dv ? g[e] : 0.0f;
            ov[u] = e < m.dv ? operand_load(o, e) : 0.0f;
        }
        double acc = 0.0;
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int e = lane + 32 * u;
            if (e >= m.dv) continue;
            if (G_BF16 && g16) g16[row + e] = operand_bf16_bits(gv[u]);
            acc += (double)(G_BF16 ? round_bf16(gv[u]) : gv[u]) * ov[u];
        }
        acc = warp_sum(acc);
        if (lane == 0) delta[n] = (float)((double)attn_dscale(m, j, lambda) * acc);
    }
}

/* ---- dq: grid (query tiles, nq, B); dq_i = scale sum_j dS_ij k_j over the visible keys ---- */
template <typename TI>
__global__ void __launch_bounds__(ATTN_CU_THREADS)
attn_dq_kernel(float *dq, const float *G, const TI *q, const TI *k, const TI *v, const float *lse,
               const float *delta, const float *lambda, attn_map m, float scale) {
    extern __shared__ float smem[];
    const int d = m.d, dv = m.dv, T = m.T, kld = d + 1, vld = dv + 1;
    float *Qs = smem;                  /* (BR, d): broadcast reads */
    float *Gs = Qs + ATTN_CU_BR * d;   /* (BR, dv): broadcast reads */
    float *Ks = Gs + ATTN_CU_BR * dv;  /* (BC, d + 1) */
    float *Vs = Ks + ATTN_CU_BC * kld; /* (BC, dv + 1) */
    const int j = blockIdx.y, b = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int i0 = blockIdx.x * ATTN_CU_BR, nr = min(ATTN_CU_BR, T - i0);
    const size_t qs = (size_t)m.nq * d, ks = (size_t)m.nk * d, vs = (size_t)m.nv * dv;
    const size_t os = attn_o_stride(m);
    const TI *qh = q + (size_t)b * T * qs + (size_t)j * d;
    const TI *kh = k + (size_t)b * T * ks + (size_t)attn_k_head(m, j) * d;
    const TI *vh = v + (size_t)b * T * vs + (size_t)attn_v_head(m, j) * dv;
    const float *gh = G + (size_t)b * T * os + attn_o_col(m, j); /* (T, dv) */
    const float *lseh = lse + ((size_t)b * m.nq + j) * T;     /* (T) */
    const float *deltah = delta + ((size_t)b * m.nq + j) * T; /* (T) */
    const float dscale = attn_dscale(m, j, lambda);

    attn_stage(Qs, d, qh, qs, i0, nr, ATTN_CU_BR, d);
    attn_stage(Gs, dv, gh, os, i0, nr, ATTN_CU_BR, dv);
    float lse_r[ATTN_CU_RPW], delta_r[ATTN_CU_RPW], acc[ATTN_CU_RPW][ATTN_CU_DU];
#pragma unroll
    for (int rr = 0; rr < ATTN_CU_RPW; rr++) {
        const int r = warp * ATTN_CU_RPW + rr;
        lse_r[rr] = r < nr ? lseh[i0 + r] : 0.0f;
        delta_r[rr] = r < nr ? deltah[i0 + r] : 0.0f;
#pragma unroll
        for (int u = 0; u < ATTN_CU_DU; u++) acc[rr][u] = 0.0f;
    }

    for (int j0 = 0; j0 < i0 + nr; j0 += ATTN_CU_BC) {
        const int nc = min(ATTN_CU_BC, T - j0);
        __syncthreads();
        attn_stage(Ks, kld, kh, ks, j0, nc, ATTN_CU_BC, d);
        attn_stage(Vs, vld, vh, vs, j0, nc, ATTN_CU_BC, dv);
        __syncthreads();

        float s[ATTN_CU_RPW] = {0.0f}, dp[ATTN_CU_RPW] = {0.0f}; /* lane = key */
        for (int e = 0; e < d; e++) {
            const float ke = Ks[lane * kld + e];
#pragma unroll
            for (int rr = 0; rr < ATTN_CU_RPW; rr++)
                s[rr] += Qs[(warp * ATTN_CU_RPW + rr) * d + e] * ke;
        }
        for (int e = 0; e < dv; e++) {
            const float ve = Vs[lane * vld + e];
#pragma unroll
            for (int rr = 0; rr < ATTN_CU_RPW; rr++)
                dp[rr] += Gs[(warp * ATTN_CU_RPW + rr) * dv + e] * ve;
        }
        float ds[ATTN_CU_RPW]; /* scale * dS_ij, 0 where masked */
#pragma unroll
        for (int rr = 0; rr < ATTN_CU_RPW; rr++) {
            const int r = warp * ATTN_CU_RPW + rr, i = i0 + r, jj = j0 + lane;
            const bool vis = r < nr && lane < nc && jj <= i;
            const float p = vis ? expf(scale * s[rr] - lse_r[rr]) : 0.0f;
            ds[rr] = vis ? scale * (p * (dscale * dp[rr] - delta_r[rr])) : 0.0f;
        }
        for (int c = 0; c < nc; c++) {
            float kc[ATTN_CU_DU];
#pragma unroll
            for (int u = 0; u < ATTN_CU_DU; u++) {
                const int e = lane + 32 * u;
                kc[u] = e < d ? Ks[c * kld + e] : 0.0f;
            }
#pragma unroll
            for (int rr = 0; rr < ATTN_CU_RPW; rr++) {
                const float dsc = __shfl_sync(0xffffffffu, ds[rr], c);
#pragma unroll
                for (int u = 0; u < ATTN_CU_DU; u++) acc[rr][u] += dsc * kc[u];
            }
        }
    }

    float *dqh = dq + (size_t)b * T * qs + (size_t)j * d;
#pragma unroll
    for (int rr = 0; rr < ATTN_CU_RPW; rr++) {
        const int r = warp * ATTN_CU_RPW + rr;
        if (r >= nr) continue;
#pragma unroll
        for (int u = 0; u < ATTN_CU_DU; u++) {
            const int e = lane + 32 * u;
            if (e < d) dqh[(size_t)(i0 + r) * qs + e] = acc[rr][u];
        }
    }
}

/* dk/dv blocks: 16 warps of 2 keys each (a warp holds 2 x (d + dv) accumulator columns; with 4
 * keys per warp, as the other kernels have rows, ptxas spills at the 128-register cap). */
#define ATTN_CU_DKDV_WARPS 16
#define ATTN_CU_DKDV_THREADS (ATTN_CU_DKDV_WARPS * 32)
#define ATTN_CU_KPW (ATTN_CU_BC / ATTN_CU_DKDV_WARPS) /* keys per warp: 2 */

/* ---- dk, dv: grid (key tiles, nv, B). The block owns keys [j0, j0 + BC) of v-head g: dv sums
 * over every q-head of the group (both branches for DIFF), dk over the q-heads of one k-head
 * (slot c: k-head attn_k_head(first q-head of the slot)); per q-head the query tiles at or past
 * the diagonal, rows in increasing order. ---- */
template <typename TI>
__global__ void __launch_bounds__(ATTN_CU_DKDV_THREADS)
attn_dkdv_kernel(float *dk, TI *dv, const float *G, const TI *q, const TI *k, const TI *v,
                 const float *lse, const float *delta, const float *lambda, attn_map m,
                 float scale) {
    extern __shared__ float smem[];
    const int d = m.d, dvw = m.dv, T = m.T, qld = d + 1, gld = dvw + 1;
    float *Ks = smem;                        /* (BC, d): broadcast reads */
    float *Vs = Ks + ATTN_CU_BC * d;         /* (BC, dv): broadcast reads */
    float *Qs = Vs + ATTN_CU_BC * dvw;       /* (BR, d + 1): lane = row */
    float *Gs = Qs + ATTN_CU_BR * qld;       /* (BR, dv + 1) */
    float *lse_s = Gs + ATTN_CU_BR * gld;    /* (BR) */
    float *delta_s = lse_s + ATTN_CU_BR;     /* (BR) */
    const int g = blockIdx.y, b = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int j0 = blockIdx.x * ATTN_CU_BC, nc = min(ATTN_CU_BC, T - j0);
    const size_t qs = (size_t)m.nq * d, ks = (size_t)m.nk * d, vs = (size_t)m.nv * dvw;
    const size_t os = attn_o_stride(m);
    const int n_slot = m.diff ? 2 : 1;

    attn_stage(Vs, dvw, v + (size_t)b * T * vs + (size_t)g * dvw, vs, j0, nc, ATTN_CU_BC, dvw);
    float accv[ATTN_CU_KPW][ATTN_CU_DVU];
#pragma unroll
    for (int kk = 0; kk < ATTN_CU_KPW; kk++)
#pragma unroll
        for (int u = 0; u < ATTN_CU_DVU; u++) accv[kk][u] = 0.0f;

    for (int slot = 0; slot < n_slot; slot++) {
        const int kh = attn_k_head(m, g * m.n_rep + slot);
        float acck[ATTN_CU_KPW][ATTN_CU_DU];
#pragma unroll
        for (int kk = 0; kk < ATTN_CU_KPW; kk++)
#pragma unroll
            for (int u = 0; u < ATTN_CU_DU; u++) acck[kk][u] = 0.0f;
        __syncthreads(); /* the previous slot's K tile is consumed */
        attn_stage(Ks, d, k + (size_t)b * T * ks + (size_t)kh * d, ks, j0, nc, ATTN_CU_BC, d);

        for (int t = slot; t < m.n_rep; t += n_slot) {
            const int j = g * m.n_rep + t; /* a q-head of this slot */
            const float dscale = attn_dscale(m, j, lambda);
            const TI *qh = q + (size_t)b * T * qs + (size_t)j * d;
            const float *gh = G + (size_t)b * T * os + attn_o_col(m, j);
            const float *lseh = lse + ((size_t)b * m.nq + j) * T;
            const float *deltah = delta + ((size_t)b * m.nq + j) * T;
            for (int i0 = j0; i0 < T; i0 += ATTN_CU_BR) { /* rows before j0 see none of the keys */
                const int nr = min(ATTN_CU_BR, T - i0);
                __syncthreads();
                attn_stage(Qs, qld, qh, qs, i0, nr, ATTN_CU_BR, d);
                attn_stage(Gs, gld, gh, os, i0, nr, ATTN_CU_BR, dvw);
                if (threadIdx.x < ATTN_CU_BR) {
                    lse_s[threadIdx.x] = (int)threadIdx.x < nr ? lseh[i0 + threadIdx.x] : 0.0f;
                    delta_s[threadIdx.x] = (int)threadIdx.x < nr ? deltah[i0 + threadIdx.x] : 0.0f;
                }
                __syncthreads();

                float s[ATTN_CU_KPW] = {0.0f}, dp[ATTN_CU_KPW] = {0.0f}; /* lane = row */
                for (int e = 0; e < d; e++) {
                    const float qe = Qs[lane * qld + e];
#pragma unroll
                    for (int kk = 0; kk < ATTN_CU_KPW; kk++)
                        s[kk] += qe * Ks[(warp * ATTN_CU_KPW + kk) * d + e];
                }
                for (int e = 0; e < dvw; e++) {
                    const float ge = Gs[lane * gld + e];
#pragma unroll
                    for (int kk = 0; kk < ATTN_CU_KPW; kk++)
                        dp[kk] += ge * Vs[(warp * ATTN_CU_KPW + kk) * dvw + e];
                }
                float pv[ATTN_CU_KPW], ds[ATTN_CU_KPW]; /* dscale P_ij and scale dS_ij */
#pragma unroll
                for (int kk = 0; kk < ATTN_CU_KPW; kk++) {
                    const int c = warp * ATTN_CU_KPW + kk, i = i0 + lane;
                    const bool vis = lane < nr && c < nc && j0 + c <= i;
                    /* same expression as the dq kernel, so both see the same P */
                    const float p = vis ? expf(scale * s[kk] - lse_s[lane]) : 0.0f;
                    pv[kk] = dscale * p;
                    ds[kk] = vis ? scale * (p * (dscale * dp[kk] - delta_s[lane])) : 0.0f;
                }
                for (int r = 0; r < nr; r++) {
                    float gr[ATTN_CU_DVU], qr[ATTN_CU_DU];
#pragma unroll
                    for (int u = 0; u < ATTN_CU_DVU; u++) {
                        const int e = lane + 32 * u;
                        gr[u] = e < dvw ? Gs[r * gld + e] : 0.0f;
                    }
#pragma unroll
                    for (int u = 0; u < ATTN_CU_DU; u++) {
                        const int e = lane + 32 * u;
                        qr[u] = e < d ? Qs[r * qld + e] : 0.0f;
                    }
#pragma unroll
                    for (int kk = 0; kk < ATTN_CU_KPW; kk++) {
                        const float pr = __shfl_sync(0xffffffffu, pv[kk], r);
                        const float dr = __shfl_sync(0xffffffffu, ds[kk], r);
#pragma unroll
                        for (int u = 0; u < ATTN_CU_DVU; u++) accv[kk][u] += pr * gr[u];
#pragma unroll
                        for (int u = 0; u < ATTN_CU_DU; u++) acck[kk][u] += dr * qr[u];
                    }
                }
            }
        }

        float *dkh = dk + (size_t)b * T * ks + (size_t)kh * d;
#pragma unroll
        for (int kk = 0; kk < ATTN_CU_KPW; kk++) {
            const int c = warp * ATTN_CU_KPW + kk;
            if (c >= nc) continue;
#pragma unroll
            for (int u = 0; u < ATTN_CU_DU; u++) {
                const int e = lane + 32 * u;
                if (e < d) dkh[(size_t)(j0 + c) * ks + e] = acck[kk][u];
            }
        }
    }

    TI *dvh = dv + (size_t)b * T * vs + (size_t)g * dvw;
#pragma unroll
    for (int kk = 0; kk < ATTN_CU_KPW; kk++) {
        const int c = warp * ATTN_CU_KPW + kk;
        if (c >= nc) continue;
#pragma unroll
        for (int u = 0; u < ATTN_CU_DVU; u++) {
            const int e = lane + 32 * u;
            if (e < dvw) operand_store(dvh, (size_t)(j0 + c) * vs + e, accv[kk][u]);
        }
    }
}

/* ---- host side ---- */

/* Dynamic shared memory per block. For d = 128, dv = 256: dq 98,560 B, dk/dv 98,816 B (above the
 * default 48 KiB; H100 allows 227 KiB). */
static size_t attn_smem_dq(const attn_map &m) {
    return sizeof(float) * ((size_t)ATTN_CU_BR * (m.d + m.dv) + (size_t)ATTN_CU_BC * (m.d + 1) +
                            (size_t)ATTN_CU_BC * (m.dv + 1));
}
static size_t attn_smem_dkdv(const attn_map &m) {
    return sizeof(float) * ((size_t)ATTN_CU_BC * (m.d + m.dv) + (size_t)ATTN_CU_BR * (m.d + 1) +
                            (size_t)ATTN_CU_BR * (m.dv + 1) + 2 * ATTN_CU_BR);
}

template <typename TO, int U>
static void attn_delta_launch(float *delta, operand_bf16 *g16, const float *G, const TO *o_a,
                              const TO *o_b, const float *lambda, const attn_map &m, bool g_bf16,
                              size_t n_rows) {
    auto kernel = g_bf16 ? attn_delta_kernel<true, TO, U> : attn_delta_kernel<false, TO, U>;
    kernel<<<cuda_blocks(n_rows * 32, 256), 256, 0, cuda_stream()>>>(delta, g16, G, o_a, o_b,
                                                                     lambda, m);
    CUDA_LAUNCH_CHECK();
}

template <typename TO>
void attn_delta(float *delta, operand_bf16 *g16, const float *G, const TO *o_a, const TO *o_b,
                const float *lambda, const attn_map &m, bool g_bf16) {
    const size_t n_rows = (size_t)m.B * m.nq * m.T;
    if (n_rows == 0) return;
    /* columns per lane: the fused kernels' head dims exactly, others the most attn_check allows */
    switch (m.dv) {
    case 64: attn_delta_launch<TO, 2>(delta, g16, G, o_a, o_b, lambda, m, g_bf16, n_rows); break;
    case 96: attn_delta_launch<TO, 3>(delta, g16, G, o_a, o_b, lambda, m, g_bf16, n_rows); break;
    case 128: attn_delta_launch<TO, 4>(delta, g16, G, o_a, o_b, lambda, m, g_bf16, n_rows); break;
    default:
        attn_delta_launch<TO, ATTN_CU_MAX_DV / 32>(delta, g16, G, o_a, o_b, lambda, m, g_bf16,
                                                   n_rows);
    }
}

template void attn_delta<float>(float *, operand_bf16 *, const float *, const float *,
                                const float *, const float *, const attn_map &, bool);
template void attn_delta<operand_bf16>(float *, operand_bf16 *, const float *,
                                       const operand_bf16 *, const operand_bf16 *, const float *,
                                       const attn_map &, bool);

template <typename TO, typename TI>
void attn_core_backward(float *dq, float *dk, TI *dv, float *delta, const float *G,
                        const TO *o_a, const TO *o_b, const TI *q, const TI *k, const TI *v,
                        const float *lse, const float *lambda, const attn_map &m) {
    attn_check(m);
    if (m.B == 0 || m.T <= 0) return;
    const float scale = 1.0f / sqrtf((float)m.d);
    attn_delta(delta, NULL, G, o_a, o_b, lambda, m, false);

    const size_t smem_dq = attn_smem_dq(m);
    const dim3 grid_q((unsigned)((m.T + ATTN_CU_BR - 1) / ATTN_CU_BR), (unsigned)m.nq,
                      (unsigned)m.B);
    auto dq_kernel = attn_dq_kernel<TI>;
    attn_smem_allow(dq_kernel, smem_dq);
    dq_kernel<<<grid_q, ATTN_CU_THREADS, smem_dq, cuda_stream()>>>(dq, G, q, k, v, lse, delta,
                                                                   lambda, m, scale);
    CUDA_LAUNCH_CHECK();

    const size_t smem_kv = attn_smem_dkdv(m);
    const dim3 grid_k((unsigned)((m.T + ATTN_CU_BC - 1) / ATTN_CU_BC), (unsigned)m.nv,
                      (unsigned)m.B);
    auto dkdv_kernel = attn_dkdv_kernel<TI>;
    attn_smem_allow(dkdv_kernel, smem_kv);
    dkdv_kernel<<<grid_k, ATTN_CU_DKDV_THREADS, smem_kv, cuda_stream()>>>(
        dk, dv, G, q, k, v, lse, delta, lambda, m, scale);
    CUDA_LAUNCH_CHECK();
}
#define ATTN_CORE_BACKWARD(TO, TI)                                                                 \
    template void attn_core_backward<TO, TI>(float *, float *, TI *, float *, const float *,      \
                                             const TO *, const TO *, const TI *, const TI *,      \
                                             const TI *, const float *, const float *,            \
                                             const attn_map &)
ATTN_CORE_BACKWARD(float, float);
ATTN_CORE_BACKWARD(operand_bf16, operand_bf16);
ATTN_CORE_BACKWARD(float, operand_bf16);
#undef ATTN_CORE_BACKWARD
