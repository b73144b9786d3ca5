/* The causal softmax attention core shared by the CUDA attention ops (attention.cu: standard
 * and GQA attention, diffattn.cu: differential attention V1). Internal to model/cuda.
 *
 * Both ops run one standard causal attention over nq q-heads; they differ only in which k-head,
 * v-head and output columns a q-head j uses, which attn_map describes:
 *   standard (diff = 0): Hq q-heads, Hkv kv-heads, n_rep = Hq / Hkv; q-head j reads k-head and
 *       v-head j / n_rep and writes columns [j*dv, (j+1)*dv) of out (B, T, Hq*dv);
 *   DIFF V1 (diff = 1): nq = 2H q-heads, j = 2h + c is branch c of DIFF head h; kv group
 *       g = h / (H / Hkv) = j / n_rep with n_rep = 2H / Hkv; q-head j reads k-head 2g + c (of
 *       2Hkv) and v-head g (width dv = 2d), and writes columns [h*dv, (h+1)*dv) of o1 (c = 0) or
 *       o2 (c = 1), each (B, T, H*2d).
 * Branch c of DIFF has the output gradient dscale_j * G with dscale = 1 for c = 0 and -lambda for
 * c = 1 (G = dO, the gradient of O = o1 - lambda o2); standard attention has dscale = 1, G = dout.
 * The q-heads that read v-head g are j in [g*n_rep, (g+1)*n_rep) in both layouts.
 *
 * Kernels: forward (attention.cu): one block per (query tile, q-head, b), online softmax per row,
 * lse per row; backward (attn_backward.cu): delta_j,i = dscale_j * (G_i . o_i) per row, then dq
 * per query tile and dk/dv per key tile (every gradient element written by one thread, in a
 * fixed order: no atomics, bit-identical reruns). */
#ifndef DT_CUDA_ATTN_CORE_CUH
#define DT_CUDA_ATTN_CORE_CUH

#include <stddef.h>

#include "model/cuda/cuda_common.cuh"
#include "model/cuda/operand.cuh"

/* Head dimension and value width the kernels' register tiles hold. */
#define ATTN_CU_MAX_D 128
#define ATTN_CU_MAX_DV 256

typedef struct attn_map {
    int B, T;
    int nq, nk, nv; /* q-heads, k-heads, v-heads */
    int n_rep;      /* q-heads per v-head: nq / nv */
    int d, dv;      /* q/k head dim, v head width */
    int diff;       /* 0: standard GQA, 1: DIFF V1 pairing (see above) */
} attn_map;

/* The maps of the two attention kinds, for the tiled (attention.cu, diffattn.cu) and the fused
 * (flash_ops.cu) ops: standard causal attention with Hq q-heads over Hkv kv-heads, and DIFF V1
 * with H heads (q-heads 2h, 2h+1; k-heads 2g, 2g+1; v-head g of width 2d). */
static inline attn_map attn_map_standard(int B, int T, int Hq, int Hkv, int d, int dv) {
    attn_map m;
    m.B = B;
    m.T = T;
    m.nq = Hq;
    m.nk = Hkv;
    m.nv = Hkv;
    m.n_rep = Hkv > 0 ? Hq / Hkv : 0;
    m.d = d;
    m.dv = dv;
    m.diff = 0;
    return m;
}

static inline attn_map attn_map_diff(int B, int T, int H, int Hkv, int d) {
    attn_map m = attn_map_standard(B, T, 2 * H, Hkv, d, 2 * d);
    m.nk = 2 * Hkv;
    m.diff = 1;
    return m;
}

/* Workspace carving: each piece rounded up to 256 bytes. */
static inline size_t attn_ws_align(size_t bytes) { return (bytes + 255) & ~(size_t)255; }

/* Tiling shared by the kernels: tiles of 32 query rows x 32 keys; forward and dq blocks have 8
 * warps of 4 rows each (the dk/dv kernel has its own: attn_backward.cu); a lane holds DU
 * head-dim or DVU value columns of a row. */
#define ATTN_CU_WARPS 8
#define ATTN_CU_THREADS (ATTN_CU_WARPS * 32)
#define ATTN_CU_RPW 4                            /* rows or keys per warp */
#define ATTN_CU_BR (ATTN_CU_WARPS * ATTN_CU_RPW) /* query rows per tile: 32 */
#define ATTN_CU_BC 32                            /* keys per tile: one per lane */
#define ATTN_CU_DU (ATTN_CU_MAX_D / 32)          /* head-dim columns per lane: 4 */
#define ATTN_CU_DVU (ATTN_CU_MAX_DV / 32)        /* value columns per lane: 8 */
#define ATTN_CU_MASKED (-1.0e30f)

/* k-head read by q-head j */
__host__ __device__ __forceinline__ int attn_k_head(const attn_map &m, int j) {
    return m.diff ? 2 * (j / m.n_rep) + (j & 1) : j / m.n_rep;
}
/* v-head read by q-head j */
__host__ __device__ __forceinline__ int attn_v_head(const attn_map &m, int j) {
    return j / m.n_rep;
}
/* output buffer of q-head j: 0 (out or o1) or 1 (o2) */
__host__ __device__ __forceinline__ int attn_o_buf(const attn_map &m, int j) {
    return m.diff ? (j & 1) : 0;
}
/* first column of q-head j's output (and of its gradient G) in its buffer */
__host__ __device__ __forceinline__ size_t attn_o_col(const attn_map &m, int j) {
    return (size_t)(m.diff ? (j >> 1) : j) * m.dv;
}
/* row stride (floats) of the output buffers and of G */
__host__ __device__ __forceinline__ size_t attn_o_stride(const attn_map &m) {
    return (size_t)(m.diff ? m.nq / 2 : m.nq) * m.dv;
}

/* Output gradient scale of q-head j: -lambda for DIFF branch 2, else 1. */
__device__ __forceinline__ float attn_dscale(const attn_map &m, int j, const float *lambda) {
    return (m.diff && (j & 1)) ? -lambda[0] : 1.0f;
}

/* Rows [r0, r0 + nrows) of a head view x (row stride xs elements of TX: float, or for q, k, v
 * their operand element operand_bf16, widened) into dst (ATTN_CU_BR or _BC rows of w floats,
 * row stride ld); rows at or past n_valid are zero. */
template <typename TX>
__device__ __forceinline__ void attn_stage(float *dst, int ld, const TX *x, size_t xs, int r0,
                                           int n_valid, int nrows, int w) {
    for (int idx = threadIdx.x; idx < nrows * w; idx += blockDim.x) {
        const int r = idx / w, e = idx % w;
        dst[r * ld + e] = r < n_valid ? operand_load(x, (size_t)(r0 + r) * xs + e) : 0.0f;
    }
}

/* Lets `kernel` use `bytes` of dynamic shared memory (needed above the default 48 KiB). */
template <typename K> static inline void attn_smem_allow(K kernel, size_t bytes) {
    if (bytes > 48 * 1024)
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)bytes));
}

/* ---- DIFF's subln backward, shared by the tiled (diffattn.cu) and the fused (flash_prep.cu)
 * backward kernels: the B*T*H rows of O (2d wide) are cut into chunks of DIFF_ROWS_PER_CHUNK
 * (by the sizes only), one block of DIFF_WARPS warps per chunk, DIFF_ROWS_PER_WARP consecutive
 * rows per warp, lane columns e = lane + 32u (u < DIFF_U). ---- */
#define DIFF_WARPS 8
#define DIFF_ROWS_PER_WARP 8
#define DIFF_ROWS_PER_CHUNK (DIFF_WARPS * DIFF_ROWS_PER_WARP) /* rows per block: 64 */
#define DIFF_U (ATTN_CU_MAX_DV / 32)                           /* columns per lane: 8 */

static inline size_t diff_chunks(size_t n_rows) {
    return (n_rows + DIFF_ROWS_PER_CHUNK - 1) / DIFF_ROWS_PER_CHUNK;
}

/* A lane's share of row n of O (2d wide) and its gradient: columns e = lane + 32u, u < U (0 at
 * e >= d2), and rs = rstd[n] (0 where rstd is NULL: a subln without gamma). diff_row_load
 * issues all of a row's loads before any of them is used, so a row costs one trip to memory
 * (flash_prep.cu). */
template <int U> struct diff_row {
    float a1[U], a2[U], dy[U]; /* o1, o2, dout */
    float rs;
};

template <int U>
__device__ __forceinline__ void diff_row_load(diff_row<U> &r, const float *o1, const float *o2,
                                              const float *dout, const float *rstd, size_t n,
                                              int d2, int lane) {
    const size_t at = n * (size_t)d2;
#pragma unroll
    for (int u = 0; u < U; u++) {
        const int e = lane + 32 * u;
        const bool in = e < d2;
        r.a1[u] = in ? o1[at + e] : 0.0f;
        r.a2[u] = in ? o2[at + e] : 0.0f;
        r.dy[u] = in ? dout[at + e] : 0.0f;
    }
    r.rs = rstd ? rstd[n] : 0.0f;
}

/* gamma's columns of the lane (0 past d2), or all 0 without gamma */
template <int U>
__device__ __forceinline__ void diff_gamma_load(float gm[U], const float *gamma, int d2,
                                                int lane) {
#pragma unroll
    for (int u = 0; u < U; u++) {
        const int e = lane + 32 * u;
        gm[u] = gamma && e < d2 ? gamma[e] : 0.0f;
    }
}

/* Row r of the subln backward, per lane: with gamma (gm: diff_gamma_load; rs = rstd[n]),
 *   Ohat = O rs, dOhat = (1 - li) dY gamma, go = dO = rs (dOhat - Ohat (Ohat . dOhat) / 2d),
 * and gp[u] += (1 - li) dY Ohat (dgamma's terms); without gamma go = (1 - li) dY.
 * out_scale = 1 - lambda_init. go[u] is 0 for columns >= d2. */
template <int U>
__device__ __forceinline__ void diff_subln_row_backward(float go[U], double gp[U],
                                                        const diff_row<U> &r, float lam,
                                                        bool has_gamma, const float gm[U],
                                                        float out_scale, int d2, int lane) {
    if (has_gamma) {
        double dot = 0.0;
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int e = lane + 32 * u;
            if (e >= d2) continue;
            const float ohat = (r.a1[u] - lam * r.a2[u]) * r.rs;
            const float dohat = out_scale * r.dy[u] * gm[u];
            gp[u] += (double)out_scale * r.dy[u] * ohat;
            dot += (double)ohat * dohat;
        }
        const float coef = (float)(warp_sum(dot) / d2);
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int e = lane + 32 * u;
            go[u] = 0.0f;
            if (e >= d2) continue;
            const float ohat = (r.a1[u] - lam * r.a2[u]) * r.rs;
            const float dohat = out_scale * r.dy[u] * gm[u];
            go[u] = r.rs * (dohat - ohat * coef);
        }
    } else {
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int e = lane + 32 * u;
            go[u] = e < d2 ? out_scale * r.dy[u] : 0.0f;
        }
    }
}

/* The block's row of partials part[ch] (2d + 1 doubles) = {each lane's gp summed over the warps,
 * dl summed over the warps}, warps in order, through the block's shared sg, sdl. Every thread of
 * the block calls it (one __syncthreads). */
template <int U>
__device__ __forceinline__ void diff_chunk_partials(double *part, size_t ch,
                                                    double (*sg)[ATTN_CU_MAX_DV], double *sdl,
                                                    const double gp[U], double dl, int d2) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int u = 0; u < U; u++) {
        const int e = lane + 32 * u;
        if (e < d2) sg[warp][e] = gp[u];
    }
    if (lane == 0) sdl[warp] = dl;
    __syncthreads();
    double *pc = part + ch * (size_t)(d2 + 1); /* (2d + 1) */
    for (int e = threadIdx.x; e < d2; e += blockDim.x) {
        double s = 0.0;
        for (int w = 0; w < DIFF_WARPS; w++) s += sg[w][e];
        pc[e] = s;
    }
    if (threadIdx.x == 0) {
        double s = 0.0;
        for (int w = 0; w < DIFF_WARPS; w++) s += sdl[w];
        pc[d2] = s;
    }
}

/* DIFF's parameter gradients from per-chunk partial sums part (n_chunks, 2d + 1) doubles:
 * dgamma[e] += sum over chunks of part[ch][e] (skipped when dgamma is NULL), *dlambda += the same
 * of part[ch][2d]; a fixed order of additions (deterministic). For the tiled (diffattn.cu) and the
 * fused (flash_prep.cu) backward. */
void diff_dgamma_dlambda_reduce(float *dgamma, float *dlambda, const double *part,
                                size_t n_chunks, int d2);

/* Aborts, printing the sizes, unless the kernels handle m (like a CUDA error: the ops return
 * nothing): d <= ATTN_CU_MAX_D, dv <= ATTN_CU_MAX_DV, nq a multiple of nv, even for DIFF. */
void attn_check(const attn_map &m);

/* o_a, o_b (the output buffers, o_b only for DIFF), lse (B, nq, T) from q (B, T, nq*d),
 * k (B, T, nk*d), v (B, T, nv*dv). Scale 1/sqrt(d). Checks m with attn_check. The outputs' element
 * type TO is float or operand_bf16 (operand.cuh: the standard op's out is a dt_operand; DIFF's
 * o1, o2 are fp32); q, k, v are dt_operands, of element type TI (float or operand_bf16, widened
 * as staged); the math is fp32 and only the store rounds. Instances: <float, float> (fp32 mode),
 * <operand_bf16, operand_bf16> (standard, bf16 mode), <float, operand_bf16> (DIFF, bf16 mode). */
template <typename TO, typename TI>
void attn_core_forward(TO *o_a, TO *o_b, float *lse, const TI *q, const TI *k, const TI *v,
                       const attn_map &m);

/* delta (B, nq, T) = dscale_j * (G_i . o_i) per q-head j and row i (o from o_a, or o_b for DIFF's
 * second branch, elements TO as attn_core_forward writes them; lambda NULL for standard
 * attention), summed in double; g_bf16: G rounded to bf16 first, as the fused kernels read it
 * (flash_prep.cu), and then g16 (NULL: none; G's layout) receives that rounded G: the fused
 * kernels' bf16 G from the same pass over G. */
template <typename TO>
void attn_delta(float *delta, operand_bf16 *g16, const float *G, const TO *o_a, const TO *o_b,
                const float *lambda, const attn_map &m, bool g_bf16);

/* dq (B, T, nq*d), dk (B, T, nk*d), dv (B, T, nv*dv), all overwritten, from G (the output
 * gradient, in the layout of the output buffers), the forward's o_a, o_b and q, k, v (TO and TI
 * as attn_core_forward, the same three instances) and lse. dq and dk are fp32; dv is an operand
 * of the mode, as q, k and v are (elements TI: rounded from the fp32 sums as stored). lambda:
 * device pointer to DIFF's lambda (NULL for standard attention). delta: device scratch of
 * B*nq*T floats (the caller carves it out of cuda_workspace). */
template <typename TO, typename TI>
void attn_core_backward(float *dq, float *dk, TI *dv, float *delta, const float *G,
                        const TO *o_a, const TO *o_b, const TI *q, const TI *k, const TI *v,
                        const float *lse, const float *lambda, const attn_map &m);

#endif
