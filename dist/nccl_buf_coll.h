/* NCCL collectives on device buffers as a dt_buf_coll (dist/buf_coll.h), on a communication stream of
 * their own. Ordering with the compute stream without blocking the host: before a collective
 * the communication stream waits for an event recorded on the compute stream (the buffer is
 * ready), after it the compute stream waits for an event recorded on the communication stream
 * (the result is ready). Every later kernel on the compute stream therefore sees the result,
 * and the host never waits. The deferred collectives (dist/buf_coll.h) run on a second
 * communication stream, after an event of the compute stream, and the compute stream does not
 * wait for them until wait_all: ZeRO's gradient buckets reduce there while the backward goes on,
 * and the backward's tensor-parallel all-reduces, on the first stream, never queue behind a
 * bucket. (The two streams carry different NCCL communicators, TP and DP, whose kernels may then
 * run at the same time; every rank issues both in the same program order, so neither waits for
 * a peer that is waiting for it.) The same events make the collectives recordable in a CUDA
 * graph of the compute stream (optim/step_graph.h): a communication stream joins the recording
 * when it waits for the compute stream's event, and is joined back by the compute stream's wait
 * (for the deferred stream: at wait_all, which a recording must reach before it ends). Built
 * only with CUDA and NCCL (library dt_dist_nccl). */
#ifndef DT_NCCL_BUF_COLL_H
#define DT_NCCL_BUF_COLL_H

#include "dist/buf_coll.h"

/* Binds the collectives to `compute_stream` (a cudaStream_t as void *: the stream the model's
 * kernels run on) on the current device, creating the two communication streams and the events.
 * `written` (may be NULL) is told every device range a collective writes, before it is issued:
 * the backend's memory changing outside its own ops (the CUDA backend drops its bf16 copies of
 * the weights when they are written: cuda_weights_written). Call once per process after the
 * device is chosen; DT_ERR_RUNTIME (reported) on a CUDA error. */
dt_status buf_coll_nccl_bind(void *compute_stream, void (*written)(const void *p, size_t bytes));
void buf_coll_nccl_unbind(void);
/* The collectives; NULL before buf_coll_nccl_bind succeeded. */
const dt_buf_coll *buf_coll_nccl(void);
/* The stream of the deferred collectives (a cudaStream_t as void *; NULL when unbound), for tests
 * that hold it back to prove who waits for it, and for profilers. */
void *buf_coll_nccl_deferred_stream(void);

#endif
