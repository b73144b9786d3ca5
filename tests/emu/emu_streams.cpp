/* Streams and events of the CUDA host emulator (a test tool; include/cuda_runtime.h, "Streams").
 * Every operation runs when it is issued, so the emulator cannot show what a GPU does when two
 * streams' work overlaps. It checks instead that the program ORDERS every pair of operations of
 * different streams that touch the same device bytes (one of them writing): with vector clocks,
 * the happens-before relation that CUDA defines. Each stream counts its operations; a stream
 * knows the count of every other stream up to which its next operation is ordered after that
 * stream's work: an event records the knowledge of its stream, cudaStreamWaitEvent passes it to
 * the waiting stream, a host synchronisation (cudaStreamSynchronize, cudaEventSynchronize, a
 * synchronous copy, cudaFree, cudaDeviceSynchronize) passes it to every operation issued after
 * it, and the legacy default stream is ordered with every blocking stream (not those created
 * with cudaStreamNonBlocking) as CUDA's legacy stream semantics say. Each allocation keeps the
 * recent accesses of each stream (operation count, byte range, read or write); an access that
 * overlaps one of another stream beyond the accessing stream's knowledge aborts with both
 * operations named: on a GPU they could run in either order, or at the same time. */
#include <stdio.h>
#include <stdlib.h>

#include <unordered_map>
#include <vector>

#include "emu_internal.h"

typedef std::vector<uint64_t> vclock; /* by stream id: operations known to be done before */

static void join(vclock &into, const vclock &from) {
    if (into.size() < from.size()) into.resize(from.size(), 0);
    for (size_t i = 0; i < from.size(); i++)
        if (from[i] > into[i]) into[i] = from[i];
}

static uint64_t at(const vclock &v, int id) { return (size_t)id < v.size() ? v[id] : 0; }

struct emu_stream {
    unsigned flags;
    int id;    /* 0: the legacy default stream, 1: cudaStreamPerThread, then in creation order */
    bool live; /* destroyed streams stay (their work still counts) but accept nothing */
    vclock known;
};
struct emu_event {
    unsigned flags;
    vclock known; /* its stream's knowledge when it was last recorded (empty before) */
};

static emu_stream g_legacy = {0, 0, true, {}}, g_per_thread = {0, 1, true, {}};
static std::vector<emu_stream *> g_all = {&g_legacy, &g_per_thread}; /* by id */
static std::unordered_map<cudaStream_t, emu_stream *> g_created;
static std::unordered_map<cudaEvent_t, bool> g_events;
static vclock g_host; /* what the host has waited for: every later operation comes after it */

static emu_stream *stream_of(cudaStream_t s) {
    switch ((uintptr_t)s) {
    case 0:
    case 1: return &g_legacy; /* 0 and cudaStreamLegacy */
    case 2: return &g_per_thread;
    }
    auto it = g_created.find(s);
    return it == g_created.end() ? NULL : it->second;
}

bool emu_stream_valid(cudaStream_t s) { return stream_of(s) != NULL; }

static const char *stream_name(int id, char *buf, size_t len) {
    if (id == 0) return "the legacy default stream";
    if (id == 1) return "cudaStreamPerThread";
    snprintf(buf, len, "stream #%d (the %d%s created)", id, id - 1,
             id - 1 == 1 ? "st" : id - 1 == 2 ? "nd" : id - 1 == 3 ? "rd" : "th");
    return buf;
}

/* What an operation issued on s now comes after: the host's waits, and the legacy stream's
 * implicit synchronisation with the blocking streams. */
static void issue_on(emu_stream *s) {
    join(s->known, g_host);
    if (s == &g_legacy) {
        for (emu_stream *b : g_all)
            if (b != &g_legacy && !(b->flags & cudaStreamNonBlocking)) join(s->known, b->known);
    } else if (!(s->flags & cudaStreamNonBlocking)) {
        join(s->known, g_legacy.known);
    }
}

/* ---- accesses: per allocation and stream, the recent ones (merged beyond a few dozen) ---- */

struct access {
    uint64_t op; /* the stream's operation count */
    uintptr_t lo, hi;
    bool write;
    const char *what;
};
typedef std::vector<std::vector<access>> alloc_log; /* by stream id */
static std::unordered_map<uintptr_t, alloc_log> g_logs;
enum { RECENT = 32 };

static struct {
    emu_stream *s;
    uint64_t op;
    const char *what;
} g_op;

void emu_stream_begin_op(cudaStream_t handle, const char *what) {
    emu_stream *s = stream_of(handle);
    if (!s) emu_fail("%s on stream %p, which does not exist", what, (void *)handle);
    /* work on the legacy stream during a capture (the captured stream's work cannot be ordered
     * with it): refused, as in CUDA's global mode; it still runs here */
    if (s == &g_legacy) (void)emu_capture_refuses(what);
    issue_on(s);
    if (s->known.size() <= (size_t)s->id) s->known.resize(s->id + 1, 0);
    g_op = {s, ++s->known[s->id], what};
}

/* Accesses of stream t up to this count are ordered before every operation any stream can
 * still issue (each comes after the host's knowledge, and after its stream's own). */
static uint64_t ordered_for_all(int t) {
    uint64_t lo = UINT64_MAX;
    for (emu_stream *u : g_all)
        if (u->live && u->id != t) {
            uint64_t k = at(u->known, t) > at(g_host, t) ? at(u->known, t) : at(g_host, t);
            if (k < lo) lo = k;
        }
    return lo;
}

static void remember(std::vector<access> &recent, const access &a) {
    recent.push_back(a);
    if (recent.size() <= RECENT) return;
    const uint64_t done = ordered_for_all(g_op.s->id);
    size_t keep = 0;
    for (const access &r : recent)
        if (r.op > done) recent[keep++] = r;
    recent.resize(keep);
    if (recent.size() <= RECENT) return;
    /* still too many: the two oldest become one (their span, the later count: conservative) */
    access &m = recent[1];
    m.lo = m.lo < recent[0].lo ? m.lo : recent[0].lo;
    m.hi = m.hi > recent[0].hi ? m.hi : recent[0].hi;
    m.write = m.write || recent[0].write;
    recent.erase(recent.begin());
}

void emu_stream_record(uintptr_t start, const void *p, size_t bytes, bool write) {
    const emu_stream *s = g_op.s;
    const uintptr_t lo = (uintptr_t)p, hi = lo + (bytes ? bytes : 1);
    alloc_log &log = g_logs[start];
    for (size_t t = 0; t < log.size(); t++) {
        if ((int)t == s->id) continue;
        const uint64_t known = at(s->known, (int)t);
        for (const access &r : log[t]) {
            if (r.op <= known || r.hi <= lo || hi <= r.lo || !(write || r.write)) continue;
            char a[64], b[64];
            emu_fail("stream order: %s on %s %s device memory at %p (allocation %p + %zu) that "
                     "%s on %s %s, and nothing orders the two (no cudaStreamWaitEvent on an "
                     "event recorded after it, no synchronisation): on a GPU they may run in "
                     "either order, or at once",
                     g_op.what, stream_name(s->id, a, sizeof a), write ? "writes" : "reads",
                     (void *)(r.lo > lo ? r.lo : lo), (void *)start,
                     (size_t)((r.lo > lo ? r.lo : lo) - start), r.what,
                     stream_name((int)t, b, sizeof b), r.write ? "wrote" : "read");
        }
    }
    if (log.size() <= (size_t)s->id) log.resize(s->id + 1);
    remember(log[s->id], {g_op.op, lo, hi, write, g_op.what});
}

void emu_stream_free(uintptr_t start) {
    (void)cudaDeviceSynchronize(); /* as cudaFree does */
    g_logs.erase(start);
}

/* ---- the extension for library stand-ins (cuda_runtime.h) ---- */

cudaError_t emu_stream_op(cudaStream_t s, const char *what) {
    CHECK_STREAM(s, what);
    /* a stand-in that can be recorded (cuBLAS) records itself before asking */
    if (emu_capturing(s) && emu_capture_refuses(what)) return cudaErrorStreamCaptureUnsupported;
    emu_stream_begin_op(s, what);
    return cudaSuccess;
}

cudaError_t emu_stream_access(const void *p, size_t bytes, int write) {
    if (!g_op.s) emu_fail("emu_stream_access before emu_stream_op");
    uintptr_t start = emu_alloc_start(p, bytes);
    if (!start)
        return emu_api_error(cudaErrorInvalidValue,
                             "%s: [%p, +%zu bytes) is not inside one device allocation",
                             g_op.what, p, bytes);
    emu_stream_record(start, p, bytes, write != 0);
    return cudaSuccess;
}

/* ---- the runtime API ---- */

#define CHECK_EVENT(e, what)                                                                       \
    if (!g_events.count(e))                                                                        \
    return emu_api_error(cudaErrorInvalidResourceHandle, "%s: event %p was not created (or was " \
                         "destroyed)", what, (void *)(e))

cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, 0); }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags) {
    if (!s || flags > cudaStreamNonBlocking)
        return emu_api_error(cudaErrorInvalidValue, "cudaStreamCreateWithFlags: bad arguments");
    emu_stream *st = new emu_stream{flags, (int)g_all.size(), true, {}};
    g_all.push_back(st); /* kept after cudaStreamDestroy: handles are never reused */
    *s = st;
    g_created[*s] = st;
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    auto it = g_created.find(s);
    if (it == g_created.end())
        return emu_api_error(cudaErrorInvalidResourceHandle,
                             "cudaStreamDestroy(%p): no such stream", (void *)s);
    it->second->live = false;
    g_created.erase(it);
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    CHECK_STREAM(s, "cudaStreamSynchronize");
    if (emu_capture_refuses("cudaStreamSynchronize")) return cudaErrorStreamCaptureUnsupported;
    emu_stream *st = stream_of(s);
    issue_on(st); /* the legacy stream: waiting for it includes the blocking streams' work */
    join(g_host, st->known);
    return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t s) { /* always done: as much as a synchronisation */
    return cudaStreamSynchronize(s);
}
cudaError_t cudaDeviceSynchronize(void) {
    if (emu_capture_refuses("cudaDeviceSynchronize")) return cudaErrorStreamCaptureUnsupported;
    for (const emu_stream *s : g_all) join(g_host, s->known);
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, 0); }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags) {
    if (!e) return emu_api_error(cudaErrorInvalidValue, "cudaEventCreate: NULL result pointer");
    *e = new emu_event{flags, {}};
    g_events[*e] = true;
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    CHECK_EVENT(e, "cudaEventDestroy");
    g_events.erase(e);
    emu_capture_forget(e);
    delete e;
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    CHECK_STREAM(s, "cudaEventRecord");
    CHECK_EVENT(e, "cudaEventRecord");
    if (emu_capture_record(e, s)) return cudaSuccess; /* a node of the graph */
    emu_stream *st = stream_of(s);
    issue_on(st);
    e->known = st->known;
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    if (emu_capture_refuses("cudaEventSynchronize")) return cudaErrorStreamCaptureUnsupported;
    CHECK_EVENT(e, "cudaEventSynchronize");
    cudaError_t err = emu_capture_event_usable(e, "cudaEventSynchronize");
    if (err != cudaSuccess) return err;
    join(g_host, e->known);
    return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e) { return cudaEventSynchronize(e); }
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags) {
    CHECK_STREAM(s, "cudaStreamWaitEvent");
    CHECK_EVENT(e, "cudaStreamWaitEvent");
    if (flags)
        return emu_api_error(cudaErrorInvalidValue, "cudaStreamWaitEvent: flags %u", flags);
    int captured = 0; /* a fork or join inside a capture, or a misuse of a captured event */
    cudaError_t err = emu_capture_wait(s, e, &captured);
    if (captured) return err;
    join(stream_of(s)->known, e->known);
    return cudaSuccess;
}
