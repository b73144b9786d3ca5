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
    size_t p = (size_t)dp->size;
    z->counts = dt_calloc(p, sizeof *z->counts);
    z->offsets = dt_calloc(p, sizeof *z->offsets);
    z->range_counts = dt_calloc(p, sizeof *z->range_counts);
    if (!z->counts || !z->offsets || !z->range_counts) {
        dt_error("out of memory for the ZeRO partition of %d ranks", dp->size);
        zero_free(z);
        return DT_ERR_RUNTIME;
    }
    for (int j = 0; j < dp->size; j++)
        dist_partition(total, dp->size, j, &z->offsets[j], &z->counts[j]);
    if (stage == 0) {
        z->first = 0;
        z->count = total;
    } else {
        z->first = z->offsets[dp->rank];
        z->count = z->counts[dp->rank];
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
    dt_free(z->offsets);
    dt_free(z->range_counts);
    memset(z, 0, sizeof *z);
}

void zero_begin_step(dt_zero *z) {
    if (z->grad_accum) z->be->memset_zero(z->grad_accum, z->count * sizeof(float));
}

/* The parts of an in-place reduce-scatter of [first, first + count): part j is the range's
 * intersection with shard j (shards are contiguous and in rank order, so the parts are too and
 * add up to count). Returns the offset of this rank's part from `first`. */
static size_t range_parts(dt_zero *z, size_t first, size_t count) {
    size_t end = first + count, mine = 0, before = 0;
    for (int j = 0; j < z->dp->size; j++) {
        size_t lo = z->offsets[j] > first ? z->offsets[j] : first;
        size_t hi = z->offsets[j] + z->counts[j] < end ? z->offsets[j] + z->counts[j] : end;
        z->range_counts[j] = hi > lo ? hi - lo : 0;
        if (j == z->dp->rank) mine = before;
        before += z->range_counts[j];
    }
    return mine;
}

dt_status zero_reduce_range(dt_zero *z, float *grads, size_t first, size_t count) {
    if (first > z->total || count > z->total - first) {
        dt_error("zero_reduce_range: range [%zu, %zu) outside the gradient buffer of %zu",
                 first, first + count, z->total);
        return DT_ERR_INPUT;
    }
    if (count == 0 || z->dp->size == 1) return DT_OK; /* a sum over one rank is the identity */
    float *range = grads + first;
    if (z->stage == 0) return z->coll->allreduce_f32_async(z->dp, range, count, DT_REDUCE_SUM);
    size_t mine = range_parts(z, first, count);
    /* in place on every rank (MPI requires the choice to be the group's): out = in + own part */
    return z->coll->reduce_scatter_f32_async(z->dp, range + mine, range, z->range_counts);
}

dt_status zero_finish_reduce(dt_zero *z, float *grads) {
    DT_TRY(z->coll->wait_all());
    if (z->stage != 2) return DT_OK;
    z->be->add(z->grad_accum, z->grad_accum, grads + z->first, z->count);
    z->be->memset_zero(grads, z->total * sizeof(float));
    return DT_OK;
}

float *zero_range_grads(dt_zero *z, float *grads) {
    switch (z->stage) {
    case 0: return grads;
    case 1: return grads + z->first;
    default: return z->grad_accum;
    }
}

dt_status zero_gather_params(dt_zero *z, float *params) {
    if (z->stage == 0) return DT_OK;
    return z->coll->allgather_f32(z->dp, params, z->counts);
}
