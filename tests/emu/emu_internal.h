/* Between the emulator's own files (emu_rt.cpp: launches and device memory; emu_streams.cpp:
 * streams, events and their order): nothing here is seen by the emulated sources. */
#ifndef DT_EMU_INTERNAL_H
#define DT_EMU_INTERNAL_H

#include <stdint.h>

#include "cuda_runtime.h"

/* Prints "emu: " and the message (with the running kernel, block and grid inside a kernel) to
 * stderr and aborts: a misuse that a GPU would not report reliably. */
void emu_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
/* Prints "emu: " and the message, makes e the last error (cudaGetLastError) and returns it: a
 * misuse that the CUDA API reports as an error. */
cudaError_t emu_api_error(cudaError_t e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The start of the live allocation holding [p, p + bytes) (bytes 0: p may be its end), or 0. */
uintptr_t emu_alloc_start(const void *p, size_t bytes);

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
/* cudaFree of the allocation at `start`: the device is synchronised and its record dropped. */
void emu_stream_free(uintptr_t start);

#endif
