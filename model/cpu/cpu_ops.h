/* Prototypes of the CPU backend ops (fp32, OpenBLAS for products, OpenMP elsewhere).
 * Each is documented at its function pointer in model/backend.h; backend_cpu.c fills the
 * dt_backend struct with them. */
#ifndef DT_CPU_OPS_H
#define DT_CPU_OPS_H

#include <stddef.h>
#include <stdint.h>

void *cpu_alloc(size_t bytes);
void cpu_free(void *p);
void cpu_memset_zero(void *p, size_t bytes);
void cpu_copy_to_host(void *dst_host, const void *src, size_t bytes);
void cpu_copy_from_host(void *dst, const void *src_host, size_t bytes);
void cpu_copy(void *dst, const void *src, size_t bytes);
void cpu_synchronize(void);
void *cpu_host_alloc(size_t bytes);
void cpu_host_free(void *p);
void cpu_copy_from_host_async(void *dst, const void *src_host, size_t bytes);
void cpu_host_wait(const void *p);
void cpu_matmul_forward(float *out, const float *inp, const float *w, int N, int I, int O, int accumulate);
void cpu_matmul_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w, int N, int I, int O, int accumulate_dinp);
void cpu_matmul_backward_ld(float *dinp, float *dw, const float *dout, int ldd, const float *inp, const float *w, int N, int I, int O, int accumulate_dinp);
void cpu_add(float *out, const float *a, const float *b, size_t n);
void cpu_scale(float *x, float s, size_t n);
double cpu_sumsq(const float *x, size_t n);
void cpu_sumsq_accumulate(double *acc, const float *x, size_t n);
void cpu_loss_accumulate(double *acc, const float *losses, int N, const int32_t *n_targets);
void cpu_clip_scale(float *grad_scale, const double *sumsq, const double *loss_sum, double max_norm);
void cpu_embedding_forward(float *out, const int32_t *tokens, const float *wte, int N, int D, int v0, int nv);
void cpu_embedding_backward(float *dwte, const float *dout, const int32_t *tokens, int N, int D, int v0, int nv);
void cpu_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C, float eps);
void cpu_residual_rmsnorm_forward(float *y, float *out, float *rstd, const float *a, const float *b, const float *weight, int N, int C, float eps);
void cpu_rmsnorm_backward(float *dinp, float *dinp_copy, float *dweight, const float *dout, const float *inp, const float *weight, const float *rstd, int N, int C);
void cpu_rope_forward(float *out, const float *inp, int B, int T, int n_heads, int d, float theta, int pos0);
void cpu_rope_backward(float *dinp, const float *dout, int B, int T, int n_heads, int d, float theta, int pos0);
void cpu_swiglu_forward(float *h, const float *g, const float *u, size_t rows, size_t cols, size_t ld);
void cpu_swiglu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, size_t rows, size_t cols, size_t ld);
void cpu_xent_forward(float *losses, float *lse, const float *logits, const int32_t *targets, int N, int V);
void cpu_xent_backward(float *dlogits, int ldd, const float *logits, const float *lse, const int32_t *targets, float dloss_scale, const int32_t *n_targets, int N, int V);
void cpu_xent_vp_stats(float *rowmax, float *sums, const float *logits, const int32_t *targets, int N, int V);
void cpu_xent_vp_rescale(float *sums, const float *rowmax, const float *gmax, int N);
void cpu_xent_vp_finish(float *losses, float *lse, const float *rowmax, const float *sums, const int32_t *targets, int N);
void cpu_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T, int Hq, int Hkv, int d, int dv);
void cpu_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k, const float *v, const float *out, const float *lse, int B, int T, int Hq, int Hkv, int d, int d_v);
void cpu_diffattn_forward(float *out, float *o1, float *o2, float *lse, float *rstd, const float *q, const float *k, const float *v, const float *lambda, const float *gamma, float lambda_init, float eps, int B, int T, int H, int Hkv, int d);
void cpu_diffattn_backward(float *dq, float *dk, float *dv, float *dgamma, float *dlambda, const float *dout, const float *q, const float *k, const float *v, const float *o1, const float *o2, const float *lse, const float *rstd, const float *lambda, const float *gamma, float lambda_init, int B, int T, int H, int Hkv, int d);
void cpu_difflambda_forward(float *lambda, const float *lq1, const float *lk1, const float *lq2, const float *lk2, float lambda_init, int d);
void cpu_difflambda_backward(float *dlq1, float *dlk1, float *dlq2, float *dlk2, const float *dlambda, const float *lq1, const float *lk1, const float *lq2, const float *lk2, int d);
void cpu_head_scale_forward(float *out, const float *inp, const float *s, int N, int H, int w);
void cpu_head_scale_backward(float *dinp, float *ds, const float *dout, const float *inp, const float *s, int N, int H, int w);
void cpu_diffv2_combine_forward(float *out, const float *attn, const float *lam_logit, int N, int H, int d);
void cpu_diffv2_combine_backward(float *dattn, float *dlam_logit, const float *dout, const float *attn, const float *lam_logit, int N, int H, int d);
void cpu_adamw_update(float *params, float *m, float *v, const float *grads, size_t n, float lr, float beta1, float beta2, float eps, float weight_decay, const float *grad_scale, int t);

/* Threads of the CPU backend (OpenMP and OpenBLAS); n >= 1. */
void cpu_set_threads(int n);

#endif
