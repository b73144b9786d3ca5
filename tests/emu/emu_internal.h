/* Between the emulator's own files (emu_rt.cpp: launches and device memory; emu_streams.cpp:
 * streams, events and their order): nothing here is seen by the emulated sources. */
#ifndef DT_EMU_INTERNAL_H
#define DT_EMU_INTERNAL_H

#include <stdint.h>

#include <functional>

#include "cuda_runtime.h"

/* Prints "emu: " and the message (with the running kernel, block and grid inside a kernel) to
 * stderr and aborts: a misuse that a GPU would not report reliably. */
void emu_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
/* Prints "emu: " and the message, makes e the last error (cudaGetLastError) and returns it: a
 * misuse that the CUDA API reports as an error. */
cudaError_t emu_api_error(cudaError_t e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Aborts (emu_fail) unless the emulated GPU (DT_EMU_GPU) is compute capability 9.0: an sm_90
 * instruction (what, at file:line) on an earlier device is illegal. */
void emu_require_sm90(const char *what, const char *file, int line);
/* The start of the live allocation holding [p, p + bytes) (bytes 0: p may be its end), or 0. */
uintptr_t emu_alloc_start(const void *p, size_t bytes);

/* A warpgroup-collective instruction (emu_wgmma.cpp): the running thread waits at it until
 * the 128 threads of its warpgroup (warps 4w..4w+3 of the block) all do, at this call site;
 * then op(w, lanes) runs once with their operands (lanes[i]: `mine` of the group's thread i)
 * and they go on. `what` names the instruction in reports. Aborts (emu_fail) in a block that
 * is not whole warpgroups, when the warpgroup's threads wait at different call sites, and when
 * some of them wait at __syncthreads or have exited instead (a deadlock on a GPU). */
void emu_group_collective(void (*op)(unsigned group, void *const *lanes), void *mine,
                          const char *what, const char *file, int line);
/* The same for an instruction that waits for asynchronous work (wgmma.wait_group): op runs only
 * once no warp of the block can run, the last moment a GPU allows, so that whatever the other
 * warps do meanwhile (a producer refilling a stage handed back too early) happens first. */
void emu_group_collective_late(void (*op)(unsigned group, void *const *lanes), void *mine,
                               const char *what, const char *file, int line);
/* The running block's shared memory at shared-window address addr (emu_shared_address's
 * inverse) when [addr, addr + bytes) lies in its static or dynamic shared memory; else NULL. */
void *emu_shared_pointer(uint32_t addr, size_t bytes);
/* An asynchronous copy of `bytes` bytes on the mbarrier bar (emu_rt.cpp), which land writes
 * into shared memory at shared-window addresses [at, at + bytes), taking them off the phase's
 * expected bytes (as emu_bulk_copy): under the in-order schedule at once, under the
 * adversarial one when the phase's arrivals are all in and a warp waits for it (the earliest
 * and the latest moments a GPU allows). Either way a landing that overwrites what a wgmma
 * product not yet retired reads aborts (emu_wgmma_check_write). `what` names the instruction in
 * reports. */
void emu_mbar_async_copy(void *bar, unsigned bytes, uint32_t at, std::function<void()> land,
                         const char *what, const char *file, int line);
/* Aborts (emu_fail) when an asynchronous copy (what, issued at file:line; file NULL: unknown)
 * about to land at shared-window addresses [at, at + bytes) overlaps a shared-memory operand of
 * a wgmma product that its warpgroup issued and no wgmma_wait has retired yet: on a GPU the
 * product may read the new bytes or the old (emu_wgmma.cpp). */
void emu_wgmma_check_write(uint32_t at, size_t bytes, const char *what, const char *file,
                           int line);
/* Where the swizzle of `swizzle` bytes (0: none, 32, 64, 128) puts shared-window address a: bits
 * 4.. XOR bits 7.. (1, 2, 3 bits), as TMA writes a box and wgmma reads it. */
static inline uint32_t emu_swizzle(uint32_t a, uint32_t swizzle) {
    return swizzle ? a ^ (((a >> 7) & (swizzle / 16 - 1)) << 4) : a;
}
/* The running block's shared memory as shared-window spans: the dynamic area [0, *dyn) and the
 * static variables declared so far [*static_lo, *static_hi) (emu_rt.cpp). */
void emu_shared_spans(uint32_t *dyn, uint32_t *static_lo, uint32_t *static_hi);
/* The mbarriers the running thread initialised are published to the async proxy (its
 * fence.mbarrier_init or fence.proxy.async, emu_rt.cpp): bulk and TMA copies may complete on
 * them (emu_mbar_async_copy aborts on one not published). */
void emu_mbar_publish_inits(void);
/* The async proxy's view of shared memory (emu_proxy.cpp): emu_proxy_publish makes the bytes
 * at [at, at + bytes) visible to it as they are now (the emulator's own fills, a landed
 * asynchronous copy); emu_proxy_check_read aborts when a wgmma (issued at file:line) reads a
 * byte the threads wrote after the block's last fence.proxy.async (now: where [at, at + bytes)
 * lies, emu_shared_pointer's answer, which the caller has), emu_proxy_check_write when an
 * asynchronous copy (what, issued at file:line; file NULL: unknown) is about to land on one. */
void emu_proxy_publish(uint32_t at, size_t bytes);
void emu_proxy_check_read(uint32_t at, const void *now, size_t bytes, const char *file,
                          int line);
void emu_proxy_check_write(uint32_t at, size_t bytes, const char *what, const char *file,
                           int line);
/* The wgmma state of a block (emu_wgmma.cpp): reset when a block of nthreads threads starts;
 * checked when it ends (products still queued or pending abort). */
void emu_wgmma_block_start(unsigned nthreads);
void emu_wgmma_block_end(void);

/* 1 for a stream that may be used: 0 (the legacy default stream), the cudaStreamLegacy and
 * cudaStreamPerThread handles, or one created and not destroyed. */
bool emu_stream_valid(cudaStream_t s);
/* In a function returning cudaError_t: an invalid stream is the API error CUDA gives. */
#define CHECK_STREAM(s, what)                                                                      \
    if (!emu_stream_valid(s))                                                                      \
    return emu_api_error(cudaErrorInvalidResourceHandle,                                           \
                         "%s: stream %p was not created (or was destroyed)", what, (void *)(s))
/* Starts one operation on the valid stream s (a launch, copy, memset, cuBLAS or NCCL call):
 * its place in the stream order. emu_stream_record then records what it touches. */
void emu_stream_begin_op(cudaStream_t s, const char *what);
/* The current operation reads or writes [p, p + bytes) of the allocation at `start`; aborts
 * (emu_fail) when an operation of another stream touched those bytes (one of the two writing)
 * and nothing orders the two. */
void emu_stream_record(uintptr_t start, const void *p, size_t bytes, bool write);
/* Events in captures (emu_graph.cpp), for emu_streams.cpp. cudaEventRecord(e, s): 1 when s is
 * capturing (recorded as a node of the graph), else 0 (an ordinary record; e is no longer a
 * captured event). cudaStreamWaitEvent(s, e): *handled 1 when the capture takes the call (a
 * fork or a join, or a misuse, with its error), else 0. emu_capture_event_usable: the error for
 * waiting on the host for an event last recorded in a capture. emu_capture_forget: e is
 * destroyed. */
int emu_capture_record(cudaEvent_t e, cudaStream_t s);
cudaError_t emu_capture_wait(cudaStream_t s, cudaEvent_t e, int *handled);
cudaError_t emu_capture_event_usable(cudaEvent_t e, const char *what);
void emu_capture_forget(cudaEvent_t e);
/* cudaFree of the allocation at `start`: the device is synchronised and its record dropped. */
void emu_stream_free(uintptr_t start);

#endif
