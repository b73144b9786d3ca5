/* The bf16 copies of the weight matrices that the products read (dt_backend.weights_prepare),
 * made once per forward instead of once per product.
 *
 * Under bf16 products every product rounds its fp32 weight to bf16 before cuBLAS reads it
 * (matmul.cu). A step reads each matrix two or three times (forward, backward, the recompute)
 * and the classifier's once per chunk of logits, forward and backward: on the 830M model some
 * 3.5 G elements rounded per step where 0.83 G would do. cuda_weights_prepare rounds the model's
 * matrices (the list the model gives: model_init's product weights) into one buffer, each at a
 * 256-byte offset as the per-product copies were (so cuBLAS sees the same alignment and picks
 * the same kernels: the same bits), and cuda_weights_bf16 hands a product the copy of its
 * weight.
 *
 * The copies hold the weights' values at the prepare. They are dropped (the products round
 * their weights themselves again) by every backend op that writes into the span of the prepared
 * matrices: memset_zero, the copies, add, scale, adamw_update, free (cuda_weights_written), and
 * by the device collectives, which are bound with the same hook (dist/nccl_buf_coll.h: ZeRO's
 * all-gather of the parameters). A prepare of the same matrices as the last one, with the
 * copies not dropped since, copies nothing: the forwards of a step's micro-batches after the
 * first (gradient accumulation) and of an evaluation reuse the copies the first one made; after
 * the optimizer's update the next forward makes them again.
 *
 * The copies live in the CUDA_WS_WEIGHTS workspace (stream-ordered growth: no host wait) and are
 * made by one kernel launch per WCOPY_BATCH matrices, the batch's table passed as the kernel's
 * argument: no table upload (cuda_bf16_copies, which also makes the products' own copies of
 * fp32 operands, matmul.cu).
 * Without bf16 products (fp32 mode, cuda_operand_bf16() false) nothing is prepared. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/cuda/cuda_common.cuh"
#include "model/cuda/cuda_ops.h"
#include "model/cuda/operand.cuh"

extern "C" {
#include "model/params.h" /* param_product_copy_size: the layout `difftrain plan` counts */
}

#define WCOPY_BATCH 32
#define WCOPY_THREADS 256
#define WCOPY_PER_THREAD 8
#define WCOPY_PER_BLOCK (WCOPY_THREADS * WCOPY_PER_THREAD)

typedef struct wcopy_batch {
    const float *src[WCOPY_BATCH];
    operand_bf16 *dst[WCOPY_BATCH];
    unsigned long long n[WCOPY_BATCH];
    unsigned long long block0[WCOPY_BATCH + 1]; /* the first block of each matrix, and the end */
    int count;
} wcopy_batch;

/* Block b converts WCOPY_PER_BLOCK elements of the array whose blocks hold b: thread t its
 * WCOPY_PER_THREAD consecutive ones, one 16-byte store (dst is 16-byte aligned), read as two
 * 16-byte loads where the source is 16-byte aligned (a matrix starts at any float of the
 * parameters), else by the float. */
static __global__ void __launch_bounds__(WCOPY_THREADS) wcopy_kernel(wcopy_batch b) {
    int s = 0;
    while (s + 1 < b.count && blockIdx.x >= b.block0[s + 1]) s++;
    const size_t first = (blockIdx.x - b.block0[s]) * (size_t)WCOPY_PER_BLOCK +
                         (size_t)threadIdx.x * WCOPY_PER_THREAD;
    const size_t n = b.n[s];
    if (first >= n) return;
    const float *src = b.src[s];
    operand_bf16 *dst = b.dst[s];
    if (first + WCOPY_PER_THREAD <= n) {
        float v[WCOPY_PER_THREAD];
        if ((uintptr_t)(src + first) % 16 == 0) {
            operand_load8(src, first, v);
        } else {
            for (int i = 0; i < WCOPY_PER_THREAD; i++) v[i] = src[first + i];
        }
        operand_store8(dst, first, v);
        return;
    }
    for (size_t i = first; i < n; i++) operand_store(dst, i, src[i]);
}

extern "C" int cuda_bf16_copies(uint16_t *const *dst, const float *const *src, const size_t *n,
                                int count) {
    for (int i0 = 0; i0 < count; i0 += WCOPY_BATCH) {
        wcopy_batch b;
        memset(&b, 0, sizeof b);
        b.count = count - i0 < WCOPY_BATCH ? count - i0 : WCOPY_BATCH;
        for (int s = 0; s < b.count; s++) {
            b.src[s] = src[i0 + s];
            b.dst[s] = dst[i0 + s];
            b.n[s] = src[i0 + s] ? n[i0 + s] : 0;
            b.block0[s + 1] = b.block0[s] + (b.n[s] + WCOPY_PER_BLOCK - 1) / WCOPY_PER_BLOCK;
        }
        const unsigned long long blocks = b.block0[b.count];
        if (blocks == 0) continue;
        if (blocks > 0x7fffffffull) return 0;
        wcopy_kernel<<<(unsigned)blocks, WCOPY_THREADS, 0, cuda_stream()>>>(b);
        CUDA_LAUNCH_CHECK();
    }
    return 1;
}

/* The prepared matrices (host bookkeeping). */
static struct {
    int count, cap;
    const float **src;
    size_t *n;
    operand_bf16 **dst;
    const float *lo, *hi; /* the span of every source */
    bool valid;
} g_wc;

static unsigned long long g_wc_made; /* matrices copied so far (cuda_weights_copies_made) */

extern "C" void cuda_weights_drop(void) { g_wc.valid = false; }

extern "C" unsigned long long cuda_weights_copies_made(void) { return g_wc_made; }

/* The copies hold the matrices w, n (the same list, in the same order) and no write has dropped
 * them since they were made. */
static bool wc_current(const float *const *w, const size_t *n, int count) {
    if (!g_wc.valid || count != g_wc.count) return false;
    for (int i = 0; i < count; i++)
        if (g_wc.src[i] != w[i] || g_wc.n[i] != n[i]) return false;
    return true;
}

static bool wc_reserve(int count) {
    if (count <= g_wc.cap) return true;
    const float **src = (const float **)realloc(g_wc.src, (size_t)count * sizeof *src);
    if (src) g_wc.src = src;
    size_t *n = (size_t *)realloc(g_wc.n, (size_t)count * sizeof *n);
    if (n) g_wc.n = n;
    operand_bf16 **dst = (operand_bf16 **)realloc(g_wc.dst, (size_t)count * sizeof *dst);
    if (dst) g_wc.dst = dst;
    if (!src || !n || !dst) return false;
    g_wc.cap = count;
    return true;
}

extern "C" void cuda_weights_prepare(const float *const *w, const size_t *n, int count) {
    if (!cuda_operand_bf16() || count <= 0) {
        g_wc.valid = false;
        return;
    }
    if (wc_current(w, n, count)) return;
    g_wc.valid = false;
    if (!wc_reserve(count)) {
        /* the products round their weights themselves, as without a copy: slower, not wrong */
        fprintf(stderr, "difftrain: warning: CUDA: no host memory for the table of %d weight "
                "copies\n", count);
        return;
    }
    size_t total = 0;
    for (int i = 0; i < count; i++) total += param_product_copy_size(n[i]);
    char *base = (char *)cuda_workspace_slot(CUDA_WS_WEIGHTS, total);
    size_t off = 0;
    g_wc.lo = NULL;
    g_wc.hi = NULL;
    for (int i = 0; i < count; i++) {
        g_wc.src[i] = w[i];
        g_wc.n[i] = n[i];
        g_wc.dst[i] = (operand_bf16 *)(base + off);
        off += param_product_copy_size(n[i]);
        if (!g_wc.lo || w[i] < g_wc.lo) g_wc.lo = w[i];
        if (!g_wc.hi || w[i] + n[i] > g_wc.hi) g_wc.hi = w[i] + n[i];
    }
    g_wc.count = count;
    if (!cuda_bf16_copies(g_wc.dst, g_wc.src, g_wc.n, count)) {
        /* beyond a grid: leave them to the products */
        fprintf(stderr, "difftrain: warning: CUDA: weight matrices too large to copy at once\n");
        return;
    }
    g_wc.valid = true;
    g_wc_made += (unsigned long long)count;
}

extern "C" const void *cuda_weights_bf16(const float *w, size_t span) {
    if (!g_wc.valid || w < g_wc.lo || w >= g_wc.hi) return NULL;
    for (int i = 0; i < g_wc.count; i++) {
        const float *s = g_wc.src[i];
        if (w < s || w - s > (ptrdiff_t)g_wc.n[i] || span > g_wc.n[i] - (size_t)(w - s)) continue;
        const operand_bf16 *c = g_wc.dst[i] + (w - s);
        /* a product at an offset into a matrix: only at the 16-byte alignment of a whole one */
        return (uintptr_t)c % 16 == 0 ? c : NULL;
    }
    return NULL;
}

extern "C" void cuda_weights_written(const void *p, size_t bytes) {
    if (!g_wc.valid || bytes == 0) return;
    const char *a = (const char *)p, *lo = (const char *)g_wc.lo, *hi = (const char *)g_wc.hi;
    if (a < hi && a + bytes > lo) g_wc.valid = false;
}
