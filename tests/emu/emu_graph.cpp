/* Graphs by stream capture for the CUDA host emulator (a test tool; include/cuda_runtime.h,
 * "Graphs"). A capture records each operation issued on its stream as a closure that issues it
 * again on a given stream; a launch runs the closures in order on the launch's stream, so every
 * replayed operation is an ordinary one: checked (arguments, launch limits, stream order) and
 * run as it would be outside a graph. One capture at a time, of one stream: what a GPU would
 * turn into dependencies between streams inside a graph (events recorded or waited for on the
 * capturing stream) is refused rather than emulated. */
#include <stdio.h>

#include <functional>
#include <string>
#include <vector>

#include "emu_internal.h"

typedef std::vector<std::function<void(cudaStream_t)>> op_list;

struct emu_graph {
    op_list ops;
};
struct emu_graph_exec {
    op_list ops;
};

static cudaStream_t g_capture;   /* the capturing stream, or NULL */
static bool g_capture_active;    /* (the legacy stream's handle is NULL: never captured) */
static bool g_capture_invalid;   /* a refused call since cudaStreamBeginCapture */
static std::string g_invalid_by; /* what it was */
static op_list g_captured;

int emu_capturing(cudaStream_t s) { return g_capture_active && s == g_capture; }

void emu_capture_add(cudaStream_t s, const char *what, std::function<void(cudaStream_t)> op) {
    if (!emu_capturing(s)) emu_fail("emu_capture_add(%s) outside a capture of its stream", what);
    if (!g_capture_invalid) g_captured.push_back(std::move(op));
}

int emu_capture_refuses(const char *what) {
    if (!g_capture_active) return 0;
    if (!g_capture_invalid) g_invalid_by = what;
    g_capture_invalid = true;
    (void)emu_api_error(cudaErrorStreamCaptureUnsupported,
                        "%s while stream %p is being captured: not allowed in a capture (the "
                        "capture is invalidated)", what, (void *)g_capture);
    return 1;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode) {
    CHECK_STREAM(s, "cudaStreamBeginCapture");
    if ((uintptr_t)s <= 2)
        return emu_api_error(cudaErrorIllegalState, "cudaStreamBeginCapture: the legacy default "
                             "stream and cudaStreamPerThread are not captured here (create a "
                             "stream)");
    if (mode != cudaStreamCaptureModeGlobal && mode != cudaStreamCaptureModeThreadLocal &&
        mode != cudaStreamCaptureModeRelaxed)
        return emu_api_error(cudaErrorInvalidValue, "cudaStreamBeginCapture: mode %d", (int)mode);
    if (g_capture_active)
        return emu_api_error(cudaErrorIllegalState, "cudaStreamBeginCapture(%p): stream %p is "
                             "being captured (one capture at a time here)", (void *)s,
                             (void *)g_capture);
    g_capture = s;
    g_capture_active = true;
    g_capture_invalid = false;
    g_captured.clear();
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *graph) {
    CHECK_STREAM(s, "cudaStreamEndCapture");
    if (!graph) return emu_api_error(cudaErrorInvalidValue, "cudaStreamEndCapture: NULL graph");
    *graph = NULL;
    if (!emu_capturing(s))
        return emu_api_error(cudaErrorIllegalState, "cudaStreamEndCapture(%p): not capturing",
                             (void *)s);
    g_capture_active = false;
    g_capture = NULL;
    op_list ops;
    ops.swap(g_captured);
    if (g_capture_invalid)
        return emu_api_error(cudaErrorStreamCaptureInvalidated, "cudaStreamEndCapture: the "
                             "capture was invalidated by %s", g_invalid_by.c_str());
    *graph = new emu_graph{std::move(ops)};
    return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus *status) {
    CHECK_STREAM(s, "cudaStreamIsCapturing");
    if (!status) return emu_api_error(cudaErrorInvalidValue, "cudaStreamIsCapturing: NULL");
    *status = !emu_capturing(s)   ? cudaStreamCaptureStatusNone
              : g_capture_invalid ? cudaStreamCaptureStatusInvalidated
                                  : cudaStreamCaptureStatusActive;
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph,
                                 unsigned long long flags) {
    if (!exec || !graph || flags)
        return emu_api_error(cudaErrorInvalidValue, "cudaGraphInstantiate: bad arguments");
    *exec = new emu_graph_exec{graph->ops};
    return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
    CHECK_STREAM(s, "cudaGraphLaunch");
    if (!exec) return emu_api_error(cudaErrorInvalidValue, "cudaGraphLaunch: NULL graph");
    if (g_capture_active) /* a graph launched into a capture would be a child graph node */
        return emu_capture_refuses("cudaGraphLaunch") ? cudaErrorStreamCaptureUnsupported
                                                      : cudaSuccess;
    for (const auto &op : exec->ops) op(s);
    return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
    delete graph;
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
    delete exec;
    return cudaSuccess;
}
