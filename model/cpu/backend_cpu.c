/* The CPU backend: fp32 C, OpenBLAS for products, OpenMP across rows and elements. It is the
 * reference every other backend is tested against (STYLE: llm.c, ggml). */
#include "model/backend.h"
#include "model/cpu/cpu_ops.h"

/* TEMP (CUDA branch only, dropped at merge): fp32 operands cast to float until the CPU backend
 * takes dt_operand itself. */
#define F(p) ((float *)(p))
#define CF(p) ((const float *)(p))
static void w_matmul_forward(float *out, const dt_operand *inp, const float *w, int N, int I,
                             int O, int acc) {
    cpu_matmul_forward(out, CF(inp), w, N, I, O, acc);
}
static void w_matmul_backward(float *dinp, float *dw, const float *dout, const dt_operand *inp,
                              const float *w, int N, int I, int O, int acc) {
    cpu_matmul_backward(dinp, dw, dout, CF(inp), w, N, I, O, acc);
}
static void w_rmsnorm_forward(dt_operand *out, float *rstd, const float *inp, const float *wt,
                              int N, int C, float eps) {
    cpu_rmsnorm_forward(F(out), rstd, inp, wt, N, C, eps);
}
static void w_residual_rmsnorm_forward(float *y, dt_operand *out, float *rstd, const float *a,
                                       const float *b, const float *wt, int N, int C, float eps) {
    cpu_residual_rmsnorm_forward(y, F(out), rstd, a, b, wt, N, C, eps);
}
static void w_swiglu_forward(dt_operand *h, const float *g, const float *u, size_t n) {
    cpu_swiglu_forward(F(h), g, u, n);
}
static void w_attention_forward(dt_operand *out, float *lse, const float *q, const float *k,
                                const float *v, int B, int T, int Hq, int Hkv, int d, int dv) {
    cpu_attention_forward(F(out), lse, q, k, v, B, T, Hq, Hkv, d, dv);
}
static void w_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                                 const float *q, const float *k, const float *v,
                                 const dt_operand *out, const float *lse, int B, int T, int Hq,
                                 int Hkv, int d, int d_v) {
    cpu_attention_backward(dq, dk, dv, dout, q, k, v, CF(out), lse, B, T, Hq, Hkv, d, d_v);
}
static void w_diffattn_forward(dt_operand *out, float *o1, float *o2, float *lse, float *rstd,
                               const float *q, const float *k, const float *v,
                               const float *lambda, const float *gamma, float li, float eps,
                               int B, int T, int H, int Hkv, int d) {
    cpu_diffattn_forward(F(out), o1, o2, lse, rstd, q, k, v, lambda, gamma, li, eps, B, T, H,
                         Hkv, d);
}
static void w_head_scale_forward(dt_operand *out, const dt_operand *inp, const float *s, int N,
                                 int H, int w) {
    cpu_head_scale_forward(F(out), CF(inp), s, N, H, w);
}
static void w_head_scale_backward(float *dinp, float *ds, const float *dout,
                                  const dt_operand *inp, const float *s, int N, int H, int w) {
    cpu_head_scale_backward(dinp, ds, dout, CF(inp), s, N, H, w);
}
static void w_diffv2_combine_forward(dt_operand *out, const dt_operand *attn, const float *l,
                                     int N, int H, int d) {
    cpu_diffv2_combine_forward(F(out), CF(attn), l, N, H, d);
}
static void w_diffv2_combine_backward(float *dattn, float *dl, const float *dout,
                                      const dt_operand *attn, const float *l, int N, int H,
                                      int d) {
    cpu_diffv2_combine_backward(dattn, dl, dout, CF(attn), l, N, H, d);
}

static const dt_backend cpu_backend = {
    .name = "cpu",
    .operand_bytes = 4,

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

    .matmul_forward = w_matmul_forward,
    .matmul_backward = w_matmul_backward,
    .add = cpu_add,
    .scale = cpu_scale,
    .sumsq = cpu_sumsq,
    .sumsq_accumulate = cpu_sumsq_accumulate,
    .loss_accumulate = cpu_loss_accumulate,
    .clip_scale = cpu_clip_scale,

    .embedding_forward = cpu_embedding_forward,
    .embedding_backward = cpu_embedding_backward,

    .rmsnorm_forward = w_rmsnorm_forward,
    .residual_rmsnorm_forward = w_residual_rmsnorm_forward,
    .rmsnorm_backward = cpu_rmsnorm_backward,

    .rope_forward = cpu_rope_forward,
    .rope_backward = cpu_rope_backward,

    .swiglu_forward = w_swiglu_forward,
    .swiglu_backward = cpu_swiglu_backward,

    .xent_forward = cpu_xent_forward,
    .xent_backward = cpu_xent_backward,
    .xent_vp_max = cpu_xent_vp_max,
    .xent_vp_sums = cpu_xent_vp_sums,
    .xent_vp_finish = cpu_xent_vp_finish,

    .attention_forward = w_attention_forward,
    .attention_backward = w_attention_backward,
    .diffattn_forward = w_diffattn_forward,
    .diffattn_backward = cpu_diffattn_backward,
    .difflambda_forward = cpu_difflambda_forward,
    .difflambda_backward = cpu_difflambda_backward,
    .head_scale_forward = w_head_scale_forward,
    .head_scale_backward = w_head_scale_backward,
    .diffv2_combine_forward = w_diffv2_combine_forward,
    .diffv2_combine_backward = w_diffv2_combine_backward,

    .adamw_update = cpu_adamw_update,
};

const dt_backend *dt_backend_cpu(void) { return &cpu_backend; }
