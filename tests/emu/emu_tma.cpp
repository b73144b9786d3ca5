/* The host emulator's tensor maps and TMA loads (a test tool; see include/cuda_runtime.h):
 * cuTensorMapEncodeTiled's tiled maps (no interleave, unit element strides, zero fill out of
 * bounds) and cp.async.bulk.tensor.Nd.shared::cluster.global.tile.mbarrier::complete_tx::bytes,
 * which model/cuda/tma.cuh calls under DT_CUDA_EMULATOR.
 *
 * A load writes the box row after row (dimension 0 the fastest) from dst on, element (i0, i1,
 * ...) at byte L * elem_bytes with L its index in that order, each 16-byte chunk moved by the
 * swizzle: bits 4.. of the shared-window address XOR bits 7.. (1, 2 or 3 bits for the 32, 64
 * and 128-byte swizzles: CUTLASS's Swizzle<1|2|3, 4, 3>, the pattern wgmma's swizzled layouts
 * read, emu_wgmma.cpp). A box element whose coordinates lie outside the tensor is zero. The
 * copy reads global memory when it lands (when its mbarrier phase completes, as a bulk copy
 * does: emu_rt.cpp), and aborts where an element it must read is outside every live
 * allocation. The emulator's stream-order check does not see these reads (the tensor's
 * address is inside the map, not a kernel argument). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "emu_internal.h"

#define EMU_TMAP_MAGIC 0x646974746d617031ull /* "dittmap1" */

/* The map's 128 bytes under the emulator. */
struct emu_tmap {
    uint64_t magic;
    const unsigned char *base;
    uint64_t dims[5], strides[5]; /* strides in bytes; strides[0] is the element size */
    uint32_t box[5];
    uint32_t rank, elem, swizzle;
};
static_assert(sizeof(emu_tmap) <= 128, "an emulated tensor map must fit a CUtensorMap");

static int refuse(char *why, int len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int refuse(char *why, int len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (why && len > 0) vsnprintf(why, (size_t)len, fmt, ap);
    va_end(ap);
    return -1;
}

int emu_tma_encode(void *map, const void *base, int rank, int elem_bytes, const uint64_t *dims,
                   const uint64_t *strides, const uint32_t *box, int swizzle, char *why,
                   int len) {
    if (rank < 1 || rank > 5) return refuse(why, len, "rank %d (1 to 5)", rank);
    if (elem_bytes != 1 && elem_bytes != 2 && elem_bytes != 4 && elem_bytes != 8)
        return refuse(why, len, "elements of %d bytes", elem_bytes);
    if ((uintptr_t)base % 16) return refuse(why, len, "base %p is not 16-byte aligned", base);
    if (swizzle != 0 && swizzle != 32 && swizzle != 64 && swizzle != 128)
        return refuse(why, len, "swizzle %d (0, 32, 64 or 128 bytes)", swizzle);
    emu_tmap m;
    memset(&m, 0, sizeof m);
    m.magic = EMU_TMAP_MAGIC;
    m.base = (const unsigned char *)base;
    m.rank = (uint32_t)rank;
    m.elem = (uint32_t)elem_bytes;
    m.swizzle = (uint32_t)swizzle;
    for (int i = 0; i < rank; i++) {
        if (dims[i] == 0 || dims[i] > (1ull << 32))
            return refuse(why, len, "dimension %d of %llu elements (1 to 2^32)", i,
                          (unsigned long long)dims[i]);
        if (box[i] == 0 || box[i] > 256)
            return refuse(why, len, "box dimension %d of %u elements (1 to 256)", i, box[i]);
        m.dims[i] = dims[i];
        m.box[i] = box[i];
        m.strides[i] = i == 0 ? (uint64_t)elem_bytes : strides[i - 1];
        if (i > 0 && (m.strides[i] % 16 || m.strides[i] >= (1ull << 40)))
            return refuse(why, len, "stride of dimension %d: %llu bytes (a multiple of 16, below "
                          "2^40)", i, (unsigned long long)m.strides[i]);
    }
    const unsigned row = box[0] * (unsigned)elem_bytes;
    if (row % 16) return refuse(why, len, "a box row of %u bytes (a multiple of 16)", row);
    if (swizzle && row > (unsigned)swizzle)
        return refuse(why, len, "a box row of %u bytes wider than the %d-byte swizzle", row,
                      swizzle);
    if (swizzle && row != (unsigned)swizzle)
        return refuse(why, len, "a box row of %u bytes under the %d-byte swizzle: only rows of "
                      "exactly the swizzle's width are emulated", row, swizzle);
    memcpy(map, &m, sizeof m);
    return 0;
}

void emu_tma_load(void *dst, const void *map, int rank, const int *coords, void *bar,
                  const char *file, int line) {
    emu_require_sm90("cp.async.bulk.tensor", file, line);
    emu_tmap m;
    memcpy(&m, map, sizeof m);
    if (m.magic != EMU_TMAP_MAGIC)
        emu_fail("cp.async.bulk.tensor at %s:%d: %p holds no tensor map (tma_encode made none "
                 "there)", file, line, map);
    if ((int)m.rank != rank)
        emu_fail("cp.async.bulk.tensor.%dd at %s:%d with a tensor map of rank %u", rank, file,
                 line, m.rank);
    size_t elems = 1;
    for (uint32_t i = 0; i < m.rank; i++) elems *= m.box[i];
    const size_t bytes = elems * m.elem;
    const uint32_t at = emu_shared_address(dst); /* aborts outside shared memory */
    const uint32_t align = m.swizzle ? 8 * m.swizzle : 128;
    if (at % align || !emu_shared_range(dst, bytes))
        emu_fail("cp.async.bulk.tensor at %s:%d: %zu bytes to shared address 0x%x (%u-byte "
                 "aligned for the %u-byte swizzle, and in the block's shared memory)", file, line,
                 bytes, at, align, m.swizzle);
    int c[5] = {0, 0, 0, 0, 0};
    for (int i = 0; i < rank; i++) c[i] = coords[i];
    auto land = [m, c, at, elems, file, line]() {
        uint32_t idx[5] = {0, 0, 0, 0, 0};
        for (size_t e = 0; e < elems; e++) {
            bool inside = true;
            uint64_t src = 0;
            for (uint32_t i = 0; i < m.rank; i++) {
                const long long x = (long long)c[i] + idx[i];
                inside = inside && x >= 0 && (uint64_t)x < m.dims[i];
                src += (uint64_t)(inside ? x : 0) * m.strides[i];
            }
            unsigned char v[8] = {0};
            if (inside) {
                if (!emu_alloc_start(m.base + src, m.elem))
                    emu_fail("cp.async.bulk.tensor at %s:%d: element at %p of the tensor at %p "
                             "is outside every live device allocation", file, line,
                             (const void *)(m.base + src), (const void *)m.base);
                memcpy(v, m.base + src, m.elem);
            }
            const uint32_t a = emu_swizzle(at + (uint32_t)(e * m.elem), m.swizzle);
            memcpy(emu_shared_pointer(a, m.elem), v, m.elem);
            for (uint32_t i = 0; i < m.rank && ++idx[i] == m.box[i]; i++) idx[i] = 0;
        }
    };
    emu_mbar_async_copy(bar, (unsigned)bytes, at, land, "cp.async.bulk.tensor", file, line);
}
