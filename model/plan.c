#include "model/plan.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "model/model.h"
#include "model/params.h"

/* Sums the global element counts of a tp = 1 layout: total and the embedding tensors. */
static dt_status count_global(dt_plan *p, const dt_model_config *m) {
    dt_param_layout L;
    DT_TRY(param_layout_init(&L, m));
    p->params_total = 0;
    p->params_embedding = 0;
    for (int i = 0; i < L.n_tensors; i++) {
        const dt_tensor_spec *t = &L.tensors[i];
        uint64_t n = (uint64_t)t->global_shape[0] * (uint64_t)t->global_shape[1];
        p->params_total += n;
        if (t->kind == DT_TENSOR_EMBEDDING) p->params_embedding += n;
    }
    p->params_non_embedding = p->params_total - p->params_embedding;
    param_layout_free(&L);
    return DT_OK;
}

/* The largest local parameter count and activation allocation over the tp ranks: the vocab
 * slices of the first vocab % tp ranks hold one row more, which changes both. */
static dt_status count_per_rank(dt_plan *p, const dt_config *c) {
    p->params_per_rank = 0;
    p->activation_bytes = 0;
    p->weight_copy_bytes = 0;
    for (int r = 0; r < c->parallel.tp; r++) {
        dt_param_layout L;
        DT_TRY(param_layout_init_tp(&L, &c->model, r, c->parallel.tp));
        if (L.total > p->params_per_rank) p->params_per_rank = L.total;
        const uint64_t copies = param_product_copy_bytes(&L, &c->model);
        if (copies > p->weight_copy_bytes) p->weight_copy_bytes = copies;
        param_layout_free(&L);
        dt_tp_shape shape = tp_shape_of(&c->model, r, c->parallel.tp);
        size_t acts = model_activation_bytes(&c->model, &shape, c->train.micro_batch,
                                             c->train.seq_len, c->train.recompute,
                                             plan_operand_bytes(c->train.precision));
        if (acts == 0) {
            dt_error("out of memory sizing the activations of tensor-parallel rank %d", r);
            return DT_ERR_RUNTIME;
        }
        if (acts > p->activation_bytes) p->activation_bytes = acts;
    }
    return DT_OK;
}

/* Resolves parallel.dp against the world size and checks that the batch splits. */
static dt_status resolve_dp(int *dp_out, const dt_config *c, int world_size) {
    const char *src = c->source[0] ? c->source : "config";
    int tp = c->parallel.tp, dp = c->parallel.dp;
    if (world_size > 0) {
        if (world_size % tp) {
            dt_error("%s: parallel.tp: %d does not divide the world of %d ranks", src, tp,
                     world_size);
            return DT_ERR_INPUT;
        }
        if (dp == 0) dp = world_size / tp;
        else if ((int64_t)tp * dp != world_size) {
            dt_error("%s: parallel.dp: tp %d x dp %d = %lld ranks, but the world has %d", src, tp,
                     dp, (long long)tp * dp, world_size);
            return DT_ERR_INPUT;
        }
    } else if (dp == 0) {
        dp = 1; /* "auto" without a world size: one data-parallel rank */
    }
    int64_t per_step = (int64_t)c->train.micro_batch * dp;
    if (c->train.global_batch % per_step) {
        dt_error("%s: train.global_batch: %d is not a multiple of train.micro_batch x parallel.dp "
                 "= %d x %d = %lld sequences", src, c->train.global_batch, c->train.micro_batch,
                 dp, (long long)per_step);
        return DT_ERR_INPUT;
    }
    *dp_out = dp;
    return DT_OK;
}

dt_status plan_compute(dt_plan *out, const dt_config *c, int world_size) {
    memset(out, 0, sizeof *out);
    DT_TRY(config_validate(c));
    DT_TRY(resolve_dp(&out->dp, c, world_size));
    out->tp = c->parallel.tp;
    out->zero = c->parallel.zero;
    out->precision = c->train.precision;
    out->micro_batch = c->train.micro_batch;
    out->seq_len = c->train.seq_len;
    out->global_batch = c->train.global_batch;
    out->recompute = c->train.recompute != 0;
    out->grad_accum = c->train.global_batch / (c->train.micro_batch * out->dp);

    DT_TRY(count_global(out, &c->model));
    DT_TRY(count_per_rank(out, c));

    /* The largest part of dist_partition(P, dp): ceil(P / dp). Computed here because dt_model
     * does not link dt_dist; test_model_plan checks it against the dealt-out definition. */
    uint64_t P = out->params_per_rank, dp = (uint64_t)out->dp;
    uint64_t S = out->zero >= 1 ? (P + dp - 1) / dp : P;
    out->shard_per_rank = S;

    /* weights, gradients and optimizer state are fp32 under bf16 too; bf16 adds the products'
     * bf16 copies of the weight matrices and stores their input activations in bf16 (plan.h) */
    dt_plan_memory *mem = &out->mem;
    mem->weights = 4 * P + (out->precision == DT_PRECISION_BF16 ? out->weight_copy_bytes : 0);
    mem->gradients = 4 * P + (out->zero == 2 ? 4 * S : 0);
    mem->optimizer = 8 * S;
    mem->activations = out->activation_bytes;
    mem->total = mem->weights + mem->gradients + mem->optimizer + mem->activations;

    out->flops_per_token = model_flops_per_token(&c->model, c->train.seq_len);
    out->tokens_per_step = (double)c->train.global_batch * c->train.seq_len;
    out->flops_per_step = out->flops_per_token * out->tokens_per_step;
    return DT_OK;
}

/* ---- sizes ---- */

typedef struct unit {
    const char *name;
    uint64_t mult;
} unit;

static const unit units[] = {
    {"", 1},
    {"B", 1},
    {"K", 1ull << 10},
    {"KiB", 1ull << 10},
    {"KB", 1000ull},
    {"M", 1ull << 20},
    {"MiB", 1ull << 20},
    {"MB", 1000000ull},
    {"G", 1ull << 30},
    {"GiB", 1ull << 30},
    {"GB", 1000000000ull},
    {"T", 1ull << 40},
    {"TiB", 1ull << 40},
    {"TB", 1000000000000ull},
};

dt_status plan_parse_bytes(uint64_t *bytes, const char *s) {
    /* Scan the number by hand: strtod alone would take signs, spaces, hex, inf and nan. */
    const char *q = s;
    int digits = 0, integral = 1;
    while (isdigit((unsigned char)*q)) q++, digits++;
    if (*q == '.') {
        integral = 0;
        q++;
        while (isdigit((unsigned char)*q)) q++, digits++;
    }
    if (digits == 0) return DT_ERR_INPUT;
    if (*q == 'e' || *q == 'E') {
        const char *e = q + 1;
        if (*e == '+' || *e == '-') e++;
        if (!isdigit((unsigned char)*e)) return DT_ERR_INPUT;
        while (isdigit((unsigned char)*e)) e++;
        integral = 0;
        q = e;
    }
    uint64_t mult = 0;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcasecmp(q, units[i].name) == 0) mult = units[i].mult;
    if (mult == 0) return DT_ERR_INPUT;

    if (integral) {
        /* exact integer arithmetic: plain byte counts beyond 2^53 stay exact */
        errno = 0;
        char *end;
        unsigned long long v = strtoull(s, &end, 10);
        if (end != q || errno || v == 0 || v > UINT64_MAX / mult) return DT_ERR_INPUT;
        *bytes = (uint64_t)v * mult;
        return DT_OK;
    }
    char *end;
    double v = strtod(s, &end);
    if (end != q) return DT_ERR_INPUT;
    double b = v * (double)mult;
    /* 2^64 is exactly representable: anything at or above it does not fit */
    if (!(b >= 1.0) || b >= 18446744073709551616.0 || b != floor(b)) return DT_ERR_INPUT;
    *bytes = (uint64_t)b;
    return DT_OK;
}
