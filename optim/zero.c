#include "optim/zero.h"

#include <string.h>

#include "dist/partition.h"
#include "util/alloc.h"

dt_status zero_init(dt_zero *z, int stage, dt_comm *dp, const dt_buf_coll *coll, const dt_backend *be,
                    size_t total) {
    memset(z, 0, sizeof *z);
    z->stage = stage;
    z->dp = dp;
    z->coll = coll;
    z->be = be;
    z->total = total;
    z->counts = dt_calloc((size_t)dp->size, sizeof *z->counts);
    if (!z->counts) {
        dt_error("out of memory for the ZeRO partition of %d ranks", dp->size);
        return DT_ERR_RUNTIME;
    }
    dist_partition_counts(z->counts, total, dp->size);
    if (stage == 0) {
        z->first = 0;
        z->count = total;
    } else {
        dist_partition(total, dp->size, dp->rank, &z->first, &z->count);
    }
    if (stage == 2) {
        z->grad_accum = be->alloc((z->count ? z->count : 1) * sizeof(float));
        if (!z->grad_accum) {
            dt_error("out of memory for the ZeRO-2 gradient shard (%zu floats)", z->count);
            zero_free(z);
            return DT_ERR_RUNTIME;
        }
    }
    return DT_OK;
}

void zero_free(dt_zero *z) {
    if (z->grad_accum) z->be->free(z->grad_accum);
    dt_free(z->counts);
    memset(z, 0, sizeof *z);
}

void zero_begin_step(dt_zero *z) {
    if (z->grad_accum) z->be->memset_zero(z->grad_accum, z->count * sizeof(float));
}

dt_status zero_after_micro_batch(dt_zero *z, float *grads) {
    if (z->stage != 2) return DT_OK;
    float *shard = grads + z->first;
    DT_TRY(z->coll->reduce_scatter_f32(z->dp, shard, grads, z->counts));
    z->be->add(z->grad_accum, z->grad_accum, shard, z->count);
    z->be->memset_zero(grads, z->total * sizeof(float));
    return DT_OK;
}

dt_status zero_reduce_grads(dt_zero *z, float *grads, float **range_grads) {
    switch (z->stage) {
    case 0:
        DT_TRY(z->coll->allreduce_f32(z->dp, grads, z->total, DT_REDUCE_SUM));
        *range_grads = grads;
        break;
    case 1:
        DT_TRY(z->coll->reduce_scatter_f32(z->dp, grads + z->first, grads, z->counts));
        *range_grads = grads + z->first;
        break;
    default:
        *range_grads = z->grad_accum;
        break;
    }
    return DT_OK;
}

dt_status zero_gather_params(dt_zero *z, float *params) {
    if (z->stage == 0) return DT_OK;
    return z->coll->allgather_f32(z->dp, params, z->counts);
}
