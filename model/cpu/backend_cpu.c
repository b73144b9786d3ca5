/* The CPU backend: fp32 C, OpenBLAS for products, OpenMP across rows and elements. It is the
 * reference every other backend is tested against (STYLE: llm.c, ggml). */
#include "model/backend.h"
#include "model/cpu/cpu_ops.h"

/* The CPU stores operands (backend.h) in fp32: the ops that write or read them are the fp32 ops,
 * adapted to the dt_operand signatures by these casts. */
#define F(p) ((float *)(p))
#define CF(p) ((const float *)(p))

static void matmul_forward(float *out, const dt_operand *inp, const float *w, int N, int I, int O,
                           int accumulate) {
    cpu_matmul_forward(out, CF(inp), w, N, I, O, accumulate);
}
static void matmul_backward(float *dinp, float *dw, const float *dout, const dt_operand *inp,
                            const float *w, int N, int I, int O, int accumulate_dinp) {
    cpu_matmul_backward(dinp, dw, dout, CF(inp), w, N, I, O, accumulate_dinp);
}
static void matmul_backward_operand(float *dinp, float *dw, const dt_operand *dout, int ldd,
                                    const dt_operand *inp, const float *w, int N, int I, int O,
                                    int accumulate_dinp) {
    cpu_matmul_backward_ld(dinp, dw, CF(dout), ldd, CF(inp), w, N, I, O, accumulate_dinp);
}
static void matmul_forward_operand(dt_operand *out, const dt_operand *inp, const float *w, int N,
                                   int I, int O) {
    cpu_matmul_forward(F(out), CF(inp), w, N, I, O, 0);
}
static void xent_backward(dt_operand *dlogits, int ldd, const float *logits, const float *lse,
                          const int32_t *targets, float dloss_scale, const int32_t *n_targets,
                          int N, int V) {
    cpu_xent_backward(F(dlogits), ldd, logits, lse, targets, dloss_scale, n_targets, N, V);
}
static void rope_forward(dt_operand *out, const dt_operand *inp, int B, int T, int n_heads, int d,
                         float theta, int pos0) {
    cpu_rope_forward(F(out), CF(inp), B, T, n_heads, d, theta, pos0);
}
static void rope_backward(dt_operand *dinp, const float *dout, int B, int T, int n_heads, int d,
                          float theta, int pos0) {
    cpu_rope_backward(F(dinp), dout, B, T, n_heads, d, theta, pos0);
}
static void rmsnorm_forward(dt_operand *out, float *rstd, const float *inp, const float *weight,
                            int N, int C, float eps) {
    cpu_rmsnorm_forward(F(out), rstd, inp, weight, N, C, eps);
}
static void residual_rmsnorm_forward(float *y, dt_operand *out, float *rstd, const float *a,
                                     const float *b, const float *weight, int N, int C,
                                     float eps) {
    cpu_residual_rmsnorm_forward(y, F(out), rstd, a, b, weight, N, C, eps);
}
static void rmsnorm_backward(float *dinp, dt_operand *dinp_operand, float *dweight,
                             const float *dout, const float *inp, const float *weight,
                             const float *rstd, int N, int C) {
    cpu_rmsnorm_backward(dinp, F(dinp_operand), dweight, dout, inp, weight, rstd, N, C);
}
static void swiglu_forward(dt_operand *h, const dt_operand *g, const dt_operand *u, size_t rows,
                           size_t cols, size_t ld) {
    cpu_swiglu_forward(F(h), CF(g), CF(u), rows, cols, ld);
}
static void swiglu_backward(dt_operand *dg, dt_operand *du, const float *dh, const dt_operand *g,
                            const dt_operand *u, size_t rows, size_t cols, size_t ld) {
    cpu_swiglu_backward(F(dg), F(du), dh, CF(g), CF(u), rows, cols, ld);
}
static void attention_forward(dt_operand *out, float *lse, const dt_operand *q,
                              const dt_operand *k, const dt_operand *v, int B, int T, int Hq,
                              int Hkv, int d, int dv) {
    cpu_attention_forward(F(out), lse, CF(q), CF(k), CF(v), B, T, Hq, Hkv, d, dv);
}
static void attention_backward(float *dq, float *dk, dt_operand *dv, const float *dout,
                               const dt_operand *q, const dt_operand *k, const dt_operand *v,
                               const dt_operand *out, const float *lse, int B, int T, int Hq,
                               int Hkv, int d, int d_v, const dt_rope_grads *rope) {
    cpu_attention_backward(dq, dk, F(dv), dout, CF(q), CF(k), CF(v), CF(out), lse, B, T, Hq,
                           Hkv, d, d_v);
    dt_rope_grads_apply(rope, rope_backward, dq, dk, B, T, Hq, Hkv, d);
}
static void diffattn_forward(dt_operand *out, float *o1, float *o2, float *lse, float *rstd,
                             const dt_operand *q, const dt_operand *k, const dt_operand *v,
                             const float *lambda, const float *gamma, float lambda_init, float eps,
                             int B, int T, int H, int Hkv, int d) {
    cpu_diffattn_forward(F(out), o1, o2, lse, rstd, CF(q), CF(k), CF(v), lambda, gamma,
                         lambda_init, eps, B, T, H, Hkv, d);
}
static void diffattn_backward(float *dq, float *dk, dt_operand *dv, float *dgamma,
                              float *dlambda, const float *dout, const dt_operand *q,
                              const dt_operand *k, const dt_operand *v, const float *o1,
                              const float *o2, const float *lse, const float *rstd,
                              const float *lambda, const float *gamma, float lambda_init, int B,
                              int T, int H, int Hkv, int d, const dt_rope_grads *rope) {
    cpu_diffattn_backward(dq, dk, F(dv), dgamma, dlambda, dout, CF(q), CF(k), CF(v), o1, o2, lse,
                          rstd, lambda, gamma, lambda_init, B, T, H, Hkv, d);
    dt_rope_grads_apply(rope, rope_backward, dq, dk, B, T, 2 * H, 2 * Hkv, d);
}
static void head_scale_forward(dt_operand *out, const dt_operand *inp, const float *s, int N,
                               int H, int w) {
    cpu_head_scale_forward(F(out), CF(inp), s, N, H, w);
}
static void head_scale_backward(float *dinp, float *ds, const float *dout, const dt_operand *inp,
                                const float *s, int N, int H, int w) {
    cpu_head_scale_backward(dinp, ds, dout, CF(inp), s, N, H, w);
}
static void diffv2_combine_forward(dt_operand *out, const dt_operand *attn,
                                   const float *lam_logit, int N, int H, int d) {
    cpu_diffv2_combine_forward(F(out), CF(attn), lam_logit, N, H, d);
}
static void diffv2_combine_backward(float *dattn, float *dlam_logit, const float *dout,
                                    const dt_operand *attn, const float *lam_logit, int N, int H,
                                    int d) {
    cpu_diffv2_combine_backward(dattn, dlam_logit, dout, CF(attn), lam_logit, N, H, d);
}

/* The products read the fp32 weights as they are: nothing to prepare. */
static void weights_prepare_none(const float *const *w, const size_t *n, int count) {
    (void)w, (void)n, (void)count;
}

static const dt_backend cpu_backend = {
    .name = "cpu",
    .operand_bytes = sizeof(float),

    .alloc = cpu_alloc,
    .free = cpu_free,
    .memset_zero = cpu_memset_zero,
    .copy_to_host = cpu_copy_to_host,
    .copy_from_host = cpu_copy_from_host,
    .copy = cpu_copy,
    .synchronize = cpu_synchronize,
    .host_alloc = cpu_host_alloc,
    .host_free = cpu_host_free,
    .copy_from_host_async = cpu_copy_from_host_async,
    .host_wait = cpu_host_wait,

    .matmul_forward = matmul_forward,
    .matmul_backward = matmul_backward,
    .matmul_backward_operand = matmul_backward_operand,
    .matmul_forward_operand = matmul_forward_operand,
    .weights_prepare = weights_prepare_none,
    .add = cpu_add,
    .scale = cpu_scale,
    .sumsq = cpu_sumsq,
    .sumsq_accumulate = cpu_sumsq_accumulate,
    .loss_accumulate = cpu_loss_accumulate,
    .clip_scale = cpu_clip_scale,

    .embedding_forward = cpu_embedding_forward,
    .embedding_backward = cpu_embedding_backward,

    .rmsnorm_forward = rmsnorm_forward,
    .residual_rmsnorm_forward = residual_rmsnorm_forward,
    .rmsnorm_backward = rmsnorm_backward,

    .rope_forward = rope_forward,
    .rope_backward = rope_backward,

    .swiglu_forward = swiglu_forward,
    .swiglu_backward = swiglu_backward,

    .xent_forward = cpu_xent_forward,
    .xent_backward = xent_backward,
    .xent_vp_stats = cpu_xent_vp_stats,
    .xent_vp_rescale = cpu_xent_vp_rescale,
    .xent_vp_finish = cpu_xent_vp_finish,

    .attention_forward = attention_forward,
    .attention_backward = attention_backward,
    .diffattn_forward = diffattn_forward,
    .diffattn_backward = diffattn_backward,
    .difflambda_forward = cpu_difflambda_forward,
    .difflambda_backward = cpu_difflambda_backward,
    .head_scale_forward = head_scale_forward,
    .head_scale_backward = head_scale_backward,
    .diffv2_combine_forward = diffv2_combine_forward,
    .diffv2_combine_backward = diffv2_combine_backward,

    .adamw_update = cpu_adamw_update,
};

const dt_backend *dt_backend_cpu(void) { return &cpu_backend; }
