/* Per-head gain of model.subln: scalar on the CUDA backend (out_h = s_h * inp_h; the CPU oracle
 * is model/cpu/headscale.c). out and inp are dt_operands (operand.cuh), read and written in the
 * backend's format; the products are fp32. */
#include "model/cuda/cuda_common.cuh"
#include "model/cuda/cuda_ops.h"
#include "model/cuda/operand.cuh"

#define HEAD_SCALE_THREADS 256
#define HEAD_SCALE_MAX_BLOCKS 65536u

/* Elementwise, grid-stride over the N*H*w elements; out may equal inp. */
template <typename TO>
__global__ void head_scale_forward_kernel(TO *out, const TO *inp, const float *s, size_t n, int H,
                                          int w) {
    size_t C = (size_t)H * w;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        size_t h = (i % C) / (size_t)w;
        operand_store(out, i, operand_load(inp, i) * s[h]);
    }
}

template <typename TO>
static void head_scale_forward_launch(TO *out, const TO *inp, const float *s, size_t n, int H,
                                      int w) {
    unsigned blocks = cuda_blocks(n, HEAD_SCALE_THREADS);
    if (blocks > HEAD_SCALE_MAX_BLOCKS) blocks = HEAD_SCALE_MAX_BLOCKS;
    auto kernel = head_scale_forward_kernel<TO>;
    kernel<<<blocks, HEAD_SCALE_THREADS, 0, cuda_stream()>>>(out, inp, s, n, H, w);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_head_scale_forward(dt_operand *out, const dt_operand *inp, const float *s,
                                        int N, int H, int w) {
    size_t n = (size_t)(N > 0 ? N : 0) * (size_t)(H > 0 ? H : 0) * (size_t)(w > 0 ? w : 0);
    if (n == 0) return;
    if (cuda_operand_bf16())
        head_scale_forward_launch((operand_bf16 *)out, (const operand_bf16 *)inp, s, n, H, w);
    else
        head_scale_forward_launch((float *)out, (const float *)inp, s, n, H, w);
}

/* Backward: dinp = dout * s[h] (overwritten; dinp may equal dout, each element is read before
 * it is written by the same thread) and ds[h] += sum over rows and i of dout * inp, in double
 * and without atomics. Stage 1: block (chunk c, head h) covers rows [c*rows, (c+1)*rows) of
 * head h (the chunking depends only on N), writes dinp and reduces its products in a fixed tree
 * into partial (H, nchunks). Stage 2: thread h adds partial[h][0..nchunks) in order and adds the
 * total to ds[h] once. */
#define HEAD_SCALE_MAX_CHUNKS 64

template <typename TI>
__global__ void head_scale_backward_partial_kernel(double *partial, float *dinp, const float *dout,
                                                   const TI *inp, const float *s, int N, int H,
                                                   int w, int rows_per_chunk, int nchunks) {
    __shared__ double scratch[32];
    size_t C = (size_t)H * w;
    int chunk = blockIdx.x;
    for (int h = blockIdx.y; h < H; h += gridDim.y) { /* block-uniform */
        int n0 = chunk * rows_per_chunk;
        int n1 = n0 + rows_per_chunk < N ? n0 + rows_per_chunk : N;
        size_t count = (size_t)(n1 - n0) * w; /* elements of this block: rows x w */
        float sh = s[h];
        double acc = 0.0;
        for (size_t e = threadIdx.x; e < count; e += blockDim.x) {
            size_t n = (size_t)n0 + e / (size_t)w, i = e % (size_t)w;
            size_t at = n * C + (size_t)h * w + i;
            float g = dout[at];
            acc += (double)g * operand_load(inp, at);
            dinp[at] = g * sh;
        }
        acc = block_sum(acc, scratch);
        if (threadIdx.x == 0) partial[(size_t)h * nchunks + chunk] = acc;
    }
}

static __global__ void head_scale_backward_final_kernel(float *ds, const double *partial, int H,
                                                        int nchunks) {
    for (int64_t h = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; h < H;
         h += (int64_t)gridDim.x * blockDim.x) {
        double acc = 0.0;
        for (int c = 0; c < nchunks; c++) acc += partial[(size_t)h * nchunks + c];
        ds[h] += (float)acc;
    }
}

template <typename TI>
static void head_scale_backward_partial_launch(dim3 grid, double *partial, float *dinp,
                                               const float *dout, const TI *inp, const float *s,
                                               int N, int H, int w, int rows_per_chunk,
                                               int nchunks) {
    auto kernel = head_scale_backward_partial_kernel<TI>;
    kernel<<<grid, HEAD_SCALE_THREADS, 0, cuda_stream()>>>(partial, dinp, dout, inp, s, N, H, w,
                                                           rows_per_chunk, nchunks);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_head_scale_backward(float *dinp, float *ds, const float *dout,
                                         const dt_operand *inp, const float *s, int N, int H,
                                         int w) {
    if (N <= 0 || H <= 0 || w <= 0) return;
    int rows_per_chunk = (N + HEAD_SCALE_MAX_CHUNKS - 1) / HEAD_SCALE_MAX_CHUNKS;
    int nchunks = (N + rows_per_chunk - 1) / rows_per_chunk; /* <= HEAD_SCALE_MAX_CHUNKS */
    double *partial =
        (double *)cuda_workspace((size_t)H * nchunks * sizeof(double)); /* (H, nchunks) */
    dim3 grid((unsigned)nchunks, (unsigned)(H < 65535 ? H : 65535));
    if (cuda_operand_bf16())
        head_scale_backward_partial_launch(grid, partial, dinp, dout, (const operand_bf16 *)inp, s,
                                           N, H, w, rows_per_chunk, nchunks);
    else
        head_scale_backward_partial_launch(grid, partial, dinp, dout, (const float *)inp, s, N, H,
                                           w, rows_per_chunk, nchunks);
    head_scale_backward_final_kernel<<<cuda_blocks((size_t)H, HEAD_SCALE_THREADS),
                                       HEAD_SCALE_THREADS, 0, cuda_stream()>>>(ds, partial, H,
                                                                               nchunks);
    CUDA_LAUNCH_CHECK();
}
