/* Block reductions in double for the CUDA ops that mirror a CPU op accumulating in double
 * (sumsq, rmsnorm, cross-entropy, head_scale, difflambda). Same shape rules as block_sum in
 * cuda_common.cuh, whose float warp/block helpers these complement. */
#ifndef DT_REDUCE_DOUBLE_CUH
#define DT_REDUCE_DOUBLE_CUH

#include "model/cuda/cuda_common.cuh"

/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the same
 * result (a butterfly adds the same pairs in every lane). `scratch` is __shared__ double[32].
 * The order of additions is fixed by the block shape, so the result is deterministic.
 * Contains __syncthreads: call from every thread of the block. */
__device__ __forceinline__ double block_sum_d(double x, double *scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    x = warp_sum_d(x);
    __syncthreads(); /* scratch may still be read by a previous call */
    if (lane == 0) scratch[warp] = x;
    __syncthreads();
    x = lane < nwarps ? scratch[lane] : 0.0;
    return warp_sum_d(x);
}

#endif
