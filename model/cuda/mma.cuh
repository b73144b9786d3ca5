/* Tensor-core instructions used by the fused attention (flash_*.cu): one device function per PTX
 * instruction, sm_80 and later. Internal to model/cuda.
 *
 * Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"), per
 * lane with g = lane >> 2 (groupID) and t = lane % 4 (threadID_in_group); a .b32 register holds
 * two bf16, the lower column (or row, for B) in its low 16 bits:
 *   A (16 x 16, row-major)  a[0] = A[g][2t, 2t+1]    a[1] = A[g+8][2t, 2t+1]
 *                           a[2] = A[g][2t+8, 2t+9]  a[3] = A[g+8][2t+8, 2t+9]
 *   B (16 x 8, "col")       b[0] = B[2t, 2t+1][g]    b[1] = B[2t+8, 2t+9][g]
 *   C, D (16 x 8, fp32)     c[0], c[1] = C[g][2t, 2t+1]   c[2], c[3] = C[g+8][2t, 2t+1]
 * So the accumulator of S = Q K^T over keys 16k..16k+15 (two n8 tiles) is, after rounding to
 * bf16 pairs, exactly the A fragment of P for the next product P V (flash_c_to_a in
 * flash_core.cuh).
 *
 * ldmatrix.m8n8.x4 loads four 8 x 8 bf16 matrices from shared memory: lanes 8i..8i+7 give the
 * addresses of rows 0..7 of matrix i (16 bytes each, 16-byte aligned); r[i] of lane l receives
 * M_i[l/4][2(l%4), 2(l%4)+1], or with .trans M_i[2(l%4), 2(l%4)+1][l/4].
 *
 * Under the host emulator (tests/emu, which defines DT_CUDA_EMULATOR) each function is a
 * warp-collective software version with exactly these layouts (tests/emu/emu_mma.cpp, checked by
 * emu_selftest): all 32 lanes must reach it at the same call site, and a kernel that keeps an
 * element in the wrong register gets a wrong product there as it would on a GPU. */
#ifndef DT_CUDA_MMA_CUH
#define DT_CUDA_MMA_CUH

#include <stdint.h>

#ifndef DT_CUDA_EMULATOR
#include <cuda_bf16.h>
#endif

#include "model/cuda/cuda_common.cuh"

#ifdef DT_CUDA_EMULATOR

/* d (16 x 8 fp32) += a (16 x 16 bf16) * b (16 x 8 bf16): mma.sync.aligned.m16n8k16.row.col */
__device__ __forceinline__ void mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2],
                                               const char *file = __builtin_FILE(),
                                               int line = __builtin_LINE()) {
    emu_mma_bf16_m16n8k16(d, a, b, file, line);
}
/* ldmatrix.sync.aligned.m8n8.x4.shared.b16 */
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void *row,
                                            const char *file = __builtin_FILE(),
                                            int line = __builtin_LINE()) {
    emu_ldmatrix_x4(r, row, 0, file, line);
}
/* ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 */
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void *row,
                                                  const char *file = __builtin_FILE(),
                                                  int line = __builtin_LINE()) {
    emu_ldmatrix_x4(r, row, 1, file, line);
}
/* bf16 round to nearest even of x (NaN stays a quiet NaN), as cvt.rn.bf16.f32 */
static inline uint32_t emu_bf16_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}
/* {lo, hi} rounded to bf16 and packed, lo in the low 16 bits (cvt.rn.bf16x2.f32) */
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    return emu_bf16_bits(lo) | emu_bf16_bits(hi) << 16;
}
/* x rounded to bf16 and back to fp32 (cvt.rn.bf16.f32, then a shift) */
__device__ __forceinline__ float round_bf16(float x) {
    const uint32_t u = emu_bf16_bits(x) << 16;
    float r;
    memcpy(&r, &u, sizeof r);
    return r;
}
static inline float emu_bits_float(uint32_t u) {
    float r;
    memcpy(&r, &u, sizeof r);
    return r;
}
/* the low and the high bf16 of a pack_bf16x2 pair, as fp32 */
__device__ __forceinline__ float bf16x2_lo(uint32_t pair) { return emu_bits_float(pair << 16); }
__device__ __forceinline__ float bf16x2_hi(uint32_t pair) {
    return emu_bits_float(pair & 0xffff0000u);
}

#else

__device__ __forceinline__ void mma_bf16_16816(float d[4], const uint32_t a[4],
                                               const uint32_t b[2]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void *row) {
    const unsigned addr = smem_addr(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void *row) {
    const unsigned addr = smem_addr(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
/* {lo, hi} rounded to bf16 and packed, lo in the low 16 bits (cvt.rn.bf16x2.f32 puts its FIRST
 * source operand in the HIGH half, which the intrinsic takes care of) */
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t *>(&h);
}
/* x rounded to bf16 and back to fp32 (cvt.rn.bf16.f32, then a shift) */
__device__ __forceinline__ float round_bf16(float x) {
    return __bfloat162float(__float2bfloat16_rn(x));
}
/* the low and the high bf16 of a pack_bf16x2 pair, as fp32 (a shift, an and) */
__device__ __forceinline__ float bf16x2_lo(uint32_t pair) { return __uint_as_float(pair << 16); }
__device__ __forceinline__ float bf16x2_hi(uint32_t pair) {
    return __uint_as_float(pair & 0xffff0000u);
}

#endif

#endif
