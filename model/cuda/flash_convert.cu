/* The fused attention's one rounding pass per op (flash_core.cuh): its fp32 inputs (today only
 * the standard backward's output gradient dout: q, k, v are bf16 operands already, and DIFF's G
 * is written in bf16 by flash_prep.cu) to bf16 copies in the op's workspace, which the kernels
 * then stage with cp.async. Each element is rounded once here instead of once per block that
 * stages it (every key tile stages every query tile at or past the diagonal), with pack_bf16x2,
 * the rounding the kernels' fp32 staging uses: the copies hold the same bits.
 * Also the widening of bf16 tensors to fp32, for the fp32-staging test path (flash_test.h). */
#include "model/cuda/flash_core.cuh"

#define CONVERT_MAX 4

/* One launch for up to CONVERT_MAX tensors: blockIdx.y picks the tensor (a fixed index into the
 * kernel's parameters: a dynamically indexed parameter array would be copied to local memory by
 * every thread, which ran this pass at a third of the memory bandwidth on an H100). */
struct flash_convert_args {
    flash_bf16 *dst[CONVERT_MAX];
    const float *src[CONVERT_MAX];
    size_t n8[CONVERT_MAX]; /* 8-element chunks per tensor */
};

template <int T>
__device__ __forceinline__ void flash_convert_one(const flash_convert_args &a) {
    const float *src = a.src[T];
    flash_bf16 *dst = a.dst[T];
    const size_t n8 = a.n8[T];
    for (size_t c = (size_t)blockIdx.x * blockDim.x + threadIdx.x; c < n8;
         c += (size_t)gridDim.x * blockDim.x) {
        const float4 x = *reinterpret_cast<const float4 *>(src + 8 * c);
        const float4 y = *reinterpret_cast<const float4 *>(src + 8 * c + 4);
        *reinterpret_cast<uint4 *>(dst + 8 * c) =
            make_uint4(pack_bf16x2(x.x, x.y), pack_bf16x2(x.z, x.w), pack_bf16x2(y.x, y.y),
                       pack_bf16x2(y.z, y.w));
    }
}

/* one thread per 8 elements (16 bytes out), grid-stride within the tensor of blockIdx.y */
__global__ void flash_convert_kernel(flash_convert_args a) {
    switch (blockIdx.y) {
    case 0: flash_convert_one<0>(a); break;
    case 1: flash_convert_one<1>(a); break;
    case 2: flash_convert_one<2>(a); break;
    case 3: flash_convert_one<3>(a); break;
    }
}

void flash_to_bf16(flash_bf16 *const *dst, const float *const *src, const size_t *n, int count) {
    flash_convert_args a = {};
    size_t most = 0;
    for (int i = 0; i < count; i++) {
        a.dst[i] = dst[i];
        a.src[i] = src[i];
        a.n8[i] = n[i] / 8;
        if (a.n8[i] > most) most = a.n8[i];
    }
    if (most == 0) return;
    const dim3 grid(cuda_blocks(most, 256), (unsigned)count);
    flash_convert_kernel<<<grid, 256, 0, cuda_stream()>>>(a);
    CUDA_LAUNCH_CHECK();
}

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
