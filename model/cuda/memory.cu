/* CUDA backend memory, the compute stream, the scratch workspace and the error check. The model
 * makes a handful of large allocations (one per category), so the bookkeeping of their sizes
 * (for cuda_bytes_peak) is a small array searched linearly. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/cuda/cuda_common.cuh"
#include "model/cuda/cuda_ops.h"

static cudaStream_t g_stream;
static void *g_workspace;
static size_t g_workspace_bytes;

#define CUDA_MAX_ALLOCS 4096
static struct {
    void *p;
    size_t bytes;
} g_allocs[CUDA_MAX_ALLOCS];
static int g_n_allocs;
static size_t g_in_use, g_peak;

void cuda_check(cudaError_t e, const char *what, const char *file, int line) {
    if (e == cudaSuccess) return;
    int dev = -1;
    (void)cudaGetDevice(&dev);
    fprintf(stderr, "difftrain: error: CUDA: %s failed at %s:%d on device %d: %s (%s)\n", what,
            file, line, dev, cudaGetErrorString(e), cudaGetErrorName(e));
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

void cuda_memory_shutdown(void) {
    if (g_workspace) cuda_free(g_workspace);
    g_workspace = NULL;
    g_workspace_bytes = 0;
    if (g_stream) (void)cudaStreamDestroy(g_stream);
    g_stream = NULL;
}

size_t cuda_bytes_peak(void) { return g_peak; }

static void track(void *p, size_t bytes) {
    if (g_n_allocs < CUDA_MAX_ALLOCS) g_allocs[g_n_allocs++] = {p, bytes};
    g_in_use += bytes;
    if (g_in_use > g_peak) g_peak = g_in_use;
}

static void untrack(void *p) {
    for (int i = 0; i < g_n_allocs; i++)
        if (g_allocs[i].p == p) {
            g_in_use -= g_allocs[i].bytes;
            g_allocs[i] = g_allocs[--g_n_allocs];
            return;
        }
}

/* The backend contract: zero-filled, NULL on failure (the caller reports it by name). */
void *cuda_alloc(size_t bytes) {
    void *p = NULL;
    if (bytes == 0) bytes = 1;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
        (void)cudaGetLastError(); /* out of memory is the caller's to report, not sticky */
        return NULL;
    }
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
    untrack(p);
    CUDA_CHECK(cudaFree(p));
}

void cuda_memset_zero(void *p, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, g_stream));
}

void cuda_copy_to_host(void *dst_host, const void *src, size_t bytes) {
    if (!bytes) return;
    CUDA_CHECK(cudaMemcpyAsync(dst_host, src, bytes, cudaMemcpyDeviceToHost, g_stream));
    CUDA_CHECK(cudaStreamSynchronize(g_stream));
}

/* The host buffer may be reused as soon as this returns (the model refills its staging buffers
 * right away), so the copy is complete before returning. */
void cuda_copy_from_host(void *dst, const void *src_host, size_t bytes) {
    if (!bytes) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src_host, bytes, cudaMemcpyHostToDevice, g_stream));
    CUDA_CHECK(cudaStreamSynchronize(g_stream));
}

void cuda_copy(void *dst, const void *src, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, g_stream));
}

void cuda_synchronize(void) { CUDA_CHECK(cudaStreamSynchronize(g_stream)); }

void *cuda_workspace(size_t bytes) {
    if (bytes <= g_workspace_bytes) return g_workspace;
    CUDA_CHECK(cudaStreamSynchronize(g_stream));
    if (g_workspace) cuda_free(g_workspace);
    size_t grow = bytes + bytes / 4; /* fewer regrowths when sizes creep up */
    g_workspace = cuda_alloc(grow);
    if (!g_workspace) {
        fprintf(stderr, "difftrain: error: CUDA: out of device memory for %zu bytes of op "
                "workspace (%zu bytes in use)\n", grow, g_in_use);
        abort();
    }
    g_workspace_bytes = grow;
    return g_workspace;
}
