/* CUDA backend memory, the compute stream, the scratch workspace, host staging buffers and the
 * error check. The model makes a handful of large allocations (one per category), so the
 * bookkeeping of their sizes (for cuda_bytes_peak) is a small array searched linearly; so is the
 * table of staging buffers (a few per model).
 *
 * Every call here that blocks the host until the compute stream (or the device) has caught up
 * goes through host_blocking(), which counts it (cuda_sync_count): a training step is meant to
 * make exactly one, its read-back, and tests/unit/test_cuda_step.c holds it to that. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/cuda/cuda_common.cuh"
#include "model/cuda/cuda_ops.h"

static cudaStream_t g_stream;
static void *g_workspace[CUDA_WS_SLOTS];
static size_t g_workspace_bytes[CUDA_WS_SLOTS];
static unsigned long long g_workspace_allocs[CUDA_WS_SLOTS]; /* allocations made, per slot */

#define CUDA_MAX_ALLOCS 4096
static struct {
    void *p;
    size_t bytes;
} g_allocs[CUDA_MAX_ALLOCS];
static int g_n_allocs;
static size_t g_in_use, g_peak;

/* Page-locked host buffers (cuda_host_alloc) and, for each, an event recorded after the last
 * asynchronous copy that reads it. */
#define CUDA_MAX_HOST_BUFS 64
static struct {
    char *p;
    size_t bytes;
    cudaEvent_t read; /* recorded after the last copy from the buffer */
    int pending;      /* a copy was queued since the last wait */
} g_host[CUDA_MAX_HOST_BUFS];
static int g_n_host;

static unsigned long long g_syncs, g_staging_waits;
static int g_capturing; /* a CUDA graph capture of g_stream is active (graph.cu) */

void cuda_set_capturing(int on) { g_capturing = on; }
int cuda_capturing(void) { return g_capturing; }

/* A call that makes the host wait for queued device work. */
static void host_blocking(cudaError_t e, const char *what, const char *file, int line) {
    g_syncs++;
    cuda_check(e, what, file, line);
}
#define CUDA_BLOCKING(call) host_blocking((call), #call, __FILE__, __LINE__)

unsigned long long cuda_sync_count(void) { return g_syncs; }

unsigned long long cuda_staging_wait_count(void) { return g_staging_waits; }

void cuda_check(cudaError_t e, const char *what, const char *file, int line) {
    if (e == cudaSuccess) return;
    int dev = -1;
    (void)cudaGetDevice(&dev);
    fprintf(stderr, "difftrain: error: CUDA: %s failed at %s:%d on device %d: %s (%s)\n", what,
            file, line, dev, cudaGetErrorString(e), cudaGetErrorName(e));
    if (g_capturing)
        fprintf(stderr, "difftrain: (while recording the step as a CUDA graph: "
                "DIFFTRAIN_CUDA_GRAPHS=0 runs it as issued)\n");
    fflush(stderr);
    abort();
}

cudaStream_t cuda_stream(void) { return g_stream; }

void *cuda_stream_handle(void) { return (void *)g_stream; }

/* Called by cuda_backend_init once the device is selected. */
int cuda_memory_init(void) {
    if (g_stream) return 0;
    cudaError_t e = cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        fprintf(stderr, "difftrain: error: CUDA: cannot create a stream: %s\n",
                cudaGetErrorString(e));
        (void)cudaGetLastError();
        g_stream = NULL;
        return -1;
    }
    return 0;
}

size_t cuda_bytes_peak(void) { return g_peak; }

size_t cuda_device_bytes_used(void) {
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return total_b - free_b;
}

static void track(void *p, size_t bytes) {
    if (g_n_allocs < CUDA_MAX_ALLOCS) g_allocs[g_n_allocs++] = {p, bytes};
    g_in_use += bytes;
    if (g_in_use > g_peak) g_peak = g_in_use;
}

/* Forgets allocation p; returns its size (0 when it was not tracked). */
static size_t untrack(void *p) {
    for (int i = 0; i < g_n_allocs; i++)
        if (g_allocs[i].p == p) {
            const size_t bytes = g_allocs[i].bytes;
            g_in_use -= bytes;
            g_allocs[i] = g_allocs[--g_n_allocs];
            return bytes;
        }
    return 0;
}

void cuda_memory_shutdown(void) {
    cuda_weights_drop(); /* their workspace goes below */
    for (int s = 0; s < CUDA_WS_SLOTS; s++) {
        if (g_workspace[s]) {
            untrack(g_workspace[s]);
            (void)cudaFreeAsync(g_workspace[s], g_stream);
            (void)cudaStreamSynchronize(g_stream);
        }
        g_workspace[s] = NULL;
        g_workspace_bytes[s] = 0;
    }
    if (g_stream) (void)cudaStreamDestroy(g_stream);
    g_stream = NULL;
}

/* The backend contract: zero-filled, NULL on failure (the caller reports it by name). */
void *cuda_alloc(size_t bytes) {
    void *p = NULL;
    if (bytes == 0) bytes = 1;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
        (void)cudaGetLastError(); /* out of memory is the caller's to report, not sticky */
        return NULL;
    }
    g_syncs++; /* the zero fill is waited for below */
    if (cudaMemsetAsync(p, 0, bytes, g_stream) != cudaSuccess ||
        cudaStreamSynchronize(g_stream) != cudaSuccess) {
        (void)cudaGetLastError();
        (void)cudaFree(p);
        return NULL;
    }
    track(p, bytes);
    return p;
}

void cuda_free(void *p) {
    if (!p) return;
    /* queued kernels may still use p: cudaFree waits for the device, so this is safe */
    const size_t bytes = untrack(p);
    cuda_weights_written(p, bytes ? bytes : 1);
    CUDA_BLOCKING(cudaFree(p));
}

void cuda_memset_zero(void *p, size_t bytes) {
    cuda_weights_written(p, bytes);
    if (bytes) CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, g_stream));
}

void cuda_copy_to_host(void *dst_host, const void *src, size_t bytes) {
    if (!bytes) return;
    CUDA_CHECK(cudaMemcpyAsync(dst_host, src, bytes, cudaMemcpyDeviceToHost, g_stream));
    CUDA_BLOCKING(cudaStreamSynchronize(g_stream));
}

/* The host buffer may be reused as soon as this returns (callers pass buffers of any kind, on
 * the stack too), so the copy is complete before returning. Staging buffers avoid the wait. */
void cuda_copy_from_host(void *dst, const void *src_host, size_t bytes) {
    if (!bytes) return;
    cuda_weights_written(dst, bytes);
    CUDA_CHECK(cudaMemcpyAsync(dst, src_host, bytes, cudaMemcpyHostToDevice, g_stream));
    CUDA_BLOCKING(cudaStreamSynchronize(g_stream));
}

void cuda_copy(void *dst, const void *src, size_t bytes) {
    cuda_weights_written(dst, bytes);
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, g_stream));
}

void cuda_synchronize(void) { CUDA_BLOCKING(cudaStreamSynchronize(g_stream)); }

/* Stream-ordered: the old buffer is freed once the kernels queued so far (which may read it)
 * are done, and the new one is ready for the kernels queued after this call; the host does not
 * wait, so an op that grows the workspace inside a training step costs it no synchronisation. */
void *cuda_workspace_slot(int slot, size_t bytes) {
    if (slot < 0 || slot >= CUDA_WS_SLOTS) {
        fprintf(stderr, "difftrain: error: CUDA: no workspace slot %d\n", slot);
        abort();
    }
    if (bytes <= g_workspace_bytes[slot]) return g_workspace[slot];
    if (g_capturing) { /* a graph would keep the old address, and the sizes never change */
        fprintf(stderr, "difftrain: error: CUDA: workspace slot %d must grow to %zu bytes inside "
                "a CUDA graph capture; the eager step before the capture should have sized it "
                "(run with DIFFTRAIN_CUDA_GRAPHS=0)\n", slot, bytes);
        abort();
    }
    if (g_workspace[slot]) {
        untrack(g_workspace[slot]);
        CUDA_CHECK(cudaFreeAsync(g_workspace[slot], g_stream));
    }
    g_workspace[slot] = NULL;
    g_workspace_bytes[slot] = 0;
    size_t grow = bytes + bytes / 4; /* fewer regrowths when sizes creep up */
    void *p = NULL;
    if (cudaMallocAsync(&p, grow, g_stream) != cudaSuccess) {
        (void)cudaGetLastError();
        fprintf(stderr, "difftrain: error: CUDA: out of device memory for %zu bytes of op "
                "workspace (%zu bytes in use)\n", grow, g_in_use);
        abort();
    }
    track(p, grow);
    g_workspace[slot] = p;
    g_workspace_bytes[slot] = grow;
    g_workspace_allocs[slot]++;
    return p;
}

unsigned long long cuda_workspace_generation(void) {
    unsigned long long n = 0;
    for (int s = 0; s < CUDA_WS_SLOTS; s++) n += g_workspace_allocs[s];
    return n;
}

void *cuda_workspace(size_t bytes) { return cuda_workspace_slot(CUDA_WS_OPS, bytes); }

/* A new buffer may have the old one's address (freed and allocated again, stream-ordered), so
 * the allocations are counted rather than the pointers compared. */
void *cuda_workspace_slot_kept(int slot, size_t bytes, bool *fresh) {
    const unsigned long long before =
        slot >= 0 && slot < CUDA_WS_SLOTS ? g_workspace_allocs[slot] : 0;
    void *p = cuda_workspace_slot(slot, bytes); /* aborts on a slot that does not exist */
    *fresh = g_workspace_allocs[slot] != before;
    return p;
}

/* ---- host staging (model/backend.h) ---- */

static int host_index(const void *p, size_t bytes) {
    const char *c = (const char *)p;
    for (int i = 0; i < g_n_host; i++) {
        if (c < g_host[i].p || bytes > g_host[i].bytes) continue;
        if ((size_t)(c - g_host[i].p) <= g_host[i].bytes - bytes) return i;
    }
    return -1;
}

/* The index of the staging buffer holding [p, p + bytes); a pointer outside every one is a
 * programming error (an asynchronous copy from pageable memory would be silently synchronous,
 * or read memory the host is already refilling). */
static int host_index_or_abort(const void *p, size_t bytes, const char *what) {
    int i = host_index(p, bytes);
    if (i >= 0) return i;
    fprintf(stderr, "difftrain: error: CUDA: %s: host range [%p, +%zu bytes) is not inside one "
            "buffer from cuda_host_alloc\n", what, p, bytes);
    fflush(stderr);
    abort();
}

void *cuda_host_alloc(size_t bytes) {
    if (g_n_host == CUDA_MAX_HOST_BUFS) return NULL;
    void *p = NULL;
    if (bytes == 0) bytes = 1;
    if (cudaMallocHost(&p, bytes) != cudaSuccess) {
        (void)cudaGetLastError();
        return NULL;
    }
    cudaEvent_t e;
    if (cudaEventCreateWithFlags(&e, cudaEventDisableTiming) != cudaSuccess) {
        (void)cudaGetLastError();
        (void)cudaFreeHost(p);
        return NULL;
    }
    g_host[g_n_host].p = (char *)p;
    g_host[g_n_host].bytes = bytes;
    g_host[g_n_host].read = e;
    g_host[g_n_host].pending = 0;
    g_n_host++;
    return p;
}

void cuda_host_free(void *p) {
    if (!p) return;
    int i = host_index_or_abort(p, 0, "cuda_host_free");
    cuda_host_wait(p);
    CUDA_CHECK(cudaEventDestroy(g_host[i].read));
    CUDA_BLOCKING(cudaFreeHost(p)); /* may wait for the device as cudaFree does */
    g_host[i] = g_host[--g_n_host];
}

void cuda_copy_from_host_async(void *dst, const void *src_host, size_t bytes) {
    if (!bytes) return;
    int i = host_index_or_abort(src_host, bytes, "cuda_copy_from_host_async");
    cuda_weights_written(dst, bytes);
    CUDA_CHECK(cudaMemcpyAsync(dst, src_host, bytes, cudaMemcpyHostToDevice, g_stream));
    /* in a graph the copy reads the buffer at each launch, and no event can say when: the
     * graph's user waits for the launch (the training step's read-back) before refilling it */
    if (g_capturing) return;
    CUDA_CHECK(cudaEventRecord(g_host[i].read, g_stream));
    g_host[i].pending = 1;
}

/* Waits only for the buffer's last copy; counted apart from the synchronisations (a copy that
 * is still queued means the host runs ahead of the device: back-pressure, as intended). */
void cuda_host_wait(const void *p) {
    int i = host_index_or_abort(p, 0, "cuda_host_wait");
    if (!g_host[i].pending) return;
    cudaError_t e = cudaEventQuery(g_host[i].read);
    if (e == cudaErrorNotReady) {
        (void)cudaGetLastError(); /* not an error: the copy is still queued */
        g_staging_waits++;
        e = cudaEventSynchronize(g_host[i].read);
    }
    CUDA_CHECK(e);
    g_host[i].pending = 0;
}
