/* ZeRO-style data parallelism over a model's flat (tensor-parallel local) parameter buffer.
 *
 * The buffer of P elements is partitioned over the dp ranks of the data-parallel group into
 * contiguous shards balanced to within one element (dist_partition: no size has to divide).
 *   stage 0: the gradients are all-reduced; every rank keeps the whole AdamW state and updates
 *            the whole buffer.
 *   stage 1: the gradients are reduce-scattered once per step; each rank keeps AdamW m and v of
 *            its shard only, updates its shard, and the updated shards are all-gathered.
 *   stage 2: as 1, and each rank keeps only its shard of the gradients across the accumulation
 *            steps: every micro-batch's gradients are reduce-scattered into a shard accumulator
 *            and the full buffer is cleared for the next micro-batch.
 * Gradients are summed (the caller scales the loss by 1/(micro-batches * dp) to average).
 *
 * The reduction goes by ranges (buckets): a micro-batch whose gradients are reduced (the last of
 * the step at stages 0 and 1, every one at stage 2) calls zero_reduce_range for ranges that
 * together cover the buffer once, in any order the whole group shares (the whole buffer at once,
 * or each layer's range as soon as the backward has finished it, so that the reduction overlaps
 * the backward), then zero_finish_reduce. The result is the same whatever the ranges: each
 * element is summed over the same ranks. */
#ifndef DT_ZERO_H
#define DT_ZERO_H

#include <stddef.h>

#include "dist/buf_coll.h"
#include "dist/comm.h"
#include "model/backend.h"

typedef struct dt_zero {
    int stage;
    dt_comm *dp; /* borrowed */
    const dt_buf_coll *coll; /* collectives on the backend's memory (MPI on host, NCCL on device) */
    const dt_backend *be;
    size_t total;       /* P */
    size_t *counts;     /* (dp) shard sizes */
    size_t *offsets;    /* (dp) shard offsets */
    size_t *range_counts; /* (dp) scratch: a range's intersection with each shard */
    size_t first, count; /* this rank's shard [first, first + count) (the whole buffer at stage 0) */
    float *grad_accum;  /* stage 2: (count) the accumulated gradient shard */
} dt_zero;

/* coll moves the backend's buffers (buf_coll_host() for the CPU backend). */
dt_status zero_init(dt_zero *z, int stage, dt_comm *dp, const dt_buf_coll *coll, const dt_backend *be,
                    size_t total);
void zero_free(dt_zero *z);

/* At the start of a step: clears the stage-2 accumulator. */
void zero_begin_step(dt_zero *z);
/* Starts the reduction over the group of grads[first, first + count) (the caller has finished
 * writing it): stage 0 all-reduces the range; stages 1 and 2 reduce-scatter it in place, the
 * parts being the range's intersections with the ranks' shards (empty for the ranks whose shard
 * misses it), so that each rank's shard receives its sum at its own place in grads. Deferred
 * (dist/buf_coll.h): the range must be neither read nor written until zero_finish_reduce; on the
 * GPU the backend's work goes on meanwhile. Outside this rank's shard the range is unspecified
 * afterwards (stages 1 and 2). Every rank of the group calls it with the same ranges in the same
 * order; an empty range or a group of one moves nothing. DT_ERR_INPUT (reported) for a range
 * outside the buffer. */
dt_status zero_reduce_range(dt_zero *z, float *grads, size_t first, size_t count);
/* After the ranges of a micro-batch, together the whole buffer, were started: waits for their
 * reductions (the backend's later work sees them); stage 2 then adds the shard of grads into the
 * accumulator and clears grads (total floats) for the next micro-batch. */
dt_status zero_finish_reduce(dt_zero *z, float *grads);
/* The summed gradient of element `first` of this rank's range, once the step's reductions are
 * finished: grads itself at stage 0 (the whole buffer), grads + first at stage 1 (the shard, in
 * place), the accumulator at stage 2. */
float *zero_range_grads(dt_zero *z, float *grads);
/* After the update of this rank's range: all-gathers the shards into params (stages 1 and 2). */
dt_status zero_gather_params(dt_zero *z, float *params);

#endif
