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
 * Gradients are summed (the caller scales the loss by 1/(micro-batches * dp) to average). */
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
    size_t first, count; /* this rank's shard [first, first + count) (the whole buffer at stage 0) */
    float *grad_accum;  /* stage 2: (count) the accumulated gradient shard */
} dt_zero;

/* coll moves the backend's buffers (buf_coll_host() for the CPU backend). */
dt_status zero_init(dt_zero *z, int stage, dt_comm *dp, const dt_buf_coll *coll, const dt_backend *be,
                    size_t total);
void zero_free(dt_zero *z);

/* At the start of a step: clears the stage-2 accumulator. */
void zero_begin_step(dt_zero *z);
/* Stage 2, after each micro-batch's backward: adds the group's sum of grads' shard into the
 * accumulator and clears grads (total floats). No-op at stages 0 and 1. */
dt_status zero_after_micro_batch(dt_zero *z, float *grads);
/* After the last micro-batch: makes the summed gradients of this rank's range available and
 * returns in *range_grads the gradient of element `first` (stage 0: the whole buffer after an
 * all-reduce; stage 1: the shard after a reduce-scatter, in place in grads; stage 2: the
 * accumulator). */
dt_status zero_reduce_grads(dt_zero *z, float *grads, float **range_grads);
/* After the update of this rank's range: all-gathers the shards into params (stages 1 and 2). */
dt_status zero_gather_params(dt_zero *z, float *params);

#endif
