/* The fused attention's one rounding pass per op (flash_core.cuh): its fp32 inputs to bf16 copies
 * in the op's workspace, which the kernels then stage with cp.async. Each element is rounded
 * once here instead of once per block that stages it (every query tile of a head stages every
 * K/V tile below the diagonal), with pack_bf16x2, the rounding the kernels used while staging:
 * the copies hold the same bits. */
#include "model/cuda/flash_core.cuh"

#define CONVERT_MAX 4

struct flash_convert_args {
    flash_bf16 *dst[CONVERT_MAX];
    const float *src[CONVERT_MAX];
    size_t n8[CONVERT_MAX + 1]; /* prefix sums of the 8-element chunks; n8[count] = total */
    int count;
};

/* one thread per 8 elements (16 bytes out), grid-stride over the tensors' chunks in order */
__global__ void flash_convert_kernel(flash_convert_args a) {
    const size_t total = a.n8[a.count];
    for (size_t c = (size_t)blockIdx.x * blockDim.x + threadIdx.x; c < total;
         c += (size_t)gridDim.x * blockDim.x) {
        int t = 0;
        while (c >= a.n8[t + 1]) t++;
        const size_t e = 8 * (c - a.n8[t]);
        const float4 x = *reinterpret_cast<const float4 *>(a.src[t] + e);
        const float4 y = *reinterpret_cast<const float4 *>(a.src[t] + e + 4);
        *reinterpret_cast<uint4 *>(a.dst[t] + e) =
            make_uint4(pack_bf16x2(x.x, x.y), pack_bf16x2(x.z, x.w), pack_bf16x2(y.x, y.y),
                       pack_bf16x2(y.z, y.w));
    }
}

void flash_to_bf16(flash_bf16 *const *dst, const float *const *src, const size_t *n, int count) {
    flash_convert_args a = {};
    a.count = count;
    a.n8[0] = 0;
    for (int i = 0; i < count; i++) {
        a.dst[i] = dst[i];
        a.src[i] = src[i];
        a.n8[i + 1] = a.n8[i] + n[i] / 8;
    }
    if (a.n8[count] == 0) return;
    flash_convert_kernel<<<cuda_blocks(a.n8[count], 256), 256, 0, cuda_stream()>>>(a);
    CUDA_LAUNCH_CHECK();
}
