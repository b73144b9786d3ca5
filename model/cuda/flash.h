/* The fused (flash) attention ops on bf16 tensor cores (flash_*.cu, flash_core.cuh): the same
 * contracts as cuda_attention_* and cuda_diffattn_* (model/backend.h; fp32 buffers, lse per row
 * and branch, o1/o2 kept, subln, lambda from device memory, dgamma/dlambda accumulated), with
 * the matrix products in bf16 (inputs and probabilities rounded to bf16, fp32 accumulation and
 * softmax statistics). The CUDA backend uses them under "bf16 products" where
 * cuda_flash_usable says so, and the tiled fp32 kernels otherwise. They are that mode's: out, a
 * dt_operand, is bf16 (written by the forward, read by the standard backward's delta), and each
 * op aborts unless the backend is in bf16 mode (cuda_operand_bytes() == 2). Deterministic:
 * reruns are bit-identical. */
#ifndef DT_CUDA_FLASH_H
#define DT_CUDA_FLASH_H

typedef struct dt_operand dt_operand; /* model/backend.h */

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when the fused kernels handle head dim d with value width dv (d in 64, 96, 128; dv = d for
 * standard attention, 2d for DIFF V1 when diff != 0) and each of the n pointers (NULL allowed)
 * is 16-byte aligned (the kernels move 16 bytes at a time); 0 otherwise. */
int cuda_flash_usable(int d, int dv, int diff, const void *const *ptrs, int n);

void cuda_flash_attention_forward(dt_operand *out, float *lse, const float *q, const float *k,
                                  const float *v, int B, int T, int Hq, int Hkv, int d, int dv);
void cuda_flash_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                                   const float *q, const float *k, const float *v,
                                   const dt_operand *out, const float *lse, int B, int T, int Hq,
                                   int Hkv, int d, int d_v);
void cuda_flash_diffattn_forward(dt_operand *out, float *o1, float *o2, float *lse, float *rstd,
                                 const float *q, const float *k, const float *v,
                                 const float *lambda, const float *gamma, float lambda_init,
                                 float eps, int B, int T, int H, int Hkv, int d);
void cuda_flash_diffattn_backward(float *dq, float *dk, float *dv, float *dgamma, float *dlambda,
                                  const float *dout, const float *q, const float *k,
                                  const float *v, const float *o1, const float *o2,
                                  const float *lse, const float *rstd, const float *lambda,
                                  const float *gamma, float lambda_init, int B, int T, int H,
                                  int Hkv, int d);

#ifdef __cplusplus
}
#endif

#endif
