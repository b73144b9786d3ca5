/* The fused (flash) attention ops on bf16 tensor cores (flash_*.cu, flash_core.cuh): the same
 * contracts as cuda_attention_* and cuda_diffattn_* (model/backend.h; lse per row and branch,
 * o1/o2 kept in fp32, subln, lambda from device memory, dgamma/dlambda accumulated, fp32 dq and
 * dk or, given rope, RoPE's backward taken into their stores), with the matrix products in bf16
 * (bf16 inputs and probabilities, fp32 accumulation and softmax statistics). The CUDA backend
 * uses them under "bf16 products" where
 * cuda_flash_usable says so, and the tiled kernels otherwise. They are that mode's: q, k, v, out
 * and dv are dt_operands in bf16 (q, k, v staged by the kernels as they are; out written by the
 * forward and read by the standard backward's delta; dv rounded from its fp32 sums as stored),
 * and each op aborts unless the backend is in bf16 mode (cuda_operand_bytes() == 2).
 * Deterministic: reruns are bit-identical. Two sets of kernels: on mma.sync (flash_forward.cu,
 * flash_backward.cu), the default, and on warpgroup products (wgmma, flash_*_sm90.cu) where the
 * build has sm_90a code, the device is an H100/H200 and DIFFTRAIN_FLASH_SM90=1 asks for them
 * (flash_sm90_usable, flash_core.cuh). */
#ifndef DT_CUDA_FLASH_H
#define DT_CUDA_FLASH_H

typedef struct dt_operand dt_operand;       /* model/backend.h */
typedef struct dt_rope_grads dt_rope_grads; /* model/backend.h */

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when the fused kernels handle the forward (backward != 0: the backward) of head dim d with
 * value width dv (d in 64, 96, 128; dv = d for standard attention, 2d for DIFF V1 when
 * diff != 0) on this device, and each of the n pointers (NULL allowed) is 16-byte aligned; 0
 * otherwise. The kernels move 16 bytes at a time from the start of every row of a head they
 * stage: with d a multiple of 8, every such start of a bf16 q, k, v (and of the fp32 tensors)
 * is 16-byte aligned exactly when the tensor's base is. On this device: some kernel for each
 * step fits the shared memory a block may have (flash_smem.cu). Every one does on an H100 or
 * H200, and on an A100 (one K/V stage instead of two where two do not fit); on a GPU with 99
 * KiB (L40S, RTX 4090) neither DIFF V1 at d = 128 nor its backward at d = 96, nor the standard
 * backward at d = 128. */
int cuda_flash_usable(int d, int dv, int diff, int backward, const void *const *ptrs, int n);

void cuda_flash_attention_forward(dt_operand *out, float *lse, const dt_operand *q,
                                  const dt_operand *k, const dt_operand *v, int B, int T, int Hq,
                                  int Hkv, int d, int dv);
void cuda_flash_attention_backward(float *dq, float *dk, dt_operand *dv, const float *dout,
                                   const dt_operand *q, const dt_operand *k, const dt_operand *v,
                                   const dt_operand *out, const float *lse, int B, int T, int Hq,
                                   int Hkv, int d, int d_v, const dt_rope_grads *rope);
void cuda_flash_diffattn_forward(dt_operand *out, float *o1, float *o2, float *lse, float *rstd,
                                 const dt_operand *q, const dt_operand *k, const dt_operand *v,
                                 const float *lambda, const float *gamma, float lambda_init,
                                 float eps, int B, int T, int H, int Hkv, int d);
void cuda_flash_diffattn_backward(float *dq, float *dk, dt_operand *dv, float *dgamma,
                                  float *dlambda, const float *dout, const dt_operand *q,
                                  const dt_operand *k, const dt_operand *v, const float *o1,
                                  const float *o2, const float *lse, const float *rstd,
                                  const float *lambda, const float *gamma, float lambda_init,
                                  int B, int T, int H, int Hkv, int d, const dt_rope_grads *rope);

#ifdef __cplusplus
}
#endif

#endif
