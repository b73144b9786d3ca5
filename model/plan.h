/* The resource plan of a run, from the config alone (`difftrain plan`): exact parameter counts
 * from the same layout code that allocates (model/params.h), memory per rank by category under
 * the config's tp, dp, ZeRO stage, precision, micro_batch and seq_len, and FLOPs per token.
 *
 * What each memory category counts, per rank, with P the parameters of the largest TP rank and
 * S = ceil(P / dp) the largest ZeRO shard (the balanced partition of optim/zero.h and
 * dist/partition.h: parts differ by at most one element, the first ones hold the extra):
 *   weights      4 P (fp32); under bf16 also the products' bf16 copies of the weight matrices
 *                (model/params.h: param_product_copy_bytes, about 2 P).
 *   gradients    4 P (fp32); zero 2 adds the fp32 shard accumulator 4 S: the full buffer still
 *                holds one micro-batch's gradients before its reduce-scatter.
 *   optimizer    AdamW m and v in fp32: 8 P, or 8 S when zero >= 1.
 *   activations  model_activation_bytes() (the carving code of the real allocation: forward
 *                activations kept for the backward, gradient scratch, the classifier's chunk,
 *                token ids); with train.recompute, each layer's input plus one layer's worth of
 *                the rest.
 * train.precision bf16 runs the matrix products on bf16 tensor cores with fp32 accumulation, and
 * stores the forward's operand activations (model/backend.h: dt_operand: the norms' outputs, q,
 * k, v, the attention's output, gate, up and the SwiGLU output) in bf16, 2 bytes an element;
 * so are the gate and up gradients of the FFN's backward (read only by products); everything
 * else, the residual stream, the other gradients, weights and optimizer state included, stays
 * fp32 (the weight matrices are rounded to bf16 copies once per forward, which the weights row
 * counts; the remaining fp32 output gradients as the products read them).
 * Not counted: backend workspaces (cuBLAS, NCCL buffers; under bf16 the CUDA backend's bf16
 * copies of a product's fp32 output gradient and of the baseline attention's output gradient,
 * and the fused attention's stored dS tiles: up to FLASH_DQ_AUTO_BYTES, 2 GiB, by default),
 * the data loader's host buffers, checkpoint staging and allocator fragmentation; keep a margin
 * below the device's memory. */
#ifndef DT_PLAN_H
#define DT_PLAN_H

#include <stdint.h>

#include "launch/config.h"
#include "util/status.h"

typedef struct dt_plan_memory {
    uint64_t weights, gradients, optimizer, activations, total; /* bytes per rank */
} dt_plan_memory;

typedef struct dt_plan {
    /* the layout planned for (dp resolved) */
    int tp, dp, zero;
    dt_precision precision;
    int micro_batch, seq_len, global_batch;
    int grad_accum; /* micro-batches per optimizer step on each rank */
    int recompute;  /* train.recompute: activations sized for activation recomputation */

    /* parameters: global counts (the tp = 1 layout's global shapes) */
    uint64_t params_total;
    uint64_t params_embedding;     /* tok_embeddings, plus output when untied */
    uint64_t params_non_embedding; /* params_total - params_embedding */
    /* per rank: the largest tensor-parallel rank's local layout (vocab slices may differ by a
     * row), the largest ZeRO shard of it, and its activation bytes */
    uint64_t params_per_rank;
    uint64_t shard_per_rank; /* ceil(params_per_rank / dp); params_per_rank when zero == 0 */
    uint64_t activation_bytes;
    /* the products' bf16 copies of the weight matrices (param_product_copy_bytes), largest
     * over the tp ranks: counted in mem.weights under train.precision bf16 */
    uint64_t weight_copy_bytes;

    dt_plan_memory mem;

    double flops_per_token; /* model_flops_per_token(model, seq_len): forward + backward */
    double tokens_per_step; /* global_batch * seq_len */
    double flops_per_step;  /* flops_per_token * tokens_per_step, over all ranks */
} dt_plan;

/* Plans the run of config c. world_size > 0 resolves parallel.dp = "auto" as world_size / tp
 * (and checks an explicit dp against it: tp * dp == world_size); world_size == 0 takes an auto
 * dp as 1. Validates c (config_validate), and returns DT_ERR_INPUT with a message naming the
 * key when the model does not split over tp (heads, kv heads, ffn_dim, vocabulary), the world
 * does not split into tp x dp, or train.global_batch is not a multiple of train.micro_batch x dp;
 * DT_ERR_RUNTIME when out of memory. out is unspecified on error. */
dt_status plan_compute(dt_plan *out, const dt_config *c, int world_size);

/* Bytes per element of the products' input activations (model/backend.h: operand_bytes) under
 * train.precision p: 2 for bf16, 4 for fp32. */
static inline unsigned plan_operand_bytes(dt_precision p) { return p == DT_PRECISION_BF16 ? 2 : 4; }

/* Parses a memory size: a number (decimal, optional fraction and exponent: 80, 1.5, 8e10)
 * followed by an optional unit, case-insensitive: B; K, M, G, T and KiB, MiB, GiB, TiB (powers
 * of 1024); KB, MB, GB, TB (powers of 1000). The single-letter forms are binary as in `docker
 * -m 24g` and `numfmt --from=iec`. The result must be a whole number of bytes, > 0 and below
 * 2^64. Returns DT_ERR_INPUT (printing nothing) on anything else: empty, a sign, whitespace,
 * hex, inf/nan, an unknown unit, trailing text. */
dt_status plan_parse_bytes(uint64_t *bytes, const char *s);

#endif
