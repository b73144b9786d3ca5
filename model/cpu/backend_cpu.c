/* The CPU backend: fp32 C, OpenBLAS for products, OpenMP across rows and elements. It is the
 * reference every other backend is tested against (STYLE: llm.c, ggml). */
#include "model/backend.h"
#include "model/cpu/cpu_ops.h"

static const dt_backend cpu_backend = {
    .name = "cpu",

    .alloc = cpu_alloc,
    .free = cpu_free,
    .memset_zero = cpu_memset_zero,
    .copy_to_host = cpu_copy_to_host,
    .copy_from_host = cpu_copy_from_host,
    .copy = cpu_copy,
    .synchronize = cpu_synchronize,
    .host_alloc = cpu_host_alloc,
    .host_free = cpu_host_free,
    .copy_from_host_async = cpu_copy_from_host_async,
    .host_wait = cpu_host_wait,

    .matmul_forward = cpu_matmul_forward,
    .matmul_backward = cpu_matmul_backward,
    .add = cpu_add,
    .scale = cpu_scale,
    .sumsq = cpu_sumsq,
    .sumsq_accumulate = cpu_sumsq_accumulate,
    .loss_accumulate = cpu_loss_accumulate,
    .clip_scale = cpu_clip_scale,

    .embedding_forward = cpu_embedding_forward,
    .embedding_backward = cpu_embedding_backward,

    .rmsnorm_forward = cpu_rmsnorm_forward,
    .residual_rmsnorm_forward = cpu_residual_rmsnorm_forward,
    .rmsnorm_backward = cpu_rmsnorm_backward,

    .rope_forward = cpu_rope_forward,
    .rope_backward = cpu_rope_backward,

    .swiglu_forward = cpu_swiglu_forward,
    .swiglu_backward = cpu_swiglu_backward,

    .xent_forward = cpu_xent_forward,
    .xent_backward = cpu_xent_backward,
    .xent_vp_max = cpu_xent_vp_max,
    .xent_vp_sums = cpu_xent_vp_sums,
    .xent_vp_finish = cpu_xent_vp_finish,

    .attention_forward = cpu_attention_forward,
    .attention_backward = cpu_attention_backward,
    .diffattn_forward = cpu_diffattn_forward,
    .diffattn_backward = cpu_diffattn_backward,
    .difflambda_forward = cpu_difflambda_forward,
    .difflambda_backward = cpu_difflambda_backward,
    .head_scale_forward = cpu_head_scale_forward,
    .head_scale_backward = cpu_head_scale_backward,
    .diffv2_combine_forward = cpu_diffv2_combine_forward,
    .diffv2_combine_backward = cpu_diffv2_combine_backward,

    .adamw_update = cpu_adamw_update,
};

const dt_backend *dt_backend_cpu(void) { return &cpu_backend; }
