/* The compute backend interface (STYLE: ggml-backend).
 *
 * The model calls only these function pointers; model code has no #ifdef for any device. The CPU
 * backend (model/cpu) fills them with fp32 C + OpenBLAS + OpenMP and is the oracle that the CUDA
 * backend (model/cuda) is checked against, op by op.
 *
 * Conventions, for every op:
 * - Argument order: outputs, then inputs, then weights, then sizes (STYLE: llm.c).
 * - All float pointers are fp32 buffers in the backend's memory; shapes are given in comments as
 *   (dim0, dim1, ...) row-major. N is the number of token rows (B*T).
 * - A dt_operand pointer is an activation of the forward that feeds the tensor-core ops: a
 *   matrix product's input (the norms' outputs, the attention's output, the SwiGLU output), the
 *   attention's q, k and v, and the products' outputs that only element-wise ops read (SwiGLU's
 *   gate and up); or a gradient that only products read (SwiGLU's dg and du, the output
 *   gradients of the gate and up products; the attention's dv and its dq, dk through RoPE
 *   (rope_backward's dinp, dt_rope_grads), the output gradients of the v, q and k products:
 *   matmul_backward_operand), or the operand copy of one that other ops need in fp32 (the
 *   residual stream's gradient, which rmsnorm_backward accumulates in fp32 and writes as an
 *   operand too). Its elements are operand_bytes wide: fp32 (4), or bf16 (2: the high half of
 *   the fp32 value rounded to nearest even) where the backend computes in bf16 and stores these
 *   activations so, which halves their memory and traffic and spares the products and the
 *   fused attention a rounding copy. Ops read them into fp32 and compute in fp32; the other
 *   gradients, the residual stream, norms' statistics, logits and lse stay fp32. The type is
 *   opaque so that such a buffer is never read as floats by mistake; dt_operand_at offsets
 *   into one.
 * - Weight gradients (d<weight>) are ACCUMULATED (+=), so micro-batches add up.
 * - Activation gradients are OVERWRITTEN unless the op says "accumulates" (the residual stream's
 *   gradient is accumulated by rmsnorm_backward and residual-adds).
 * - Linear weights are stored (out_features, in_features), as nn.Linear.
 * - Attention tensors are token-major: q is (B, T, Hq*d), head j at columns [j*d, (j+1)*d).
 */
#ifndef DT_BACKEND_H
#define DT_BACKEND_H

#include <stddef.h>
#include <stdint.h>

typedef struct dt_backend dt_backend;
typedef struct dt_operand dt_operand; /* never defined: see the conventions above */
typedef struct dt_graph dt_graph;     /* a recorded graph (graph_begin .. graph_free) */

/* RoPE's backward taken by the attention's backward (attention_backward, diffattn_backward):
 * the q and k that the attention read were rotated by rope_forward(theta, pos0 = 0); dq and dk
 * receive the gradients of q and k before that rotation, as operands, with the bits that
 * rope_backward would write from the attention's fp32 dq and dk. A backend may rotate within
 * the attention's own kernels (the CUDA fused attention stores them so) or call rope_backward
 * after it; either way the op's fp32 dq and dk are its scratch. */
typedef struct dt_rope_grads {
    dt_operand *dq, *dk; /* (B, T, q-heads*d), (B, T, k-heads*d); not aliasing the fp32 ones */
    float theta;
} dt_rope_grads;

/* For a backend whose attention backward does not rotate in its own kernels: RoPE's backward
 * after it, by that backend's rope_backward (the dt_backend entry's signature), from the
 * attention's fp32 dq (nq q-heads of width d) and dk (nk k-heads); nothing when rope is NULL. */
static inline void dt_rope_grads_apply(const dt_rope_grads *rope,
                                       void (*rope_backward)(dt_operand *, const float *, int,
                                                             int, int, int, float, int),
                                       const float *dq, const float *dk, int B, int T, int nq,
                                       int nk, int d) {
    if (!rope) return;
    rope_backward(rope->dq, dq, B, T, nq, d, rope->theta, 0);
    rope_backward(rope->dk, dk, B, T, nk, d, rope->theta, 0);
}

struct dt_backend {
    const char *name;
    size_t operand_bytes; /* bytes per element of a dt_operand buffer: 4 (fp32) or 2 (bf16) */

    /* ---- memory ---- */
    void *(*alloc)(size_t bytes); /* zero-filled; NULL on failure */
    void (*free)(void *p);
    void (*memset_zero)(void *p, size_t bytes);
    void (*copy_to_host)(void *dst_host, const void *src, size_t bytes);
    void (*copy_from_host)(void *dst, const void *src_host, size_t bytes);
    void (*copy)(void *dst, const void *src, size_t bytes); /* within the backend */
    void (*synchronize)(void);

    /* ---- host staging: asynchronous uploads without blocking the host ----
     * copy_from_host above returns once the copy is complete (the host may reuse src_host at
     * once), which on a GPU means waiting for every op queued before it. A staging buffer lets
     * the host queue an upload and go on:
     * - host_alloc gives host memory that the backend can copy from asynchronously (page-locked
     *   on a GPU; plain malloc on the CPU); not zero-filled; NULL on failure. host_free waits
     *   for the buffer's pending copies, then frees it (NULL is fine).
     * - copy_from_host_async queues the copy of [src_host, src_host + bytes) into dst behind
     *   the ops queued so far; src_host must lie inside one host_alloc buffer, which must not be
     *   written or freed until the copy is done.
     * - host_wait(p) returns once every copy queued so far that reads the host_alloc buffer
     *   holding p has completed: the host waits only for those copies (the device may still be
     *   computing), so refilling a buffer is back-pressure, never a wait for the device to go
     *   idle. Call it before every write into a staging buffer that may still be read.
     * On the CPU the copy is done when copy_from_host_async returns and host_wait does nothing. */
    void *(*host_alloc)(size_t bytes);
    void (*host_free)(void *p);
    void (*copy_from_host_async)(void *dst, const void *src_host, size_t bytes);
    void (*host_wait)(const void *p);

    /* ---- dense algebra ---- */
    /* out (N, O) = inp (N, I) @ w (O, I)^T; with accumulate != 0, out += instead. */
    void (*matmul_forward)(float *out, const dt_operand *inp, const float *w, int N, int I,
                           int O, int accumulate);
    /* The same product written as an operand (rounded once from the fp32 accumulation). */
    void (*matmul_forward_operand)(dt_operand *out, const dt_operand *inp, const float *w, int N,
                                   int I, int O);
    /* dinp (N, I) = dout (N, O) @ w (O, I)  (skipped when dinp is NULL; accumulates when
     * accumulate_dinp != 0); dw (O, I) += dout^T @ inp (skipped when dw is NULL). */
    void (*matmul_backward)(float *dinp, float *dw, const float *dout, const dt_operand *inp,
                            const float *w, int N, int I, int O, int accumulate_dinp);
    /* The same with dout an operand (an output gradient stored as one: SwiGLU's dg, du; the
     * attention's dv, dq, dk (dt_rope_grads); the classifier's dlogits), N rows of O elements
     * whose starts lie ldd >= O elements apart, read as it is: in bf16 mode the products read
     * dout in bf16 anyway, so no rounding copy. */
    void (*matmul_backward_operand)(float *dinp, float *dw, const dt_operand *dout, int ldd,
                                    const dt_operand *inp, const float *w, int N, int I, int O,
                                    int accumulate_dinp);
    /* The weight matrices the products that follow read: count matrices w[i] of n[i] elements
     * (the model's product weights, model_init). A backend that multiplies in a narrower type
     * than fp32 (CUDA's bf16 products) rounds them here, once, into copies of its own, which
     * those products then read instead of rounding their weights per product. The copies hold
     * the values at this call: the backend drops them when one of its ops writes into the
     * matrices (adamw_update, copies, memset_zero, add, scale, free) or a device collective does
     * (the CUDA backend binds them with its hook: dist/nccl_buf_coll.h), and a call with the same
     * matrices while the copies stand copies nothing. The model prepares at the start of every
     * forward. A no-op where products read the fp32 weights as they are (the CPU). */
    void (*weights_prepare)(const float *const *w, const size_t *n, int count);
    /* out[i] = a[i] + b[i] (out may alias a or b). */
    void (*add)(float *out, const float *a, const float *b, size_t n);
    /* x[i] *= s */
    void (*scale)(float *x, float s, size_t n);
    /* sum of squares of x, accumulated in double; returns to the host (so it waits for the
     * device: the training step uses sumsq_accumulate). */
    double (*sumsq)(const float *x, size_t n);

    /* ---- graphs: the backend's work recorded once and replayed with one call (CUDA graphs;
     * NULL on a backend without them) ----
     * graph_begin starts recording: the ops called until graph_end do not run but are
     * recorded with their arguments (the pointers, and the values of scalar ones);
     * copy_from_host_async records a copy that reads its staging buffer at each launch (refill
     * it only after the launch has been waited for). Nothing between begin and end may read
     * back or wait for the device (that fails the recording), and the weight copies
     * (weights_prepare) are made again in the recording and at each launch. graph_end: the
     * graph, or NULL (reported) when the recording failed. graph_launch queues its ops as they
     * were recorded: 1; or 0, nothing queued, when memory the graph uses has moved since
     * (record it again). */
    int (*graph_begin)(void);
    dt_graph *(*graph_end)(void);
    int (*graph_launch)(dt_graph *g);
    void (*graph_free)(dt_graph *g);

    /* ---- the training step's scalars, kept in backend memory (no read-back) ----
     * Each is deterministic: a fixed order of additions that depends only on the sizes, never on
     * timing or thread counts, so a rerun gives the same bits. */
    /* *acc (one double) += the sum of squares of x, summed as sumsq sums it. */
    void (*sumsq_accumulate)(double *acc, const float *x, size_t n);
    /* *acc (one double) += (double)mean, mean = (float)(sum of losses (N) in double /
     * *n_targets), or 0 when *n_targets is 0 (one int in backend memory, as xent_backward's): a
     * micro-batch's mean loss rounded to float as model_forward returns it. The CPU sums in row
     * order. */
    void (*loss_accumulate)(double *acc, const float *losses, int N, const int32_t *n_targets);
    /* *grad_scale (one float) = the clipping factor for the gradient norm sqrt(*sumsq):
     * (float)(max_norm / norm) when max_norm > 0 and norm > max_norm, else 1; and NaN when *sumsq
     * or *loss_sum is not finite, which makes adamw_update skip the step. */
    void (*clip_scale)(float *grad_scale, const double *sumsq, const double *loss_sum,
                       double max_norm);

    /* ---- embedding ---- */
    /* out (N, D) = wte[tokens[n] - v0] for tokens in [v0, v0 + nv), zero rows otherwise
     * (v0 = 0, nv = V for an unsplit vocabulary). */
    void (*embedding_forward)(float *out, const int32_t *tokens, const float *wte, int N, int D,
                              int v0, int nv);
    void (*embedding_backward)(float *dwte, const float *dout, const int32_t *tokens, int N, int D,
                               int v0, int nv);

    /* ---- RMSNorm: out = inp / sqrt(mean(inp^2) + eps) * weight, per row of C ---- */
    /* rstd (N) receives 1/sqrt(mean + eps) for the backward. weight may be NULL (no gain). */
    void (*rmsnorm_forward)(dt_operand *out, float *rstd, const float *inp, const float *weight,
                            int N, int C, float eps);
    /* The residual add fused with the norm that follows it: y = a + b (y may alias a or b), then
     * out and rstd as rmsnorm_forward of y. The same bits as add() then rmsnorm_forward(). */
    void (*residual_rmsnorm_forward)(float *y, dt_operand *out, float *rstd, const float *a,
                                     const float *b, const float *weight, int N, int C, float eps);
    /* dinp (N, C) accumulates; dweight (C) accumulates (NULL when weight is NULL).
     * dinp_operand (N, C), unless NULL, receives as an operand the value dinp holds after the call
     * (the accumulated gradient; in bf16 mode rounded once, to nearest even): the residual
     * stream's gradient that the next products' backwards read (matmul_backward_operand), written
     * as it is produced rather than rounded by a copy before each product. */
    void (*rmsnorm_backward)(float *dinp, dt_operand *dinp_operand, float *dweight,
                             const float *dout, const float *inp, const float *weight,
                             const float *rstd, int N, int C);

    /* ---- rotary embedding, GPT-J interleaved pairs, in place allowed (out may equal inp) ----
     * x (B, T, n_heads*d); token t of each sequence has position pos0 + t;
     * angle = pos * theta^(-2i/d) for pair i. The backward rotates by the negative angle. */
    void (*rope_forward)(dt_operand *out, const dt_operand *inp, int B, int T, int n_heads,
                         int d, float theta, int pos0);
    /* dinp is an operand (the q or k product's output gradient, read only by its backward):
     * rotated in fp32 from the fp32 dout and rounded once as stored. It may equal dout only
     * where operands are fp32 (operand_bytes 4): a bf16 dinp must not alias dout. */
    void (*rope_backward)(dt_operand *dinp, const float *dout, int B, int T, int n_heads, int d,
                          float theta, int pos0);

    /* ---- SwiGLU gate: h = silu(g) * u, elementwise over rows x cols ----
     * h (rows, cols) is dense; g and u have their rows ld >= cols elements apart (the model's
     * g and u are the two halves of each row of one (rows, 2 cols) product: ld = 2 cols). */
    void (*swiglu_forward)(dt_operand *h, const dt_operand *g, const dt_operand *u, size_t rows,
                           size_t cols, size_t ld);
    /* dg, du (rows ld apart, as g and u) are operands (read only by the gate and up product's
     * backward): fp32 math, each gradient rounded once as it is stored, as a product writing an
     * operand rounds; dh (rows, cols) is dense. dg and du may be g and u themselves. */
    void (*swiglu_backward)(dt_operand *dg, dt_operand *du, const float *dh, const dt_operand *g,
                            const dt_operand *u, size_t rows, size_t cols, size_t ld);

    /* ---- cross-entropy over rows of V logits ----
     * losses (N) = logsumexp(logits[n]) - logits[n][targets[n]]; targets < 0 are ignored
     * (loss 0). lse (N) keeps the logsumexp for the backward. */
    void (*xent_forward)(float *losses, float *lse, const float *logits, const int32_t *targets,
                         int N, int V);
    /* dlogits (N rows of V, ldd >= V elements apart) = dloss * (softmax(logits) -
     * onehot(target)), rows with target < 0 zero, where dloss = dloss_scale / (float)*n_targets
     * (one int in backend memory: the rows' targets counted by the host as it staged them, so
     * that a recorded graph reads each micro-batch's own), or 0 when it is 0. An operand read
     * only by the classifier's product (matmul_backward_operand with the same ldd). dlogits
     * may be the logits buffer itself with ldd = V * sizeof(float) / operand_bytes: each row's
     * gradient then overwrites the front of that row's own logits (in bf16 its first half), so
     * the classifier needs no second buffer and writes half the bytes. */
    void (*xent_backward)(dt_operand *dlogits, int ldd, const float *logits, const float *lse,
                          const int32_t *targets, float dloss_scale, const int32_t *n_targets,
                          int N, int V);

    /* ---- vocab-parallel cross-entropy: each rank holds V logits of its vocabulary slice ----
     * Targets are LOCAL: an index in [0, V) when the target is in this slice, V when it is in
     * another rank's slice, -1 when ignored. One pass over the slice's logits gives its row
     * maxima and sums; with several slices, an all-reduce MAX of rowmax gives the global maxima,
     * xent_vp_rescale moves each slice's sums to them, and an all-reduce SUM adds the slices.
     * rowmax (N) = max of each row's logits; sums (N, 2) = {sum exp(logit - rowmax), the target's
     * logit when it is local else 0}. */
    void (*xent_vp_stats)(float *rowmax, float *sums, const float *logits,
                          const int32_t *targets, int N, int V);
    /* sums[n][0] *= exp(rowmax[n] - gmax[n]), gmax (N) the global row maxima (>= rowmax). */
    void (*xent_vp_rescale)(float *sums, const float *rowmax, const float *gmax, int N);
    /* lse (N) = rowmax + log(sums[.,0]); losses (N) = lse - sums[.,1] (0 for targets < 0),
     * from the globally reduced rowmax and sums. */
    void (*xent_vp_finish)(float *losses, float *lse, const float *rowmax, const float *sums,
                           const int32_t *targets, int N);

    /* ---- causal softmax attention, tiled with online softmax (flash-style) ----
     * q (B, T, Hq*d), k (B, T, Hkv*d), v (B, T, Hkv*dv); q-head j reads kv-head j / (Hq/Hkv).
     * out (B, T, Hq*dv); lse (B, Hq, T) is the log-sum-exp of each row of scaled scores,
     * kept for the backward, which recomputes the probabilities. Scale s = 1/sqrt(d).
     * Memory is linear in T. */
    void (*attention_forward)(dt_operand *out, float *lse, const dt_operand *q,
                              const dt_operand *k, const dt_operand *v, int B, int T, int Hq,
                              int Hkv, int d, int dv);
    /* dq (B,T,Hq*d) overwritten; dk, dv overwritten (summed over the q-heads of a group);
     * d_v is the forward's dv (the v head width), renamed as dv names the gradient here. dv is
     * an operand (read only by the v product's backward): fp32 math, rounded once as stored.
     * rope, unless NULL, takes RoPE's backward too (dt_rope_grads): dq and dk are then scratch. */
    void (*attention_backward)(float *dq, float *dk, dt_operand *dv, const float *dout,
                               const dt_operand *q, const dt_operand *k, const dt_operand *v,
                               const dt_operand *out, const float *lse, int B, int T, int Hq,
                               int Hkv, int d, int d_v, const dt_rope_grads *rope);

    /* ---- differential attention V1 (SPEC section 2), H DIFF heads, H_kv kv groups ----
     * q (B, T, 2H*d), k (B, T, 2H_kv*d), v (B, T, H_kv*2d). DIFF head h uses q-heads 2h, 2h+1,
     * kv group g = h / (H/H_kv), k-heads 2g, 2g+1 and v-head g (width 2d).
     * Forward writes
     *   o1, o2 (B, T, H*2d)  the two branch outputs P_c V (kept for the backward: per-branch
     *                        delta and dlambda)
     *   lse    (B, 2H, T)    log-sum-exp per branch (index 2h + c)
     *   rstd   (B, T, H)     1/rms of O = o1 - lambda o2 per head (subln), or unused
     *   out    (B, T, H*2d)  (1 - lambda_init) * subln(O) * gamma
     * lambda points at one float (the layer's lambda, in backend memory). gamma (2d) is the
     * subln gain; gamma == NULL means subln off: out = (1 - lambda_init) * O. */
    void (*diffattn_forward)(dt_operand *out, float *o1, float *o2, float *lse, float *rstd,
                             const dt_operand *q, const dt_operand *k, const dt_operand *v,
                             const float *lambda, const float *gamma, float lambda_init, float eps,
                             int B, int T, int H, int Hkv, int d);
    /* dq, dk, dv overwritten (dv an operand, as attention_backward's, and rope as there: over
     * the 2H q-heads and 2H_kv k-heads of width d); dgamma (2d) and dlambda (1 float)
     * accumulate. */
    void (*diffattn_backward)(float *dq, float *dk, dt_operand *dv, float *dgamma, float *dlambda,
                              const float *dout, const dt_operand *q, const dt_operand *k,
                              const dt_operand *v, const float *o1, const float *o2,
                              const float *lse, const float *rstd, const float *lambda,
                              const float *gamma, float lambda_init, int B, int T, int H, int Hkv,
                              int d, const dt_rope_grads *rope);
    /* lambda = exp(lq1 . lk1) - exp(lq2 . lk2) + lambda_init, each vector of length d. */
    void (*difflambda_forward)(float *lambda, const float *lq1, const float *lk1,
                               const float *lq2, const float *lk2, float lambda_init, int d);
    /* dlq1..dlk2 (d) accumulate from the scalar gradient *dlambda. */
    void (*difflambda_backward)(float *dlq1, float *dlk1, float *dlq2, float *dlk2,
                                const float *dlambda, const float *lq1, const float *lk1,
                                const float *lq2, const float *lk2, int d);

    /* ---- per-head gain (model.subln: scalar): H heads of width w per token row ----
     * out (N, H*w): out[n, h*w + i] = inp[n, h*w + i] * s[h]. */
    void (*head_scale_forward)(dt_operand *out, const dt_operand *inp, const float *s, int N,
                               int H, int w);
    /* dinp (N, H*w) = dout * s[h], overwritten (dinp may equal dout: in place);
     * ds (H) accumulates sum over n, i of dout[n, h*w + i] * inp[n, h*w + i]. */
    void (*head_scale_backward)(float *dinp, float *ds, const float *dout, const dt_operand *inp,
                                const float *s, int N, int H, int w);

    /* ---- differential attention V2 combine (SPEC section 4) ----
     * attn (N, 2H*d) standard attention over 2H q-heads; lam_logit (N, H) = x W_lambda^T.
     * out (N, H*d): out_h = attn_{2h} - sigmoid(lam_logit_h) * attn_{2h+1}. */
    void (*diffv2_combine_forward)(dt_operand *out, const dt_operand *attn,
                                   const float *lam_logit, int N, int H, int d);
    /* dattn (N, 2H*d), dlam_logit (N, H) overwritten. */
    void (*diffv2_combine_backward)(float *dattn, float *dlam_logit, const float *dout,
                                    const dt_operand *attn, const float *lam_logit, int N, int H,
                                    int d);

    /* ---- AdamW with decoupled weight decay, over n contiguous elements ----
     * m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; mhat = m/(1-b1^t); vhat = v/(1-b2^t);
     * p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p). *grad_scale (one float in backend
     * memory, e.g. written by clip_scale) multiplies g first (clipping and averaging folded in);
     * when it is not finite, params, m and v are left unchanged (a step refused for a non-finite
     * loss or gradient norm). t is the 1-based step. */
    void (*adamw_update)(float *params, float *m, float *v, const float *grads, size_t n,
                         float lr, float beta1, float beta2, float eps, float weight_decay,
                         const float *grad_scale, int t);
};

/* The operand element i of buffer p (its address: i elements of be->operand_bytes further). */
static inline dt_operand *dt_operand_at(const dt_backend *be, const dt_operand *p, size_t i) {
    return (dt_operand *)((char *)(uintptr_t)p + i * be->operand_bytes);
}

/* The CPU backend (always available). */
const dt_backend *dt_backend_cpu(void);

#endif
