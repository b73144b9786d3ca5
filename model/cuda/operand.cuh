/* The CUDA backend's dt_operand buffers (model/backend.h): the forward's activations that feed
 * the tensor-core ops (the products' inputs, the attention's q, k, v, SwiGLU's gate and up),
 * stored in the backend's mode (cuda_backend_init): fp32 elements, or bf16 (the high half of the
 * fp32 value rounded to nearest even, as pack_bf16x2, cuBLAS's bf16 inputs and its bf16 C)
 * under "bf16 products", so the products and the fused attention read them as they are and the
 * producers write half the bytes. Internal to model/cuda.
 *
 * A kernel that writes or reads an operand is a template on its element type, float or
 * operand_bf16, and does its math in fp32 either way: it computes the very fp32 value that fp32
 * mode stores and only the store rounds it (operand_store), so a bf16-mode result is the
 * rounding of the fp32-mode one, bit for bit; operand_load widens exactly. The host side picks
 * the instance by cuda_operand_bf16(). */
#ifndef DT_CUDA_OPERAND_CUH
#define DT_CUDA_OPERAND_CUH

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "model/cuda/cuda_common.cuh"
#include "model/cuda/mma.cuh"

typedef uint16_t operand_bf16; /* the bits of a bf16 operand element */

/* 1 when the backend stores operands in bf16 (cuda_backend_init(.., bf16 != 0)), else 0 (fp32;
 * also before any init). backend_cuda.cu. */
bool cuda_operand_bf16(void);

/* x rounded to bf16 (round to nearest even), its bits */
__device__ __forceinline__ operand_bf16 operand_bf16_bits(float x) {
    return (operand_bf16)(pack_bf16x2(x, 0.0f) & 0xffffu);
}

__device__ __forceinline__ float operand_load(const float *p, size_t i) { return p[i]; }
__device__ __forceinline__ float operand_load(const operand_bf16 *p, size_t i) {
    const uint32_t u = (uint32_t)p[i] << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}
__device__ __forceinline__ void operand_store(float *p, size_t i, float x) { p[i] = x; }
__device__ __forceinline__ void operand_store(operand_bf16 *p, size_t i, float x) {
    p[i] = operand_bf16_bits(x);
}
/* p[i], p[i + 1] = x, y (i even, p 8-byte aligned: one 8- or 4-byte store) */
__device__ __forceinline__ void operand_store2(float *p, size_t i, float x, float y) {
    *reinterpret_cast<float2 *>(p + i) = make_float2(x, y);
}
__device__ __forceinline__ void operand_store2(operand_bf16 *p, size_t i, float x, float y) {
    *reinterpret_cast<uint32_t *>(p + i) = pack_bf16x2(x, y);
}

/* p[i .. i + 4) = v (i a multiple of 4, p + i 16-byte aligned in fp32, 8-byte in bf16: one
 * store), each element rounded as operand_store does */
__device__ __forceinline__ void operand_store4(float *p, size_t i, float4 v) {
    *reinterpret_cast<float4 *>(p + i) = v;
}
__device__ __forceinline__ void operand_store4(operand_bf16 *p, size_t i, float4 v) {
    *reinterpret_cast<uint2 *>(p + i) = make_uint2(pack_bf16x2(v.x, v.y), pack_bf16x2(v.z, v.w));
}

/* p[i .. i + 8) into v (i a multiple of 8, p + i 16-byte aligned: one 16-byte load in bf16,
 * two in fp32), widened exactly as operand_load does */
__device__ __forceinline__ void operand_load8(const float *p, size_t i, float v[8]) {
    const float4 a = reinterpret_cast<const float4 *>(p + i)[0];
    const float4 b = reinterpret_cast<const float4 *>(p + i)[1];
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
__device__ __forceinline__ void operand_load8(const operand_bf16 *p, size_t i, float v[8]) {
    const uint4 q = *reinterpret_cast<const uint4 *>(p + i);
    const uint32_t w[4] = {q.x, q.y, q.z, q.w};
    for (int k = 0; k < 4; k++) { /* element 2k in the low half of word k */
        const uint32_t lo = w[k] << 16, hi = w[k] & 0xffff0000u;
        memcpy(&v[2 * k], &lo, sizeof lo);
        memcpy(&v[2 * k + 1], &hi, sizeof hi);
    }
}
/* v into p[i .. i + 8) (alignment as operand_load8), each element rounded as operand_store does */
__device__ __forceinline__ void operand_store8(float *p, size_t i, const float v[8]) {
    reinterpret_cast<float4 *>(p + i)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4 *>(p + i)[1] = make_float4(v[4], v[5], v[6], v[7]);
}
__device__ __forceinline__ void operand_store8(operand_bf16 *p, size_t i, const float v[8]) {
    *reinterpret_cast<uint4 *>(p + i) = make_uint4(pack_bf16x2(v[0], v[1]), pack_bf16x2(v[2], v[3]),
                                                   pack_bf16x2(v[4], v[5]), pack_bf16x2(v[6], v[7]));
}

#endif
