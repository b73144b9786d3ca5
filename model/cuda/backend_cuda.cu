/* The CUDA backend: the dt_backend struct filled with the CUDA ops (model/cuda/cuda_ops.h), and
 * its lifecycle. Checked op by op against the CPU oracle (tests/unit/test_cuda_*.c).
 *
 * Attention under "bf16 products": the fused tensor-core kernels (flash.h) where they handle the
 * head dims and the buffers' alignment and fit the device's shared memory, each of forward and
 * backward on its own, else the tiled fp32 kernels (fp32 mode always keeps the tiled ones). The
 * model's buffers are carved 64-byte aligned, so alignment sends a backward the way of its
 * forward; the shared memory may not (a 99 KiB GPU: standard attention at d = 128 has a fused
 * forward, not a fused backward). Either way the result is right (both paths keep the same lse,
 * o1, o2), only with probabilities recomputed at the other precision.
 *
 * The mode also sets the format of the dt_operand activations (operand.cuh): bf16 under "bf16
 * products", fp32 otherwise; every op that writes or reads one follows cuda_operand_bf16(). The
 * fused attention stages the bf16 q, k, v as they are (no rounding copy). */
#include <stdio.h>

#include "model/cuda/cuda_common.cuh"
#include "model/cuda/cuda_ops.h"
#include "model/cuda/flash.h"
#include "model/cuda/operand.cuh"

extern "C" {
#include "model/backend.h"
}

int cuda_memory_init(void);
void cuda_memory_shutdown(void);
int cuda_matmul_init(int bf16);
void cuda_matmul_shutdown(void);

static dt_backend g_backend;
static int g_device = -1;
static bool g_operand_bf16; /* operand.cuh */

bool cuda_operand_bf16(void) { return g_operand_bf16; }

extern "C" size_t cuda_operand_bytes(void) { return g_operand_bf16 ? 2 : 4; }

/* The fused kernels move 16 bytes at a time: every tensor they stage or store (q, k, v, out and
 * dv in bf16, the fp32 gradients) must be 16-byte aligned, else the tiled kernels run
 * (cuda_flash_usable). */
static void bf16_attention_forward(dt_operand *out, float *lse, const dt_operand *q,
                                   const dt_operand *k, const dt_operand *v, int B, int T, int Hq,
                                   int Hkv, int d, int dv) {
    const void *p[] = {out, q, k, v};
    if (cuda_flash_usable(d, dv, 0, 0, p, 4))
        cuda_flash_attention_forward(out, lse, q, k, v, B, T, Hq, Hkv, d, dv);
    else
        cuda_attention_forward(out, lse, q, k, v, B, T, Hq, Hkv, d, dv);
}

static void tiled_attention_backward(float *dq, float *dk, dt_operand *dv, const float *dout,
                                     const dt_operand *q, const dt_operand *k, const dt_operand *v,
                                     const dt_operand *out, const float *lse, int B, int T, int Hq,
                                     int Hkv, int d, int d_v, const dt_rope_grads *rope) {
    cuda_attention_backward(dq, dk, dv, dout, q, k, v, out, lse, B, T, Hq, Hkv, d, d_v);
    dt_rope_grads_apply(rope, cuda_rope_backward, dq, dk, B, T, Hq, Hkv, d);
}

/* The fused attention takes RoPE's backward into its stores (flash.h): the rotated dq and dk
 * are what it writes, so those are the pointers whose alignment counts (dq and dk when rope is
 * NULL). */
static void bf16_attention_backward(float *dq, float *dk, dt_operand *dv, const float *dout,
                                    const dt_operand *q, const dt_operand *k, const dt_operand *v,
                                    const dt_operand *out, const float *lse, int B, int T, int Hq,
                                    int Hkv, int d, int d_v, const dt_rope_grads *rope) {
    /* out is read by the delta (attn_delta), which has no alignment needs */
    const void *p[] = {q, k, v, rope ? (void *)rope->dq : dq, rope ? (void *)rope->dk : dk, dv,
                       dout};
    if (cuda_flash_usable(d, d_v, 0, 1, p, 7)) {
        cuda_flash_attention_backward(dq, dk, dv, dout, q, k, v, out, lse, B, T, Hq, Hkv, d, d_v,
                                      rope);
    } else {
        tiled_attention_backward(dq, dk, dv, dout, q, k, v, out, lse, B, T, Hq, Hkv, d, d_v, rope);
    }
}

static void bf16_diffattn_forward(dt_operand *out, float *o1, float *o2, float *lse, float *rstd,
                                  const dt_operand *q, const dt_operand *k, const dt_operand *v,
                                  const float *lambda, const float *gamma, float lambda_init,
                                  float eps, int B, int T, int H, int Hkv, int d) {
    const void *p[] = {o1, o2, q, k, v, out};
    if (cuda_flash_usable(d, 2 * d, 1, 0, p, 6))
        cuda_flash_diffattn_forward(out, o1, o2, lse, rstd, q, k, v, lambda, gamma, lambda_init,
                                    eps, B, T, H, Hkv, d);
    else
        cuda_diffattn_forward(out, o1, o2, lse, rstd, q, k, v, lambda, gamma, lambda_init, eps, B,
                              T, H, Hkv, d);
}

static void tiled_diffattn_backward(float *dq, float *dk, dt_operand *dv, float *dgamma,
                                    float *dlambda, const float *dout, const dt_operand *q,
                                    const dt_operand *k, const dt_operand *v, const float *o1,
                                    const float *o2, const float *lse, const float *rstd,
                                    const float *lambda, const float *gamma, float lambda_init,
                                    int B, int T, int H, int Hkv, int d,
                                    const dt_rope_grads *rope) {
    cuda_diffattn_backward(dq, dk, dv, dgamma, dlambda, dout, q, k, v, o1, o2, lse, rstd, lambda,
                           gamma, lambda_init, B, T, H, Hkv, d);
    dt_rope_grads_apply(rope, cuda_rope_backward, dq, dk, B, T, 2 * H, 2 * Hkv, d);
}

static void bf16_diffattn_backward(float *dq, float *dk, dt_operand *dv, float *dgamma,
                                   float *dlambda, const float *dout, const dt_operand *q,
                                   const dt_operand *k, const dt_operand *v, const float *o1,
                                   const float *o2, const float *lse, const float *rstd,
                                   const float *lambda, const float *gamma, float lambda_init,
                                   int B, int T, int H, int Hkv, int d,
                                   const dt_rope_grads *rope) {
    const void *p[] = {q, k, v, rope ? (void *)rope->dq : dq, rope ? (void *)rope->dk : dk, dv};
    if (cuda_flash_usable(d, 2 * d, 1, 1, p, 6))
        cuda_flash_diffattn_backward(dq, dk, dv, dgamma, dlambda, dout, q, k, v, o1, o2, lse,
                                     rstd, lambda, gamma, lambda_init, B, T, H, Hkv, d, rope);
    else
        tiled_diffattn_backward(dq, dk, dv, dgamma, dlambda, dout, q, k, v, o1, o2, lse, rstd,
                                lambda, gamma, lambda_init, B, T, H, Hkv, d, rope);
}

static void fill(dt_backend *b, int bf16) {
    b->name = bf16 ? "cuda (bf16 products)" : "cuda";
    b->operand_bytes = bf16 ? 2 : 4;
    b->alloc = cuda_alloc;
    b->free = cuda_free;
    b->memset_zero = cuda_memset_zero;
    b->copy_to_host = cuda_copy_to_host;
    b->copy_from_host = cuda_copy_from_host;
    b->copy = cuda_copy;
    b->synchronize = cuda_synchronize;
    b->host_alloc = cuda_host_alloc;
    b->host_free = cuda_host_free;
    b->copy_from_host_async = cuda_copy_from_host_async;
    b->host_wait = cuda_host_wait;
    b->matmul_forward = cuda_matmul_forward;
    b->matmul_forward_operand = cuda_matmul_forward_operand;
    b->matmul_backward = cuda_matmul_backward;
    b->matmul_backward_operand = cuda_matmul_backward_operand;
    b->weights_prepare = cuda_weights_prepare;
    b->add = cuda_add;
    b->scale = cuda_scale;
    b->sumsq = cuda_sumsq;
    b->sumsq_accumulate = cuda_sumsq_accumulate;
    b->loss_accumulate = cuda_loss_accumulate;
    b->clip_scale = cuda_clip_scale;
    b->embedding_forward = cuda_embedding_forward;
    b->embedding_backward = cuda_embedding_backward;
    b->rmsnorm_forward = cuda_rmsnorm_forward;
    b->residual_rmsnorm_forward = cuda_residual_rmsnorm_forward;
    b->rmsnorm_backward = cuda_rmsnorm_backward;
    b->rope_forward = cuda_rope_forward;
    b->rope_backward = cuda_rope_backward;
    b->swiglu_forward = cuda_swiglu_forward;
    b->swiglu_backward = cuda_swiglu_backward;
    b->xent_forward = cuda_xent_forward;
    b->xent_backward = cuda_xent_backward;
    b->xent_vp_stats = cuda_xent_vp_stats;
    b->xent_vp_rescale = cuda_xent_vp_rescale;
    b->xent_vp_finish = cuda_xent_vp_finish;
    b->attention_forward = bf16 ? bf16_attention_forward : cuda_attention_forward;
    b->attention_backward = bf16 ? bf16_attention_backward : tiled_attention_backward;
    b->diffattn_forward = bf16 ? bf16_diffattn_forward : cuda_diffattn_forward;
    b->diffattn_backward = bf16 ? bf16_diffattn_backward : tiled_diffattn_backward;
    b->difflambda_forward = cuda_difflambda_forward;
    b->difflambda_backward = cuda_difflambda_backward;
    b->head_scale_forward = cuda_head_scale_forward;
    b->head_scale_backward = cuda_head_scale_backward;
    b->diffv2_combine_forward = cuda_diffv2_combine_forward;
    b->diffv2_combine_backward = cuda_diffv2_combine_backward;
    b->adamw_update = cuda_adamw_update;
    b->graph_begin = cuda_graph_begin;
    b->graph_end = cuda_graph_end;
    b->graph_launch = cuda_graph_launch;
    b->graph_free = cuda_graph_free;
}

extern "C" int cuda_backend_init(int device, int bf16) {
    if (g_device >= 0 && g_device != device) {
        fprintf(stderr, "difftrain: error: CUDA backend already bound to device %d, asked for "
                "%d\n", g_device, device);
        return -1;
    }
    cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess) {
        fprintf(stderr, "difftrain: error: CUDA: cannot use device %d: %s\n", device,
                cudaGetErrorString(e));
        (void)cudaGetLastError();
        return -1;
    }
    if (cuda_memory_init() != 0 || cuda_matmul_init(bf16) != 0) return -1;
    g_device = device;
    g_operand_bf16 = bf16 != 0;
    fill(&g_backend, bf16);
    return 0;
}

extern "C" void cuda_backend_shutdown(void) {
    if (g_device < 0) return;
    (void)cudaStreamSynchronize(cuda_stream());
    cuda_matmul_shutdown();
    cuda_memory_shutdown();
    g_device = -1;
}

extern "C" const dt_backend *dt_backend_cuda(void) { return g_device >= 0 ? &g_backend : NULL; }
