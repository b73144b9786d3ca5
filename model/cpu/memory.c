/* CPU backend memory: the "device" is host memory, so every copy is a memcpy and there is
 * nothing to synchronize. Allocation goes through util/alloc.h (STYLE: SQLite test_malloc) so
 * that allocation-failure tests cover backend buffers too. */
#include <string.h>

#include "model/cpu/cpu_ops.h"
#include "util/alloc.h"

void *cpu_alloc(size_t bytes) {
    /* dt_calloc gives 64-byte alignment (a cache line, and enough for any SIMD load) and the
     * zero fill that the backend contract promises. */
    return dt_calloc(bytes ? bytes : 1, 1);
}

void cpu_free(void *p) { dt_free(p); }

void cpu_memset_zero(void *p, size_t bytes) {
    if (bytes) memset(p, 0, bytes);
}

/* memcpy with a NULL pointer is undefined even for zero bytes, hence the guards. */
void cpu_copy_to_host(void *dst_host, const void *src, size_t bytes) {
    if (bytes) memcpy(dst_host, src, bytes);
}

void cpu_copy_from_host(void *dst, const void *src_host, size_t bytes) {
    if (bytes) memcpy(dst, src_host, bytes);
}

void cpu_copy(void *dst, const void *src, size_t bytes) {
    /* memmove: "within the backend" copies may overlap (e.g. shifting a buffer in place). */
    if (bytes) memmove(dst, src, bytes);
}

void cpu_synchronize(void) {}

/* Host staging (model/backend.h): the CPU backend's copies complete before they return, so a
 * staging buffer is plain memory and there is never anything to wait for. */
void *cpu_host_alloc(size_t bytes) { return dt_malloc(bytes ? bytes : 1); }

void cpu_host_free(void *p) { dt_free(p); }

void cpu_copy_from_host_async(void *dst, const void *src_host, size_t bytes) {
    if (bytes) memcpy(dst, src_host, bytes);
}

void cpu_host_wait(const void *p) { (void)p; }
