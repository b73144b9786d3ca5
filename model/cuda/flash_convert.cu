/* The widening of bf16 tensors to fp32, for the fused attention's fp32-staging test path
 * (flash_test.h). (The standard backward's fp32 output gradient is rounded to bf16 by the
 * delta's pass over it: attn_delta.) */
#include "model/cuda/flash_core.cuh"

/* dst[i] = src[i] widened (exact); grid-stride. Test path only (flash_test.h). */
__global__ void flash_widen_kernel(float *dst, const flash_bf16 *src, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = operand_load(src, i);
}

void flash_to_f32(float *const *dst, const flash_bf16 *const *src, const size_t *n, int count) {
    for (int i = 0; i < count; i++) {
        if (n[i] == 0) continue;
        flash_widen_kernel<<<cuda_blocks(n[i], 256), 256, 0, cuda_stream()>>>(dst[i], src[i],
                                                                             n[i]);
        CUDA_LAUNCH_CHECK();
    }
}
