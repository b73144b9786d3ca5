/* Self-test of the CUDA host emulator's stream order check (emu_streams.cpp; a test tool, see
 * include/cuda_runtime.h, "Streams"), run by ctest as emu_streams_selftest. Each case runs in a
 * child process, touching device buffers from two or three streams:
 *   - ordered, the child must exit normally: an event recorded after the write and waited for by
 *     the reader's stream, a chain of two such waits, the host synchronising with the writer
 *     (cudaStreamSynchronize, cudaDeviceSynchronize) before issuing the reader, two blocking
 *     streams with an operation of the legacy default stream between them, copies to disjoint
 *     bytes of one buffer, reads on both streams, and a library stand-in (emu_stream_op) ordered
 *     by events;
 *   - unordered, the child must abort: no wait (read after write, write after read), an event
 *     recorded before the write, two non-blocking streams with a legacy operation between them
 *     (legacy synchronisation does not apply to them), and a library stand-in's write followed
 *     by a kernel on another stream without a wait.
 * And graphs by stream capture: a captured kernel, memset and copy run nothing until launched
 * and run again at each launch, the copy reading its host buffer as it is then; a
 * synchronisation or cudaMalloc inside a capture fails and invalidates it; a graph's replayed
 * write read from another stream with no wait aborts. A stream that waits for a captured event
 * joins the capture and its work replays, ordered by the recorded events; a fork not joined back
 * and a wait for uncaptured work fail the capture, a captured event cannot be waited for once
 * the capture has ended; the graph's work of a joined stream is not ordered with later work
 * issued on that stream (it aborts). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cuda_runtime.h>

enum { N = 128 };
static int g_fails;

__global__ void write_kernel(float *x, float v) { x[threadIdx.x] = v; }
__global__ void read_kernel(const float *x, float *out) { out[threadIdx.x] = x[threadIdx.x]; }

struct bufs {
    float *x, *y, *out;   /* x is shared; y and out are scratch */
    cudaStream_t s1, s2; /* non-blocking */
};

static void make(bufs *b) {
    cudaMalloc(&b->x, N * sizeof(float));
    cudaMalloc(&b->y, N * sizeof(float));
    cudaMalloc(&b->out, N * sizeof(float));
    cudaStreamCreateWithFlags(&b->s1, cudaStreamNonBlocking);
    cudaStreamCreateWithFlags(&b->s2, cudaStreamNonBlocking);
}

static void write_on(cudaStream_t s, float *x) { write_kernel<<<1, N, 0, s>>>(x, 1.0f); }
static void read_on(cudaStream_t s, const bufs *b) { read_kernel<<<1, N, 0, s>>>(b->x, b->out); }

/* ---- ordered ---- */
static void event_wait(bufs *b) {
    cudaEvent_t e;
    cudaEventCreateWithFlags(&e, cudaEventDisableTiming);
    write_on(b->s1, b->x);
    cudaEventRecord(e, b->s1);
    cudaStreamWaitEvent(b->s2, e, 0);
    read_on(b->s2, b);
}
static void event_chain(bufs *b) {
    cudaStream_t s3;
    cudaEvent_t e1, e2;
    cudaStreamCreateWithFlags(&s3, cudaStreamNonBlocking);
    cudaEventCreate(&e1);
    cudaEventCreate(&e2);
    write_on(b->s1, b->x);
    cudaEventRecord(e1, b->s1);
    cudaStreamWaitEvent(b->s2, e1, 0);
    cudaEventRecord(e2, b->s2);
    cudaStreamWaitEvent(s3, e2, 0);
    read_kernel<<<1, N, 0, s3>>>(b->x, b->out);
}
static void stream_sync(bufs *b) {
    write_on(b->s1, b->x);
    cudaStreamSynchronize(b->s1);
    read_on(b->s2, b);
}
static void device_sync(bufs *b) {
    write_on(b->s1, b->x);
    cudaDeviceSynchronize();
    read_on(b->s2, b);
}
static void legacy_between_blocking(bufs *b) {
    cudaStream_t b1, b2;
    cudaStreamCreate(&b1);
    cudaStreamCreate(&b2);
    write_on(b1, b->x);
    cudaMemsetAsync(b->y, 0, sizeof(float), 0); /* the legacy stream: after b1, before b2 */
    read_kernel<<<1, N, 0, b2>>>(b->x, b->out);
}
static void disjoint_copies(bufs *b) {
    static float h[N];
    cudaMemcpyAsync(b->x, h, N / 2 * sizeof(float), cudaMemcpyHostToDevice, b->s1);
    cudaMemcpyAsync(b->x + N / 2, h, N / 2 * sizeof(float), cudaMemcpyHostToDevice, b->s2);
}
static void reads_on_both(bufs *b) {
    write_on(b->s1, b->x);
    cudaStreamSynchronize(b->s1);
    read_on(b->s1, b);
    read_kernel<<<1, N, 0, b->s2>>>(b->x, b->y);
}
static void library_with_events(bufs *b) {
    cudaEvent_t ready, done;
    cudaEventCreate(&ready);
    cudaEventCreate(&done);
    write_on(b->s1, b->x);
    cudaEventRecord(ready, b->s1);
    cudaStreamWaitEvent(b->s2, ready, 0);
    if (emu_stream_op(b->s2, "collective") != cudaSuccess ||
        emu_stream_access(b->x, N * sizeof(float), 1) != cudaSuccess)
        _exit(3);
    cudaEventRecord(done, b->s2);
    cudaStreamWaitEvent(b->s1, done, 0);
    read_on(b->s1, b);
}

/* ---- unordered ---- */
static void no_wait(bufs *b) {
    write_on(b->s1, b->x);
    read_on(b->s2, b);
}
static void write_after_read(bufs *b) {
    read_on(b->s1, b);
    write_on(b->s2, b->x);
}
static void event_too_early(bufs *b) {
    cudaEvent_t e;
    cudaEventCreate(&e);
    cudaEventRecord(e, b->s1);
    write_on(b->s1, b->x);
    cudaStreamWaitEvent(b->s2, e, 0);
    read_on(b->s2, b);
}
static void legacy_between_nonblocking(bufs *b) {
    write_on(b->s1, b->x);
    cudaMemsetAsync(b->y, 0, sizeof(float), 0);
    read_on(b->s2, b);
}
static void library_without_wait(bufs *b) {
    if (emu_stream_op(b->s2, "collective") != cudaSuccess ||
        emu_stream_access(b->x, N * sizeof(float), 1) != cudaSuccess)
        _exit(3);
    read_on(b->s1, b);
}

static void expect(const char *what, bool aborts, void (*body)(bufs *)) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        bufs b;
        make(&b);
        body(&b);
        _exit(cudaGetLastError() == cudaSuccess ? 0 : 2);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    const bool ok = aborts ? WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT
                           : WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok) {
        printf("FAIL: %s: expected %s, got status %d\n", what, aborts ? "an abort" : "exit 0",
               status);
        g_fails++;
    } else {
        printf("as expected (%s): %s\n", aborts ? "aborted" : "ordered", what);
    }
}

/* ---- graphs (emu_graph.cpp) ---- */
#define REQUIRE(c) ((c) ? (void)0 : (printf("  not so: %s\n", #c), abort()))

static float host_value(const float *dev) {
    float v;
    REQUIRE(cudaMemcpy(&v, dev, sizeof v, cudaMemcpyDeviceToHost) == cudaSuccess);
    return v;
}

/* Nothing runs while capturing; each launch runs the kernel, the memset and the copy again, the
 * copy reading the host buffer as it is at that launch. */
static void graph_replays(bufs *b) {
    float *h;
    REQUIRE(cudaMallocHost((void **)&h, N * sizeof(float)) == cudaSuccess);
    for (int i = 0; i < N; i++) h[i] = 5.0f;
    REQUIRE(cudaMemset(b->x, 0, N * sizeof(float)) == cudaSuccess);
    REQUIRE(cudaMemset(b->y, 0, N * sizeof(float)) == cudaSuccess);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess); /* s1 is non-blocking */
    cudaGraph_t g;
    cudaGraphExec_t ge;
    cudaStreamCaptureStatus st;
    REQUIRE(cudaStreamBeginCapture(b->s1, cudaStreamCaptureModeGlobal) == cudaSuccess);
    REQUIRE(cudaStreamIsCapturing(b->s1, &st) == cudaSuccess &&
            st == cudaStreamCaptureStatusActive);
    REQUIRE(cudaMemsetAsync(b->out, 0, N * sizeof(float), b->s1) == cudaSuccess);
    write_on(b->s1, b->x);
    REQUIRE(cudaMemcpyAsync(b->y, h, N * sizeof(float), cudaMemcpyHostToDevice, b->s1) ==
            cudaSuccess);
    REQUIRE(cudaStreamEndCapture(b->s1, &g) == cudaSuccess && g);
    REQUIRE(host_value(b->x) == 0.0f && host_value(b->y) == 0.0f); /* recorded, not run */
    REQUIRE(cudaGraphInstantiate(&ge, g, 0) == cudaSuccess);
    REQUIRE(cudaGraphDestroy(g) == cudaSuccess);
    REQUIRE(cudaGraphLaunch(ge, b->s1) == cudaSuccess);
    REQUIRE(cudaStreamSynchronize(b->s1) == cudaSuccess);
    REQUIRE(host_value(b->x) == 1.0f && host_value(b->y) == 5.0f);
    for (int i = 0; i < N; i++) h[i] = 7.0f;
    REQUIRE(cudaMemset(b->x, 0, N * sizeof(float)) == cudaSuccess);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    REQUIRE(cudaGraphLaunch(ge, b->s1) == cudaSuccess);
    REQUIRE(cudaStreamSynchronize(b->s1) == cudaSuccess);
    REQUIRE(host_value(b->x) == 1.0f && host_value(b->y) == 7.0f);
    REQUIRE(cudaGraphExecDestroy(ge) == cudaSuccess);
}

/* A synchronisation inside a capture fails and so does the capture; work goes on after it. */
static void graph_refuses_sync(bufs *b) {
    cudaGraph_t g = (cudaGraph_t)1;
    float *p = NULL;
    REQUIRE(cudaStreamBeginCapture(b->s1, cudaStreamCaptureModeGlobal) == cudaSuccess);
    write_on(b->s1, b->x);
    REQUIRE(cudaStreamSynchronize(b->s2) == cudaErrorStreamCaptureUnsupported);
    REQUIRE(cudaMalloc(&p, 16) == cudaErrorStreamCaptureUnsupported && !p);
    REQUIRE(cudaStreamEndCapture(b->s1, &g) == cudaErrorStreamCaptureInvalidated && !g);
    REQUIRE(cudaStreamSynchronize(b->s1) == cudaSuccess); /* no capture now */
    (void)cudaGetLastError();
}

/* The replayed work is ordinary work of the launch's stream: a reader on another stream that
 * does not wait for it is caught. */
static void graph_replay_unordered(bufs *b) {
    cudaGraph_t g;
    cudaGraphExec_t ge;
    REQUIRE(cudaStreamBeginCapture(b->s1, cudaStreamCaptureModeGlobal) == cudaSuccess);
    write_on(b->s1, b->x);
    REQUIRE(cudaStreamEndCapture(b->s1, &g) == cudaSuccess);
    REQUIRE(cudaGraphInstantiate(&ge, g, 0) == cudaSuccess);
    REQUIRE(cudaGraphLaunch(ge, b->s1) == cudaSuccess);
    read_on(b->s2, b);
}

/* A fork and a join: s2 joins the capture by waiting for an event of s1's, reads what s1
 * wrote, and s1 waits for s2's work before its own last write; each launch replays both
 * streams' work, ordered by the recorded events. */
static void graph_fork_join(bufs *b) {
    cudaEvent_t forked, joined;
    cudaGraph_t g;
    cudaGraphExec_t ge;
    cudaStreamCaptureStatus st;
    REQUIRE(cudaEventCreateWithFlags(&forked, cudaEventDisableTiming) == cudaSuccess);
    REQUIRE(cudaEventCreateWithFlags(&joined, cudaEventDisableTiming) == cudaSuccess);
    REQUIRE(cudaMemset(b->out, 0, N * sizeof(float)) == cudaSuccess);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    REQUIRE(cudaStreamBeginCapture(b->s1, cudaStreamCaptureModeGlobal) == cudaSuccess);
    write_on(b->s1, b->x);
    REQUIRE(cudaEventRecord(forked, b->s1) == cudaSuccess);
    REQUIRE(cudaStreamWaitEvent(b->s2, forked, 0) == cudaSuccess);
    REQUIRE(cudaStreamIsCapturing(b->s2, &st) == cudaSuccess &&
            st == cudaStreamCaptureStatusActive);
    read_on(b->s2, b); /* out = x */
    REQUIRE(cudaEventRecord(joined, b->s2) == cudaSuccess);
    REQUIRE(cudaStreamWaitEvent(b->s1, joined, 0) == cudaSuccess);
    write_kernel<<<1, N, 0, b->s1>>>(b->x, 2.0f); /* after s2's read of x */
    REQUIRE(cudaStreamEndCapture(b->s1, &g) == cudaSuccess && g);
    REQUIRE(cudaStreamIsCapturing(b->s2, &st) == cudaSuccess && st == cudaStreamCaptureStatusNone);
    REQUIRE(host_value(b->out) == 0.0f); /* recorded, not run */
    REQUIRE(cudaGraphInstantiate(&ge, g, 0) == cudaSuccess);
    REQUIRE(cudaGraphDestroy(g) == cudaSuccess);
    for (int launch = 0; launch < 2; launch++) {
        REQUIRE(cudaGraphLaunch(ge, b->s1) == cudaSuccess);
        REQUIRE(cudaStreamSynchronize(b->s1) == cudaSuccess);
        REQUIRE(host_value(b->out) == 1.0f && host_value(b->x) == 2.0f);
    }
    REQUIRE(cudaGraphExecDestroy(ge) == cudaSuccess);
    /* the events were last recorded in the capture: not usable until recorded again */
    REQUIRE(cudaStreamWaitEvent(b->s2, joined, 0) == cudaErrorCapturedEvent);
    REQUIRE(cudaEventSynchronize(forked) == cudaErrorCapturedEvent);
    REQUIRE(cudaEventRecord(joined, b->s1) == cudaSuccess);
    REQUIRE(cudaStreamWaitEvent(b->s2, joined, 0) == cudaSuccess);
    (void)cudaGetLastError();
}

/* A stream that joined and was not joined back fails the capture; so does a capturing stream
 * waiting for an event recorded outside it. */
static void graph_refuses_unjoined(bufs *b) {
    cudaEvent_t e, outside;
    cudaGraph_t g = (cudaGraph_t)1;
    REQUIRE(cudaEventCreateWithFlags(&e, cudaEventDisableTiming) == cudaSuccess);
    REQUIRE(cudaEventCreateWithFlags(&outside, cudaEventDisableTiming) == cudaSuccess);
    REQUIRE(cudaStreamBeginCapture(b->s1, cudaStreamCaptureModeGlobal) == cudaSuccess);
    REQUIRE(cudaEventRecord(e, b->s1) == cudaSuccess);
    REQUIRE(cudaStreamWaitEvent(b->s2, e, 0) == cudaSuccess);
    read_on(b->s2, b);
    REQUIRE(cudaStreamEndCapture(b->s2, &g) == cudaErrorStreamCaptureUnmatched && !g);
    REQUIRE(cudaStreamEndCapture(b->s1, &g) == cudaErrorStreamCaptureUnjoined && !g);
    REQUIRE(cudaEventRecord(outside, b->s2) == cudaSuccess); /* s2 is not capturing now */
    REQUIRE(cudaStreamBeginCapture(b->s1, cudaStreamCaptureModeGlobal) == cudaSuccess);
    REQUIRE(cudaStreamWaitEvent(b->s1, outside, 0) == cudaErrorStreamCaptureIsolation);
    write_on(b->s1, b->x);
    REQUIRE(cudaStreamEndCapture(b->s1, &g) == cudaErrorStreamCaptureInvalidated && !g);
    (void)cudaGetLastError();
}

/* The graph's work on a joined stream runs on a stream of the graph, not on the stream that was
 * captured: work issued there later is not ordered after it. */
static void graph_side_stream_unordered(bufs *b) {
    cudaEvent_t forked, joined;
    cudaGraph_t g;
    cudaGraphExec_t ge;
    cudaEventCreateWithFlags(&forked, cudaEventDisableTiming);
    cudaEventCreateWithFlags(&joined, cudaEventDisableTiming);
    REQUIRE(cudaStreamBeginCapture(b->s1, cudaStreamCaptureModeGlobal) == cudaSuccess);
    REQUIRE(cudaEventRecord(forked, b->s1) == cudaSuccess);
    REQUIRE(cudaStreamWaitEvent(b->s2, forked, 0) == cudaSuccess);
    write_on(b->s2, b->y);
    REQUIRE(cudaEventRecord(joined, b->s2) == cudaSuccess);
    REQUIRE(cudaStreamWaitEvent(b->s1, joined, 0) == cudaSuccess);
    REQUIRE(cudaStreamEndCapture(b->s1, &g) == cudaSuccess);
    REQUIRE(cudaGraphInstantiate(&ge, g, 0) == cudaSuccess);
    REQUIRE(cudaGraphLaunch(ge, b->s1) == cudaSuccess);
    write_on(b->s2, b->y); /* s2 never waited for the launch on s1 */
}

int main(void) {
    expect("event recorded after the write, waited for", false, event_wait);
    expect("a chain of two event waits", false, event_chain);
    expect("cudaStreamSynchronize of the writer", false, stream_sync);
    expect("cudaDeviceSynchronize", false, device_sync);
    expect("legacy operation between two blocking streams", false, legacy_between_blocking);
    expect("copies to disjoint halves of one buffer", false, disjoint_copies);
    expect("reads on two streams", false, reads_on_both);
    expect("library operation ordered by events", false, library_with_events);
    expect("read after write on another stream, no wait", true, no_wait);
    expect("write after read on another stream, no wait", true, write_after_read);
    expect("event recorded before the write", true, event_too_early);
    expect("legacy operation between two non-blocking streams", true, legacy_between_nonblocking);
    expect("library write, then a kernel on another stream", true, library_without_wait);
    expect("a captured graph replays its work at each launch", false, graph_replays);
    expect("a synchronisation inside a capture invalidates it", false, graph_refuses_sync);
    expect("a graph's write, then a read on another stream without a wait", true,
           graph_replay_unordered);
    expect("a captured fork and join replay both streams' work, ordered", false,
           graph_fork_join);
    expect("an unjoined fork, and a wait for uncaptured work, fail the capture", false,
           graph_refuses_unjoined);
    expect("work on a stream that joined a capture, unordered with the graph's launch", true,
           graph_side_stream_unordered);
    printf("%s: %d failed checks\n", g_fails ? "FAILED" : "PASSED", g_fails);
    return g_fails ? 1 : 0;
}
