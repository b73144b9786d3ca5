/* Elementwise ops on the CUDA backend: residual adds, gradient scaling, and the sum of squares
 * behind the global gradient norm (accumulated into a device double for the training step, or
 * returned to the host by cuda_sumsq, the one op here that waits for the device). */
#include "model/cuda/cuda_common.cuh"
#include "model/cuda/cuda_ops.h"

#define ELEMENTWISE_THREADS 256
/* Grid-stride loops with a capped grid: a flat gradient of 3e9 floats does not need 1e7
 * blocks, and 65536 x 256 threads are plenty to saturate memory bandwidth. */
#define ELEMENTWISE_MAX_BLOCKS 65536u

static unsigned elementwise_blocks(size_t n) {
    unsigned b = cuda_blocks(n, ELEMENTWISE_THREADS);
    return b < ELEMENTWISE_MAX_BLOCKS ? b : ELEMENTWISE_MAX_BLOCKS;
}

/* No __restrict__: out may alias a or b (each element is read before it is written, by the
 * same thread). */
static __global__ void add_kernel(float *out, const float *a, const float *b, size_t n) {
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] = a[i] + b[i];
}

static __global__ void scale_kernel(float *x, float s, size_t n) {
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) x[i] *= s;
}

extern "C" void cuda_add(float *out, const float *a, const float *b, size_t n) {
    if (n == 0) return;
    cuda_weights_written(out, n * sizeof(float));
    add_kernel<<<elementwise_blocks(n), ELEMENTWISE_THREADS, 0, cuda_stream()>>>(out, a, b, n);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_scale(float *x, float s, size_t n) {
    if (n == 0) return;
    cuda_weights_written(x, n * sizeof(float));
    scale_kernel<<<elementwise_blocks(n), ELEMENTWISE_THREADS, 0, cuda_stream()>>>(x, s, n);
    CUDA_LAUNCH_CHECK();
}

/* Sum of squares in two stages with no atomics, so the total is bit-identical from run to run:
 * stage 1 runs a grid whose size depends only on n (never on the device), each thread summing
 * its grid-stride elements in double (float4s of them where x is 16-byte aligned, as the
 * model's tensors are, then the tail) and each block reducing its threads in a fixed tree into
 * one partial; stage 2 is one block that reduces the partials in a fixed tree and adds the
 * total into the destination (one thread, one addition: the order of accumulations is the order
 * of the calls on the stream). */
#define SUMSQ_THREADS 256
#define SUMSQ_MAX_BLOCKS 1024u

static __global__ void sumsq_partial_kernel(double *partial, const float *x, size_t n) {
    __shared__ double scratch[32];
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    const size_t tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    double s = 0.0;
    size_t i = tid;
    if ((uintptr_t)x % 16 == 0) { /* 16-byte loads: a quarter of the load instructions */
        const float4 *x4 = reinterpret_cast<const float4 *>(x);
        for (size_t k = tid; k < n / 4; k += stride) {
            const float4 v = x4[k];
            s += (double)v.x * v.x;
            s += (double)v.y * v.y;
            s += (double)v.z * v.z;
            s += (double)v.w * v.w;
        }
        i = 4 * (n / 4) + tid;
    }
    for (; i < n; i += stride) {
        double v = x[i];
        s += v * v;
    }
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

/* *acc += the sum of the partials (accumulate != 0), or *acc = it. */
static __global__ void sumsq_final_kernel(double *acc, const double *partial, unsigned nparts,
                                          int accumulate) {
    __shared__ double scratch[32];
    double s = 0.0;
    for (unsigned i = threadIdx.x; i < nparts; i += blockDim.x) s += partial[i];
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) *acc = accumulate ? *acc + s : s;
}

static void sumsq_enqueue(double *acc, const float *x, size_t n, int accumulate) {
    unsigned nblocks = cuda_blocks(n, SUMSQ_THREADS);
    if (nblocks > SUMSQ_MAX_BLOCKS) nblocks = SUMSQ_MAX_BLOCKS;
    double *partial = (double *)cuda_workspace((size_t)nblocks * sizeof(double)); /* (nblocks) */
    sumsq_partial_kernel<<<nblocks, SUMSQ_THREADS, 0, cuda_stream()>>>(partial, x, n);
    CUDA_LAUNCH_CHECK();
    sumsq_final_kernel<<<1, SUMSQ_THREADS, 0, cuda_stream()>>>(acc, partial, nblocks, accumulate);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_sumsq_accumulate(double *acc, const float *x, size_t n) {
    if (n == 0) return;
    sumsq_enqueue(acc, x, n, 1);
}

extern "C" double cuda_sumsq(const float *x, size_t n) {
    if (n == 0) return 0.0;
    /* the total goes to the workspace's last slot: the partials take the first nblocks */
    size_t slot = SUMSQ_MAX_BLOCKS;
    double *total = (double *)cuda_workspace((slot + 1) * sizeof(double)) + slot;
    sumsq_enqueue(total, x, n, 0);
    double result = 0.0;
    cuda_copy_to_host(&result, total, sizeof(double)); /* waits for the stream */
    return result;
}
