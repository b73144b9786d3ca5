/* Graphs by stream capture for the CUDA host emulator (a test tool; include/cuda_runtime.h,
 * "Graphs"). A capture records each operation issued on a capturing stream as a closure that
 * issues it again on a given stream; a launch runs the closures in their order, each on the
 * stream that stands for its capturing stream, so every replayed operation is an ordinary one:
 * checked (arguments, launch limits, stream order) and run as it would be outside a graph.
 *
 * Streams join a capture as on a GPU: the stream it began on (the origin), and every stream
 * that waits for an event recorded on a capturing stream (a fork). Each is a slot of the graph;
 * an instantiated graph has a stream of its own for each slot but the origin's, which is the
 * launch's stream, and an event of its own for each event recorded in the capture, so the
 * replayed records and waits order the slots' work as the graph's dependencies would. Every
 * slot must be joined back into the origin (the origin waits, directly or through others, for
 * an event recorded after the slot's last operation) before the capture ends, else it fails
 * with cudaErrorStreamCaptureUnjoined, as on a GPU. One capture at a time. */
#include <stdio.h>

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "emu_internal.h"

typedef std::vector<uint64_t> slot_clock; /* by slot: items known to come before */

enum item_kind { ITEM_OP, ITEM_RECORD, ITEM_WAIT };
struct item {
    item_kind kind;
    int slot;  /* the capturing stream it was issued on */
    int event; /* ITEM_RECORD, ITEM_WAIT: the capture's event index */
    std::function<void(cudaStream_t)> op;
};
typedef std::vector<item> item_list;

struct emu_graph {
    item_list items;
    int slots, events;
};
struct emu_graph_exec {
    item_list items;
    std::vector<cudaStream_t> streams; /* by slot; [0] is the launch's stream */
    std::vector<cudaEvent_t> events;
};

/* An event last recorded on a capturing stream: its index in that capture, and what its
 * record came after. Waiting for it once that capture has ended is an error. */
struct captured_event {
    unsigned long capture;
    int index;
    slot_clock known;
};

static bool g_active;
static unsigned long g_capture_id;   /* counts captures begun */
static bool g_invalid;               /* a refused call since cudaStreamBeginCapture */
static std::string g_invalid_by;     /* what it was */
static std::vector<cudaStream_t> g_slots; /* [0]: the origin */
static std::vector<slot_clock> g_clock;   /* by slot */
static int g_events;
static item_list g_items;
static std::unordered_map<cudaEvent_t, captured_event> g_captured;

static int slot_of(cudaStream_t s) {
    if (!g_active) return -1;
    for (size_t i = 0; i < g_slots.size(); i++)
        if (g_slots[i] == s) return (int)i;
    return -1;
}

int emu_capturing(cudaStream_t s) { return slot_of(s) >= 0; }

static uint64_t clock_at(const slot_clock &c, int slot) {
    return (size_t)slot < c.size() ? c[slot] : 0;
}

static void clock_join(slot_clock &into, const slot_clock &from) {
    if (into.size() < from.size()) into.resize(from.size(), 0);
    for (size_t i = 0; i < from.size(); i++)
        if (from[i] > into[i]) into[i] = from[i];
}

/* Appends an item of the slot's: one more node that the slot's later items come after. */
static void add_item(item it) {
    slot_clock &c = g_clock[it.slot];
    if (c.size() <= (size_t)it.slot) c.resize(it.slot + 1, 0);
    c[it.slot]++;
    if (!g_invalid) g_items.push_back(std::move(it));
}

void emu_capture_add(cudaStream_t s, const char *what, std::function<void(cudaStream_t)> op) {
    int slot = slot_of(s);
    if (slot < 0) emu_fail("emu_capture_add(%s) outside a capture of its stream", what);
    add_item({ITEM_OP, slot, -1, std::move(op)});
}

extern "C" void emu_capture_call(cudaStream_t s, const char *what,
                                 void (*run)(void *arg, cudaStream_t on), void *arg,
                                 void (*release)(void *arg)) {
    std::shared_ptr<void> owned(arg, release); /* graphs and their instances share the copy */
    emu_capture_add(s, what, [run, owned](cudaStream_t on) { run(owned.get(), on); });
}

/* The legacy default stream and cudaStreamPerThread: never captured here. */
static bool legacy(cudaStream_t s) { return (uintptr_t)s <= 2; }

/* The active capture fails at its end, naming the first call that invalidated it. */
static void invalidate(const char *by) {
    if (!g_invalid) g_invalid_by = by;
    g_invalid = true;
}

int emu_capture_refuses(const char *what) {
    if (!g_active) return 0;
    invalidate(what);
    (void)emu_api_error(cudaErrorStreamCaptureUnsupported,
                        "%s while stream %p is being captured: not allowed in a capture (the "
                        "capture is invalidated)", what, (void *)g_slots[0]);
    return 1;
}

int emu_capture_record(cudaEvent_t e, cudaStream_t s) {
    int slot = slot_of(s);
    if (slot < 0) {
        g_captured.erase(e); /* recorded outside a capture: an ordinary event again */
        return 0;
    }
    auto it = g_captured.find(e);
    int index = it != g_captured.end() && it->second.capture == g_capture_id ? it->second.index
                                                                             : g_events++;
    add_item({ITEM_RECORD, slot, index, nullptr});
    g_captured[e] = {g_capture_id, index, g_clock[slot]};
    return 1;
}

/* e's record when it was last recorded in the active capture, else NULL. */
static const captured_event *in_active_capture(cudaEvent_t e) {
    auto it = g_captured.find(e);
    return it != g_captured.end() && g_active && it->second.capture == g_capture_id ? &it->second
                                                                                  : NULL;
}

/* 1 when e was last recorded in a capture that has ended (or been invalidated). */
static bool stale(cudaEvent_t e) { return g_captured.count(e) && !in_active_capture(e); }

cudaError_t emu_capture_wait(cudaStream_t s, cudaEvent_t e, int *handled) {
    *handled = 1;
    if (const captured_event *ce = in_active_capture(e)) {
        if (legacy(s))
            return emu_capture_refuses("cudaStreamWaitEvent of the legacy default stream for a "
                                       "captured event") ? cudaErrorStreamCaptureUnsupported
                                                         : cudaSuccess;
        int slot = slot_of(s);
        if (slot < 0) { /* a fork: s joins the capture */
            slot = (int)g_slots.size();
            g_slots.push_back(s);
            g_clock.emplace_back();
        }
        clock_join(g_clock[slot], ce->known);
        add_item({ITEM_WAIT, slot, ce->index, nullptr});
        return cudaSuccess;
    }
    cudaError_t err = emu_capture_event_usable(e, "cudaStreamWaitEvent");
    if (err != cudaSuccess) return err;
    if (emu_capturing(s)) { /* a dependency on work outside the graph */
        invalidate("cudaStreamWaitEvent for an event recorded outside it");
        return emu_api_error(cudaErrorStreamCaptureIsolation, "cudaStreamWaitEvent(%p, event "
                             "%p): a capturing stream waits for an event recorded outside the "
                             "capture (the capture is invalidated)", (void *)s, (void *)e);
    }
    *handled = 0;
    return cudaSuccess;
}

cudaError_t emu_capture_event_usable(cudaEvent_t e, const char *what) {
    if (!stale(e)) return cudaSuccess;
    return emu_api_error(cudaErrorCapturedEvent, "%s(event %p): the event was last recorded "
                         "during a capture that has ended (record it again outside a capture)",
                         what, (void *)e);
}

void emu_capture_forget(cudaEvent_t e) { g_captured.erase(e); }

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode) {
    CHECK_STREAM(s, "cudaStreamBeginCapture");
    if (legacy(s))
        return emu_api_error(cudaErrorIllegalState, "cudaStreamBeginCapture: the legacy default "
                             "stream and cudaStreamPerThread are not captured here (create a "
                             "stream)");
    if (mode != cudaStreamCaptureModeGlobal && mode != cudaStreamCaptureModeThreadLocal &&
        mode != cudaStreamCaptureModeRelaxed)
        return emu_api_error(cudaErrorInvalidValue, "cudaStreamBeginCapture: mode %d", (int)mode);
    if (g_active)
        return emu_api_error(cudaErrorIllegalState, "cudaStreamBeginCapture(%p): stream %p is "
                             "being captured (one capture at a time here)", (void *)s,
                             (void *)g_slots[0]);
    g_active = true;
    g_capture_id++;
    g_invalid = false;
    g_slots.assign(1, s);
    g_clock.assign(1, slot_clock());
    g_events = 0;
    g_items.clear();
    return cudaSuccess;
}

/* The first slot whose last item the origin does not come after, or 0 (all joined). */
static int unjoined_slot(void) {
    for (size_t i = 1; i < g_slots.size(); i++)
        if (clock_at(g_clock[0], (int)i) < clock_at(g_clock[i], (int)i)) return (int)i;
    return 0;
}

cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *graph) {
    CHECK_STREAM(s, "cudaStreamEndCapture");
    if (!graph) return emu_api_error(cudaErrorInvalidValue, "cudaStreamEndCapture: NULL graph");
    *graph = NULL;
    int slot = slot_of(s);
    if (slot < 0)
        return emu_api_error(cudaErrorIllegalState, "cudaStreamEndCapture(%p): not capturing",
                             (void *)s);
    if (slot > 0)
        return emu_api_error(cudaErrorStreamCaptureUnmatched, "cudaStreamEndCapture(%p): the "
                             "capture began on stream %p (this one joined it)", (void *)s,
                             (void *)g_slots[0]);
    int unjoined = unjoined_slot();
    cudaStream_t side = unjoined ? g_slots[unjoined] : NULL;
    g_active = false;
    item_list items;
    items.swap(g_items);
    const int slots = (int)g_slots.size();
    g_slots.clear();
    g_clock.clear();
    if (g_invalid)
        return emu_api_error(cudaErrorStreamCaptureInvalidated, "cudaStreamEndCapture: the "
                             "capture was invalidated by %s", g_invalid_by.c_str());
    if (unjoined)
        return emu_api_error(cudaErrorStreamCaptureUnjoined, "cudaStreamEndCapture(%p): stream "
                             "%p joined the capture and its last work was not joined back (no "
                             "wait of the origin for an event recorded after it)", (void *)s,
                             (void *)side);
    *graph = new emu_graph{std::move(items), slots, g_events};
    return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus *status) {
    CHECK_STREAM(s, "cudaStreamIsCapturing");
    if (!status) return emu_api_error(cudaErrorInvalidValue, "cudaStreamIsCapturing: NULL");
    *status = !emu_capturing(s) ? cudaStreamCaptureStatusNone
              : g_invalid       ? cudaStreamCaptureStatusInvalidated
                                : cudaStreamCaptureStatusActive;
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph,
                                 unsigned long long flags) {
    if (!exec || !graph || flags)
        return emu_api_error(cudaErrorInvalidValue, "cudaGraphInstantiate: bad arguments");
    emu_graph_exec *x = new emu_graph_exec{graph->items, {NULL}, {}};
    for (int i = 1; i < graph->slots; i++) {
        x->streams.push_back(NULL);
        if (cudaStreamCreateWithFlags(&x->streams.back(), cudaStreamNonBlocking) != cudaSuccess)
            emu_fail("cudaGraphInstantiate: cannot create a stream");
    }
    for (int i = 0; i < graph->events; i++) {
        x->events.push_back(NULL);
        if (cudaEventCreateWithFlags(&x->events.back(), cudaEventDisableTiming) != cudaSuccess)
            emu_fail("cudaGraphInstantiate: cannot create an event");
    }
    *exec = x;
    return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
    CHECK_STREAM(s, "cudaGraphLaunch");
    if (!exec) return emu_api_error(cudaErrorInvalidValue, "cudaGraphLaunch: NULL graph");
    if (g_active) /* a graph launched into a capture would be a child graph node */
        return emu_capture_refuses("cudaGraphLaunch") ? cudaErrorStreamCaptureUnsupported
                                                      : cudaSuccess;
    exec->streams[0] = s;
    for (const item &it : exec->items) {
        cudaStream_t on = exec->streams[it.slot];
        cudaError_t e = cudaSuccess;
        switch (it.kind) {
        case ITEM_OP: it.op(on); break;
        case ITEM_RECORD: e = cudaEventRecord(exec->events[it.event], on); break;
        case ITEM_WAIT: e = cudaStreamWaitEvent(on, exec->events[it.event], 0); break;
        }
        if (e != cudaSuccess) emu_fail("cudaGraphLaunch: a replayed event call failed");
    }
    return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
    delete graph;
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
    if (!exec) return cudaSuccess;
    for (size_t i = 1; i < exec->streams.size(); i++) (void)cudaStreamDestroy(exec->streams[i]);
    for (cudaEvent_t e : exec->events) (void)cudaEventDestroy(e);
    delete exec;
    return cudaSuccess;
}
