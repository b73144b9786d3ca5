/* Causal softmax attention on the GPU: the forward of the tiled core (attn_core.cuh; backward in
 * attn_backward.cu) and the standard/GQA op of model/backend.h.
 *
 * All the core's kernels use tiles of 32 query rows x 32 keys and blocks of 8 warps owning 4
 * rows each (dk/dv: 16 warps owning 2 keys each). The dot products over the head dimension run
 * with one lane per key (forward, dq) or one lane per query row (dk/dv), reading the tile from
 * shared memory, whose rows are padded by one float where lanes read different rows (so the 32
 * lanes hit 32 banks). The sums over keys or rows then run with one lane per output column: the
 * probabilities are broadcast with __shfl_sync in increasing key/row order, so every output
 * element is accumulated by one thread in a fixed order (no atomics: bit-identical reruns).
 * Loops that contain a shuffle have block- or warp-uniform bounds, so all 32 lanes reach every
 * full-mask shuffle.
 *
 * Causality: key j is visible to row i iff j <= i; masked entries get probability exactly 0, a
 * row's running max starts at the finite ATTN_CU_MASKED and is only updated by a tile in which
 * the row sees a key, so nothing is ever inf - inf or NaN. Every row i < T sees key 0.
 *
 * The standard op's out is a dt_operand: written, and read back by the backward's delta, in the
 * backend's format (operand.cuh), the kernels' TO; q, k and v are dt_operands too, the kernels'
 * TI, widened to fp32 as they are staged into shared memory; so is the backward's dv, stored in
 * that format. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "model/cuda/attn_core.cuh"
#include "model/cuda/cuda_common.cuh"
#include "model/cuda/cuda_ops.h"

/* ---- forward: grid (query tiles, nq, B) ---- */
template <typename TO, typename TI>
__global__ void __launch_bounds__(ATTN_CU_THREADS)
attn_forward_kernel(TO *o_a, TO *o_b, float *lse, const TI *q, const TI *k, const TI *v,
                    attn_map m, float scale) {
    extern __shared__ float smem[];
    const int d = m.d, dv = m.dv, T = m.T, kld = d + 1;
    float *Qs = smem;                     /* (BR, d): broadcast reads */
    float *Ks = Qs + ATTN_CU_BR * d;      /* (BC, d + 1): lane = key */
    float *Vs = Ks + ATTN_CU_BC * kld;    /* (BC, dv): lane = column */
    const int j = blockIdx.y, b = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int i0 = blockIdx.x * ATTN_CU_BR, nr = min(ATTN_CU_BR, T - i0);
    const size_t qs = (size_t)m.nq * d, ks = (size_t)m.nk * d, vs = (size_t)m.nv * dv;
    const size_t os = attn_o_stride(m);
    const TI *qh = q + (size_t)b * T * qs + (size_t)j * d;                   /* (T, d) */
    const TI *kh = k + (size_t)b * T * ks + (size_t)attn_k_head(m, j) * d;   /* (T, d) */
    const TI *vh = v + (size_t)b * T * vs + (size_t)attn_v_head(m, j) * dv;  /* (T, dv) */
    TO *oh = (attn_o_buf(m, j) ? o_b : o_a) + (size_t)b * T * os + attn_o_col(m, j);

    attn_stage(Qs, d, qh, qs, i0, nr, ATTN_CU_BR, d);
    float mrow[ATTN_CU_RPW], lrow[ATTN_CU_RPW], acc[ATTN_CU_RPW][ATTN_CU_DVU];
#pragma unroll
    for (int rr = 0; rr < ATTN_CU_RPW; rr++) {
        mrow[rr] = ATTN_CU_MASKED;
        lrow[rr] = 0.0f;
#pragma unroll
        for (int u = 0; u < ATTN_CU_DVU; u++) acc[rr][u] = 0.0f;
    }

    for (int j0 = 0; j0 < i0 + nr; j0 += ATTN_CU_BC) {
        const int nc = min(ATTN_CU_BC, T - j0);
        __syncthreads(); /* the previous tile is consumed */
        attn_stage(Ks, kld, kh, ks, j0, nc, ATTN_CU_BC, d);
        attn_stage(Vs, dv, vh, vs, j0, nc, ATTN_CU_BC, dv);
        __syncthreads();

        float s[ATTN_CU_RPW] = {0.0f}; /* lane = key j0 + lane */
        for (int e = 0; e < d; e++) {
            const float ke = Ks[lane * kld + e];
#pragma unroll
            for (int rr = 0; rr < ATTN_CU_RPW; rr++)
                s[rr] += Qs[(warp * ATTN_CU_RPW + rr) * d + e] * ke;
        }
        float p[ATTN_CU_RPW];
#pragma unroll
        for (int rr = 0; rr < ATTN_CU_RPW; rr++) {
            const int r = warp * ATTN_CU_RPW + rr, i = i0 + r;
            const int nvis = r < nr ? max(0, min(i - j0 + 1, nc)) : 0; /* warp-uniform */
            p[rr] = 0.0f;
            if (nvis > 0) {
                const float sc = lane < nvis ? scale * s[rr] : ATTN_CU_MASKED;
                const float mnew = fmaxf(mrow[rr], warp_max(sc));
                const float corr = expf(mrow[rr] - mnew); /* 0 on the first tile, 1 if unmoved */
                p[rr] = lane < nvis ? expf(sc - mnew) : 0.0f;
                lrow[rr] = lrow[rr] * corr + warp_sum(p[rr]);
                mrow[rr] = mnew;
#pragma unroll
                for (int u = 0; u < ATTN_CU_DVU; u++) acc[rr][u] *= corr;
            }
        }
        for (int c = 0; c < nc; c++) { /* acc += p_c v_c, keys in order */
            float vc[ATTN_CU_DVU];
#pragma unroll
            for (int u = 0; u < ATTN_CU_DVU; u++) {
                const int e = lane + 32 * u;
                vc[u] = e < dv ? Vs[c * dv + e] : 0.0f;
            }
#pragma unroll
            for (int rr = 0; rr < ATTN_CU_RPW; rr++) {
                const float pc = __shfl_sync(0xffffffffu, p[rr], c);
#pragma unroll
                for (int u = 0; u < ATTN_CU_DVU; u++) acc[rr][u] += pc * vc[u];
            }
        }
    }

#pragma unroll
    for (int rr = 0; rr < ATTN_CU_RPW; rr++) {
        const int r = warp * ATTN_CU_RPW + rr, i = i0 + r;
        if (r >= nr) continue;
        const float inv = lrow[rr] > 0.0f ? 1.0f / lrow[rr] : 0.0f;
#pragma unroll
        for (int u = 0; u < ATTN_CU_DVU; u++) {
            const int e = lane + 32 * u;
            if (e < dv) operand_store(oh, (size_t)i * os + e, acc[rr][u] * inv);
        }
        if (lane == 0)
            lse[((size_t)b * m.nq + j) * T + i] =
                lrow[rr] > 0.0f ? mrow[rr] + logf(lrow[rr]) : ATTN_CU_MASKED;
    }
}

/* ---- host side ---- */

static void attn_fail(const char *what, const attn_map &m) {
    fprintf(stderr,
            "difftrain: error: CUDA attention: %s (B=%d T=%d q-heads=%d k-heads=%d v-heads=%d "
            "d=%d dv=%d; supported: d <= %d, dv <= %d, q-heads a multiple of v-heads)\n",
            what, m.B, m.T, m.nq, m.nk, m.nv, m.d, m.dv, ATTN_CU_MAX_D, ATTN_CU_MAX_DV);
    fflush(stderr);
    abort();
}

void attn_check(const attn_map &m) {
    if (m.d < 1 || m.d > ATTN_CU_MAX_D || m.dv < 1 || m.dv > ATTN_CU_MAX_DV)
        attn_fail("head dimension out of range", m);
    if (m.nv < 1 || m.nq % m.nv != 0 || m.n_rep != m.nq / m.nv || (m.diff && m.n_rep % 2 != 0))
        attn_fail("bad head counts", m);
    if (m.nq > 65535 || m.nv > 65535 || m.B > 65535) attn_fail("too many heads or sequences", m);
}

/* Dynamic shared memory per block: 65,664 B for d = 128, dv = 256 (above the default 48 KiB,
 * hence attn_smem_allow; H100: up to 227 KiB per block). */
static size_t attn_smem_forward(const attn_map &m) {
    return sizeof(float) * ((size_t)ATTN_CU_BR * m.d + (size_t)ATTN_CU_BC * (m.d + 1) +
                            (size_t)ATTN_CU_BC * m.dv);
}

template <typename TO, typename TI>
void attn_core_forward(TO *o_a, TO *o_b, float *lse, const TI *q, const TI *k, const TI *v,
                       const attn_map &m) {
    attn_check(m);
    if (m.B == 0 || m.T <= 0) return;
    const float scale = 1.0f / sqrtf((float)m.d);
    const size_t smem = attn_smem_forward(m);
    const dim3 grid((unsigned)((m.T + ATTN_CU_BR - 1) / ATTN_CU_BR), (unsigned)m.nq, (unsigned)m.B);
    auto kernel = attn_forward_kernel<TO, TI>;
    attn_smem_allow(kernel, smem);
    kernel<<<grid, ATTN_CU_THREADS, smem, cuda_stream()>>>(o_a, o_b, lse, q, k, v, m, scale);
    CUDA_LAUNCH_CHECK();
}
template void attn_core_forward<float, float>(float *, float *, float *, const float *,
                                              const float *, const float *, const attn_map &);
template void attn_core_forward<operand_bf16, operand_bf16>(operand_bf16 *, operand_bf16 *,
                                                            float *, const operand_bf16 *,
                                                            const operand_bf16 *,
                                                            const operand_bf16 *,
                                                            const attn_map &);
template void attn_core_forward<float, operand_bf16>(float *, float *, float *,
                                                     const operand_bf16 *, const operand_bf16 *,
                                                     const operand_bf16 *, const attn_map &);

/* ---- the standard / GQA op (model/backend.h) ---- */

extern "C" void cuda_attention_forward(dt_operand *out, float *lse, const dt_operand *q,
                                       const dt_operand *k, const dt_operand *v, int B, int T,
                                       int Hq, int Hkv, int d, int dv) {
    const attn_map m = attn_map_standard(B, T, Hq, Hkv, d, dv);
    typedef operand_bf16 bf;
    if (cuda_operand_bf16())
        attn_core_forward((bf *)out, (bf *)NULL, lse, (const bf *)q, (const bf *)k,
                          (const bf *)v, m);
    else
        attn_core_forward((float *)out, (float *)NULL, lse, (const float *)q, (const float *)k,
                          (const float *)v, m);
}

extern "C" void cuda_attention_backward(float *dq, float *dk, dt_operand *dv, const float *dout,
                                        const dt_operand *q, const dt_operand *k,
                                        const dt_operand *v, const dt_operand *out,
                                        const float *lse, int B, int T, int Hq, int Hkv, int d,
                                        int d_v) {
    const attn_map m = attn_map_standard(B, T, Hq, Hkv, d, d_v);
    float *delta = (float *)cuda_workspace(sizeof(float) * ((size_t)B * Hq * T + 1)); /* (B,Hq,T) */
    typedef operand_bf16 bf;
    if (cuda_operand_bf16())
        attn_core_backward(dq, dk, (bf *)dv, delta, dout, (const bf *)out, (const bf *)NULL,
                           (const bf *)q, (const bf *)k, (const bf *)v, lse, NULL, m);
    else
        attn_core_backward(dq, dk, (float *)dv, delta, dout, (const float *)out,
                           (const float *)NULL, (const float *)q, (const float *)k,
                           (const float *)v, lse, NULL, m);
}
