/* The async proxy's view of shared memory (a test tool; include/cuda_runtime.h says what the
 * emulator checks). On an sm_90 GPU the wgmma products read their shared-memory operands, and
 * the TMA and bulk copies write theirs, through the async proxy; what the threads write with
 * st.shared or cp.async (the generic proxy) reaches it only through a fence.proxy.async
 * (wgmma_fence_smem) of the writers, before the barrier that hands the bytes on. A kernel
 * without that fence reads stale bytes on a GPU now and then, and right ones everywhere else.
 *
 * The model: a copy of the block's shared memory by shared-window address, the bytes as the
 * async proxy sees them. The asynchronous copies write both (they are the async proxy), and a
 * fence.proxy.async by any thread of the block copies the whole of shared memory into the view.
 * So a byte that shared memory and the view disagree on was written by the threads after the
 * block's last fence:
 *   - a wgmma that reads it aborts (the writers did not fence before handing it on);
 *   - an asynchronous copy that lands on it aborts (the threads' write and the copy's are
 *     unordered without a fence: on a GPU either may land last).
 * What the model cannot see: which thread fenced. One thread's fence publishes every thread's
 * writes here, where on a GPU it publishes its own; a kernel whose writers do not fence is
 * caught only while no other thread of the block fences between their writes and the read. */
#include <stdio.h>
#include <string.h>

#include "emu_internal.h"

/* shared-window addresses lie below 2^18 (emu_rt.cpp) */
static unsigned char g_view[1u << 18];

void emu_proxy_publish(uint32_t at, size_t bytes) {
    const void *now = emu_shared_pointer(at, bytes);
    if (!now) emu_fail("emu_proxy_publish: [0x%x, +%zu) is not the block's shared memory", at,
                       bytes);
    memcpy(g_view + at, now, bytes);
}

/* The first byte of [at, at + bytes) (in shared memory at now: emu_shared_pointer) that the
 * threads wrote since the block's last fence, or -1 (now NULL, bytes outside shared memory: the
 * callers report those themselves). */
static long unpublished(uint32_t at, const unsigned char *now, size_t bytes) {
    if (!now || memcmp(now, g_view + at, bytes) == 0) return -1;
    size_t i = 0;
    while (now[i] == g_view[at + i]) i++;
    return (long)(at + i);
}

void emu_proxy_check_read(uint32_t at, const void *now, size_t bytes, const char *file,
                          int line) {
    const long b = unpublished(at, (const unsigned char *)now, bytes);
    if (b >= 0)
        emu_fail("wgmma at %s:%d reads shared address 0x%lx, which the threads wrote (st.shared "
                 "or cp.async) after the block's last fence.proxy.async: on a GPU the product "
                 "may read the old bytes (the writers call wgmma_fence_smem before the barrier "
                 "that hands the tile to the products)", file, line, b);
}

void emu_proxy_check_write(uint32_t at, size_t bytes, const char *what, const char *file,
                           int line) {
    const long b =
        unpublished(at, (const unsigned char *)emu_shared_pointer(at, bytes), bytes);
    if (b < 0) return;
    char where[256] = "";
    if (file) snprintf(where, sizeof where, " issued at %s:%d", file, line);
    emu_fail("%s%s lands on shared address 0x%lx, which the threads wrote (st.shared or "
             "cp.async) after the block's last fence.proxy.async: on a GPU the two writes are "
             "unordered (a fence.proxy.async by the writers orders them)", what, where, b);
}

void emu_proxy_fence(const char *file, int line) {
    emu_require_sm90("fence.proxy.async", file, line);
    emu_mbar_publish_inits(); /* the thread's mbarrier.init are generic writes too */
    uint32_t dyn, static_lo, static_hi;
    emu_shared_spans(&dyn, &static_lo, &static_hi);
    if (dyn) emu_proxy_publish(0, dyn);
    if (static_hi > static_lo) emu_proxy_publish(static_lo, static_hi - static_lo);
}
