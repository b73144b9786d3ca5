/* The CUDA backend: the dt_backend struct filled with the CUDA ops (model/cuda/cuda_ops.h), and
 * its lifecycle. Checked op by op against the CPU oracle (tests/unit/test_cuda_*.c). */
#include <stdio.h>

#include "model/cuda/cuda_common.cuh"
#include "model/cuda/cuda_ops.h"

extern "C" {
#include "model/backend.h"
}

int cuda_memory_init(void);
void cuda_memory_shutdown(void);
int cuda_matmul_init(int bf16);
void cuda_matmul_shutdown(void);

static dt_backend g_backend;
static int g_device = -1;

static void fill(dt_backend *b, int bf16) {
    b->name = bf16 ? "cuda (bf16 products)" : "cuda";
    b->alloc = cuda_alloc;
    b->free = cuda_free;
    b->memset_zero = cuda_memset_zero;
    b->copy_to_host = cuda_copy_to_host;
    b->copy_from_host = cuda_copy_from_host;
    b->copy = cuda_copy;
    b->synchronize = cuda_synchronize;
    b->host_alloc = cuda_host_alloc;
    b->host_free = cuda_host_free;
    b->copy_from_host_async = cuda_copy_from_host_async;
    b->host_wait = cuda_host_wait;
    b->matmul_forward = cuda_matmul_forward;
    b->matmul_backward = cuda_matmul_backward;
    b->add = cuda_add;
    b->scale = cuda_scale;
    b->sumsq = cuda_sumsq;
    b->sumsq_accumulate = cuda_sumsq_accumulate;
    b->loss_accumulate = cuda_loss_accumulate;
    b->clip_scale = cuda_clip_scale;
    b->embedding_forward = cuda_embedding_forward;
    b->embedding_backward = cuda_embedding_backward;
    b->rmsnorm_forward = cuda_rmsnorm_forward;
    b->residual_rmsnorm_forward = cuda_residual_rmsnorm_forward;
    b->rmsnorm_backward = cuda_rmsnorm_backward;
    b->rope_forward = cuda_rope_forward;
    b->rope_backward = cuda_rope_backward;
    b->swiglu_forward = cuda_swiglu_forward;
    b->swiglu_backward = cuda_swiglu_backward;
    b->xent_forward = cuda_xent_forward;
    b->xent_backward = cuda_xent_backward;
    b->xent_vp_max = cuda_xent_vp_max;
    b->xent_vp_sums = cuda_xent_vp_sums;
    b->xent_vp_finish = cuda_xent_vp_finish;
    b->attention_forward = cuda_attention_forward;
    b->attention_backward = cuda_attention_backward;
    b->diffattn_forward = cuda_diffattn_forward;
    b->diffattn_backward = cuda_diffattn_backward;
    b->difflambda_forward = cuda_difflambda_forward;
    b->difflambda_backward = cuda_difflambda_backward;
    b->head_scale_forward = cuda_head_scale_forward;
    b->head_scale_backward = cuda_head_scale_backward;
    b->diffv2_combine_forward = cuda_diffv2_combine_forward;
    b->diffv2_combine_backward = cuda_diffv2_combine_backward;
    b->adamw_update = cuda_adamw_update;
}

extern "C" int cuda_backend_init(int device, int bf16) {
    if (g_device >= 0 && g_device != device) {
        fprintf(stderr, "difftrain: error: CUDA backend already bound to device %d, asked for "
                "%d\n", g_device, device);
        return -1;
    }
    cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess) {
        fprintf(stderr, "difftrain: error: CUDA: cannot use device %d: %s\n", device,
                cudaGetErrorString(e));
        (void)cudaGetLastError();
        return -1;
    }
    if (cuda_memory_init() != 0 || cuda_matmul_init(bf16) != 0) return -1;
    g_device = device;
    fill(&g_backend, bf16);
    return 0;
}

extern "C" void cuda_backend_shutdown(void) {
    if (g_device < 0) return;
    (void)cudaStreamSynchronize(cuda_stream());
    cuda_matmul_shutdown();
    cuda_memory_shutdown();
    g_device = -1;
}

extern "C" const dt_backend *dt_backend_cuda(void) { return g_device >= 0 ? &g_backend : NULL; }
