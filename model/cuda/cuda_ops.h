/* Prototypes of the CUDA backend ops. Each is documented at its function pointer in
 * model/backend.h (same arguments, same semantics, same accumulate/overwrite rules as the CPU
 * oracle); pointers are device pointers, except where backend.h says "host". backend_cuda.cu
 * fills the dt_backend struct with them. Every op enqueues on cuda_stream() and returns. */
#ifndef DT_CUDA_OPS_H
#define DT_CUDA_OPS_H

#include <stddef.h>
#include <stdint.h>

/* An activation of the forward that feeds the tensor-core ops (model/backend.h): a product's
 * input, the attention's q, k, v, SwiGLU's gate and up; or a gradient only products read
 * (SwiGLU's dg, du, the attention's dv, rope_backward's dinp); fp32 or bf16 elements, as the
 * backend's mode says (cuda_operand_bytes). */
typedef struct dt_operand dt_operand;
typedef struct dt_graph dt_graph;

#ifdef __cplusplus
extern "C" {
#endif

/* ---- lifecycle (backend_cuda.cu, memory.cu) ---- */
/* Selects `device`, creates the compute stream and the cuBLAS handle. bf16 != 0: matrix
 * products run on bf16 tensor cores (inputs rounded to bf16, fp32 accumulation and storage)
 * and the dt_operand activations are stored in bf16; 0: fp32 products (no TF32) and fp32
 * operands. Returns 0, or -1 after printing why (no device, out of memory, cuBLAS failure).
 * Idempotent for the same device; calling it again with the other bf16 switches the mode (for
 * the ops queued afterwards; buffers written before keep their format). */
int cuda_backend_init(int device, int bf16);
/* Bytes per dt_operand element in the current mode: 2 (bf16) or 4 (fp32; also before init). */
size_t cuda_operand_bytes(void);
void cuda_backend_shutdown(void);
/* The most bytes of device memory ever in use by the backend's allocations (alloc and the
 * workspace): for the memory check against `difftrain plan`. */
size_t cuda_bytes_peak(void);
/* Device memory in use on the bound GPU now, by every allocator and process (cudaMemGetInfo:
 * total minus free): the CUDA context, cuBLAS's and NCCL's buffers included. 0 on an error. */
size_t cuda_device_bytes_used(void);
/* The compute stream as a cudaStream_t passed as void * (for C code without CUDA headers, e.g.
 * the NCCL collectives that order themselves after the model's kernels). */
void *cuda_stream_handle(void);
/* The backend struct (model/backend.h) after cuda_backend_init; NULL before. */
struct dt_backend;
const struct dt_backend *dt_backend_cuda(void);

/* ---- the bf16 copies of the weight matrices (weight_copies.cu; model/backend.h:
 * weights_prepare) ---- */
void cuda_weights_prepare(const float *const *w, const size_t *n, int count);
/* Matrices copied by the prepares so far (a prepare that found its copies current adds none) */
unsigned long long cuda_weights_copies_made(void);
/* The prepared copy of the weight at w, span elements from w inside one prepared matrix (16-byte
 * aligned), or NULL: no valid copy holds it, and the product rounds w itself. */
const void *cuda_weights_bf16(const float *w, size_t span);
/* Every backend op that writes device memory [p, p + bytes) calls this first: the copies are
 * dropped when it overlaps the prepared matrices. */
void cuda_weights_written(const void *p, size_t bytes);
/* Drops the copies (their memory is going, or the mode changes: cuda_matmul_init). */
void cuda_weights_drop(void);
/* dst[i][0 .. n[i]) = the bf16 rounding (to nearest even) of src[i][0 .. n[i]), for count
 * arrays (src[i] NULL: none; dst[i] 16-byte aligned, src[i] any float), on the stream: one
 * launch per 32 arrays. The prepares' copies and the products' own (matmul.cu). 0 (nothing
 * launched from the batch on) where a batch's blocks exceed a grid, else 1. */
int cuda_bf16_copies(uint16_t *const *dst, const float *const *src, const size_t *n, int count);

void *cuda_alloc(size_t bytes);
void cuda_free(void *p);
void cuda_memset_zero(void *p, size_t bytes);
void cuda_copy_to_host(void *dst_host, const void *src, size_t bytes);
void cuda_copy_from_host(void *dst, const void *src_host, size_t bytes);
void cuda_copy(void *dst, const void *src, size_t bytes);
void cuda_synchronize(void);
void *cuda_host_alloc(size_t bytes);
void cuda_host_free(void *p);
void cuda_copy_from_host_async(void *dst, const void *src_host, size_t bytes);
void cuda_host_wait(const void *p);
/* Host-blocking calls made so far (memory.cu): stream and device synchronisations, copy_to_host,
 * copy_from_host, sumsq, alloc and free. A training step makes exactly one (its read-back). */
unsigned long long cuda_sync_count(void);
/* host_wait calls that found the buffer's copy still queued and waited for it (back-pressure
 * of the host running ahead, counted apart from the synchronisations). */
unsigned long long cuda_staging_wait_count(void);
/* memory.cu, for graph.cu: whether a capture of the compute stream is active, set and read
 * (copies from staging buffers then record no event, a workspace that would grow aborts, and a
 * failed CUDA call's message names the recording); and the count of
 * workspace allocations so far, which changes whenever a workspace moves. */
void cuda_set_capturing(int on);
int cuda_capturing(void);
unsigned long long cuda_workspace_generation(void);

/* ---- CUDA graphs of the compute stream (graph.cu; model/backend.h graph_begin ..) ---- */
int cuda_graph_begin(void);
dt_graph *cuda_graph_end(void);
int cuda_graph_launch(dt_graph *g);
void cuda_graph_free(dt_graph *g);

/* ---- dense algebra (matmul.cu: cuBLAS; elementwise.cu) ---- */
void cuda_matmul_forward(float *out, const dt_operand *inp, const float *w, int N, int I, int O, int accumulate);
void cuda_matmul_forward_operand(dt_operand *out, const dt_operand *inp, const float *w, int N, int I, int O);
void cuda_matmul_backward(float *dinp, float *dw, const float *dout, const dt_operand *inp, const float *w, int N, int I, int O, int accumulate_dinp);
void cuda_matmul_backward_operand(float *dinp, float *dw, const dt_operand *dout, int ldd, const dt_operand *inp, const float *w, int N, int I, int O, int accumulate_dinp);
void cuda_add(float *out, const float *a, const float *b, size_t n);
void cuda_scale(float *x, float s, size_t n);
double cuda_sumsq(const float *x, size_t n);
void cuda_sumsq_accumulate(double *acc, const float *x, size_t n);

/* ---- the training step's scalars (step_scalars.cu) ---- */
void cuda_loss_accumulate(double *acc, const float *losses, int N, const int32_t *n_targets);
void cuda_clip_scale(float *grad_scale, const double *sumsq, const double *loss_sum, double max_norm);

/* ---- token and norm ops ---- */
void cuda_embedding_forward(float *out, const int32_t *tokens, const float *wte, int N, int D, int v0, int nv);
void cuda_embedding_backward(float *dwte, const float *dout, const int32_t *tokens, int N, int D, int v0, int nv);
void cuda_rmsnorm_forward(dt_operand *out, float *rstd, const float *inp, const float *weight, int N, int C, float eps);
void cuda_residual_rmsnorm_forward(float *y, dt_operand *out, float *rstd, const float *a, const float *b, const float *weight, int N, int C, float eps);
void cuda_rmsnorm_backward(float *dinp, dt_operand *dinp_operand, float *dweight, const float *dout, const float *inp, const float *weight, const float *rstd, int N, int C);
void cuda_rope_forward(dt_operand *out, const dt_operand *inp, int B, int T, int n_heads, int d, float theta, int pos0);
void cuda_rope_backward(dt_operand *dinp, const float *dout, int B, int T, int n_heads, int d, float theta, int pos0);
void cuda_swiglu_forward(dt_operand *h, const dt_operand *g, const dt_operand *u, size_t rows, size_t cols, size_t ld);
void cuda_swiglu_backward(dt_operand *dg, dt_operand *du, const float *dh, const dt_operand *g, const dt_operand *u, size_t rows, size_t cols, size_t ld);

/* ---- cross-entropy ---- */
void cuda_xent_forward(float *losses, float *lse, const float *logits, const int32_t *targets, int N, int V);
void cuda_xent_backward(dt_operand *dlogits, int ldd, const float *logits, const float *lse, const int32_t *targets, float dloss_scale, const int32_t *n_targets, int N, int V);
void cuda_xent_vp_stats(float *rowmax, float *sums, const float *logits, const int32_t *targets, int N, int V);
void cuda_xent_vp_rescale(float *sums, const float *rowmax, const float *gmax, int N);
void cuda_xent_vp_finish(float *losses, float *lse, const float *rowmax, const float *sums, const int32_t *targets, int N);

/* ---- attention ---- */
void cuda_attention_forward(dt_operand *out, float *lse, const dt_operand *q, const dt_operand *k, const dt_operand *v, int B, int T, int Hq, int Hkv, int d, int dv);
void cuda_attention_backward(float *dq, float *dk, dt_operand *dv, const float *dout, const dt_operand *q, const dt_operand *k, const dt_operand *v, const dt_operand *out, const float *lse, int B, int T, int Hq, int Hkv, int d, int d_v);
void cuda_diffattn_forward(dt_operand *out, float *o1, float *o2, float *lse, float *rstd, const dt_operand *q, const dt_operand *k, const dt_operand *v, const float *lambda, const float *gamma, float lambda_init, float eps, int B, int T, int H, int Hkv, int d);
void cuda_diffattn_backward(float *dq, float *dk, dt_operand *dv, float *dgamma, float *dlambda, const float *dout, const dt_operand *q, const dt_operand *k, const dt_operand *v, const float *o1, const float *o2, const float *lse, const float *rstd, const float *lambda, const float *gamma, float lambda_init, int B, int T, int H, int Hkv, int d);
void cuda_difflambda_forward(float *lambda, const float *lq1, const float *lk1, const float *lq2, const float *lk2, float lambda_init, int d);
void cuda_difflambda_backward(float *dlq1, float *dlk1, float *dlq2, float *dlk2, const float *dlambda, const float *lq1, const float *lk1, const float *lq2, const float *lk2, int d);
void cuda_head_scale_forward(dt_operand *out, const dt_operand *inp, const float *s, int N, int H, int w);
void cuda_head_scale_backward(float *dinp, float *ds, const float *dout, const dt_operand *inp, const float *s, int N, int H, int w);
void cuda_diffv2_combine_forward(dt_operand *out, const dt_operand *attn, const float *lam_logit, int N, int H, int d);
void cuda_diffv2_combine_backward(float *dattn, float *dlam_logit, const float *dout, const dt_operand *attn, const float *lam_logit, int N, int H, int d);

/* ---- optimizer ---- */
void cuda_adamw_update(float *params, float *m, float *v, const float *grads, size_t n, float lr, float beta1, float beta2, float eps, float weight_decay, const float *grad_scale, int t);

#ifdef __cplusplus
}
#endif

#endif
