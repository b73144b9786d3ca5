/* The host emulator's warpgroup matrix products (a test tool; see include/cuda_runtime.h): the
 * warpgroup-collective software versions of wgmma.mma_async.sync.aligned.m64nNk16.f32.bf16.bf16
 * (A from registers or shared memory, B from shared memory), wgmma.fence, wgmma.commit_group and
 * wgmma.wait_group that model/cuda/wgmma.cuh calls under DT_CUDA_EMULATOR (PTX ISA,
 * "Asynchronous Warpgroup Level Matrix Multiply-Accumulate").
 *
 * The instructions are asynchronous, and so is this version, deferred to the last moment a GPU
 * allows: a product is queued when its warpgroup's 128 threads reach it (its descriptors decoded
 * and checked, A's registers copied); wgmma_commit closes the products queued since the last
 * commit into a group; wgmma_wait(n) performs the oldest committed groups, in order, until at
 * most n remain pending, reading shared memory and the accumulators as they are at that moment
 * and writing the accumulators. So a kernel that reads D before the wait that retires its
 * product, or overwrites a staged tile before it, computes a wrong result here, as it may on a
 * GPU; products issued but not committed wait for the next commit.
 *
 * Shared-memory operands: the canonical layouts with base offset 0 (wgmma.cuh's comment gives
 * them). With T = 8 bf16 per 16 bytes and LBO, SBO in elements, element (mn, k) is, without
 * swizzle,
 *   K-major  (trans 0): (mn % 8) * 8 + (mn / 8) * SBO + (k % 8) + (k / 8) * LBO,
 *   MN-major (trans 1): (mn % 8) + (mn / 8) * SBO + (k % 8) * 8 + (k / 8) * LBO
 * elements after the start (the ISA's ((8,m),(T,2k)):((1T,SBO),(1,LBO)) and
 * ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO))); mn is A's row (0..63) or B's column (0..N-1). With a
 * swizzle of S bytes (32, 64, 128: W = S / 2 elements a row), the ISA's
 * ((8,m),(T,2k)):((W,SBO),(1,T)) and ((T,W/8,m),(8,k)):((1,T,LBO),(W,SBO)):
 *   K-major:  (mn % 8) * W + (mn / 8) * SBO + k                   (LBO unused),
 *   MN-major: (mn % W) + (mn / W) * LBO + (k % 8) * W + (k / 8) * SBO,
 * and then the byte address a (start + 2 x that) is swizzled as the TMA writes it: bits 4.. of
 * a XOR bits 7.. (1, 2, 3 bits for S = 32, 64, 128; emu_tma.cpp). The descriptor's start is a
 * shared-window address (emu_shared_address) >> 4, so it is 16-byte aligned by construction;
 * every element read must lie in the block's shared memory.
 *
 * The fragments (the PTX ISA's "Register Fragments" for wgmma .m64nNk16), for thread i of the
 * warpgroup with w = i / 32, g = (i % 32) / 4, t = i % 4: A (wgmma_rs) a[0] = A[16w+g][2t, 2t+1],
 * a[1] = A[16w+g+8][2t, 2t+1], a[2] = A[16w+g][2t+8, 2t+9], a[3] = A[16w+g+8][2t+8, 2t+9] (low
 * half: the lower column); D d[4 nt + 0, 1] = D[16w+g][8nt + 2t, +1], d[4 nt + 2, 3] =
 * D[16w+g+8][8nt + 2t, +1]. Products of bf16 are exact in double; each element's 16 of them and
 * the accumulator are summed in double and rounded once to fp32 (as emu_mma.cpp). Checked by
 * emu_selftest (emu_selftest_wgmma.cu) against plain products. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <deque>
#include <vector>

#include "emu_internal.h"

/* A matrix in shared memory, as its descriptor and the instruction's transpose name it. */
struct wg_operand {
    uint32_t start, lbo, sbo; /* bytes: a shared-window address, the two strides */
    int trans;                /* 0: K-major, 1: MN-major */
    uint32_t swizzle;         /* bytes: 0 (none), 32, 64, 128 */
    uint32_t lo, hi;          /* the shared-window bytes its elements span: [lo, hi) */
};

/* One queued product of a warpgroup. */
struct wg_product {
    int n, accumulate, a_in_regs;
    float a[64][16]; /* A from registers, copied at issue */
    wg_operand sa, sb;
    float *d[128]; /* each thread's n / 2 accumulators */
    const char *file;
    int line;
};

/* A warpgroup's products: issued and not yet committed, and the committed groups not yet
 * retired by a wait (oldest first); fenced: a wgmma_fence since the start or the last wait. */
struct wg_state {
    bool fenced;
    std::vector<wg_product> queued;
    std::deque<std::vector<wg_product>> pending;
};
static std::vector<wg_state> g_wg; /* the running block's warpgroups */

/* One thread's operands of any of the four instructions. */
struct wg_lane {
    float *d;
    int n;
    const uint32_t *a;
    uint64_t desc_a, desc_b;
    int trans_a, trans_b, accumulate, wait_n;
    const char *file;
    int line;
};

static float bf16_value(uint16_t h) {
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Element (mn, k) of o, in elements after its start (the layouts above, before the swizzle). */
static uint32_t wg_offset(const wg_operand &o, int mn, int k) {
    const uint32_t lbo = o.lbo / 2, sbo = o.sbo / 2, w = o.swizzle / 2;
    if (w)
        return o.trans ? (mn % w) + (mn / w) * lbo + (k % 8) * w + (k / 8) * sbo
                       : (mn % 8) * w + (mn / 8) * sbo + k;
    return o.trans ? (mn % 8) + (mn / 8) * sbo + (k % 8) * 8 + (k / 8) * lbo
                   : (mn % 8) * 8 + (mn / 8) * sbo + (k % 8) + (k / 8) * lbo;
}

/* The shared-window address of element (mn, k) of o: swizzled as the TMA writes. */
static uint32_t wg_address(const wg_operand &o, int mn, int k) {
    return emu_swizzle(o.start + 2 * wg_offset(o, mn, k), o.swizzle);
}

/* Where the element at shared-window address a (wg_address) lies in the block's shared memory,
 * or NULL. */
static const uint16_t *wg_element(uint32_t a) {
    return (const uint16_t *)emu_shared_pointer(a, 2);
}

/* The operand `which` (mn_count x 16) that desc names: base offset 0, the reserved bits
 * clear, and every element in the block's shared memory. */
static wg_operand wg_decode(uint64_t desc, int trans, const char *which, int mn_count,
                            const wg_lane &l) {
    const unsigned mode = (unsigned)(desc >> 62), base = (unsigned)(desc >> 49) & 7u;
    const uint64_t fields = 0x3fffull | 0x3fffull << 16 | 0x3fffull << 32 | 7ull << 49 |
                            3ull << 62;
    static const uint32_t swizzle_bytes[4] = {0, 128, 64, 32}; /* the layout type field */
    if (base)
        emu_fail("wgmma at %s:%d: %s's descriptor 0x%016llx has base offset %u: only 0 is "
                 "emulated", l.file, l.line, which, (unsigned long long)desc, base);
    if (desc & ~fields)
        emu_fail("wgmma at %s:%d: %s's descriptor 0x%016llx sets reserved bits", l.file, l.line,
                 which, (unsigned long long)desc);
    wg_operand o = {(uint32_t)(desc & 0x3fff) << 4, (uint32_t)(desc >> 16 & 0x3fff) << 4,
                    (uint32_t)(desc >> 32 & 0x3fff) << 4, trans, swizzle_bytes[mode],
                    UINT32_MAX, 0};
    for (int mn = 0; mn < mn_count; mn++)
        for (int k = 0; k < 16; k++) {
            const uint32_t a = wg_address(o, mn, k);
            o.lo = a < o.lo ? a : o.lo;
            o.hi = a + 2 > o.hi ? a + 2 : o.hi;
            if (!wg_element(a))
                emu_fail("wgmma at %s:%d: element (%d, %d) of %s (%s-major, start 0x%x, LBO %u, "
                         "SBO %u bytes) at shared address 0x%x is outside the block's shared "
                         "memory", l.file, l.line, mn, k, which, trans ? "MN" : "K", o.start,
                         o.lbo, o.sbo, a);
        }
    return o;
}

/* The A fragment of wgmma_rs (the layout above) of the 128 threads into a. */
static void wg_gather_a(float a[64][16], void *const *lanes) {
    for (int i = 0; i < 128; i++) {
        const uint32_t *r = ((const wg_lane *)lanes[i])->a;
        const int row = 16 * (i / 32) + (i % 32) / 4, col = 2 * (i % 4);
        for (int j = 0; j < 4; j++) {
            const int rr = row + (j & 1) * 8, cc = col + (j >> 1) * 8;
            a[rr][cc] = bf16_value((uint16_t)(r[j] & 0xffffu));
            a[rr][cc + 1] = bf16_value((uint16_t)(r[j] >> 16));
        }
    }
}

static void wg_differs(const wg_lane &l0, unsigned i, unsigned group, const char *what) {
    emu_fail("wgmma at %s:%d: thread %u of warpgroup %u passes another %s than its thread 0 "
             "(a warpgroup instruction's operands are the warpgroup's)", l0.file, l0.line, i,
             group, what);
}

/* wgmma.mma_async: checks the warpgroup's operands and queues the product. */
static void wg_issue(unsigned group, void *const *lanes) {
    const wg_lane &l0 = *(const wg_lane *)lanes[0];
    for (unsigned i = 1; i < 128; i++) {
        const wg_lane &l = *(const wg_lane *)lanes[i];
        if (l.n != l0.n) wg_differs(l0, i, group, "N");
        if ((l.a == NULL) != (l0.a == NULL)) wg_differs(l0, i, group, "source of A");
        if (!l0.a && (l.desc_a != l0.desc_a || l.trans_a != l0.trans_a))
            wg_differs(l0, i, group, "descriptor or transpose of A");
        if (l.desc_b != l0.desc_b || l.trans_b != l0.trans_b)
            wg_differs(l0, i, group, "descriptor or transpose of B");
        if ((l.accumulate != 0) != (l0.accumulate != 0))
            wg_differs(l0, i, group, "accumulate flag (scale-d)");
    }
    if (l0.n < 8 || l0.n > 256 || l0.n % 8 != 0)
        emu_fail("wgmma at %s:%d: N = %d: m64nNk16 needs N a multiple of 8 from 8 to 256", l0.file,
                 l0.line, l0.n);
    wg_state &s = g_wg[group];
    if (!s.fenced)
        emu_fail("wgmma at %s:%d by warpgroup %u without a wgmma_fence since the block's start or "
                 "the warpgroup's last wgmma_wait (the ISA requires wgmma.fence before the first "
                 "wgmma and after other accesses to its registers)", l0.file, l0.line, group);
    s.queued.emplace_back();
    wg_product &p = s.queued.back();
    p.n = l0.n;
    p.accumulate = l0.accumulate != 0;
    p.a_in_regs = l0.a != NULL;
    if (p.a_in_regs) wg_gather_a(p.a, lanes);
    else p.sa = wg_decode(l0.desc_a, l0.trans_a, "A", 64, l0);
    p.sb = wg_decode(l0.desc_b, l0.trans_b, "B", p.n, l0);
    for (int i = 0; i < 128; i++) p.d[i] = ((const wg_lane *)lanes[i])->d;
    p.file = l0.file;
    p.line = l0.line;
}

/* Element (mn, k) of a shared operand now; its range was checked at issue, and a block's
 * shared memory only grows. */
static float wg_read(const wg_product &p, const wg_operand &o, int mn, int k) {
    const uint32_t a = wg_address(o, mn, k);
    const uint16_t *e = wg_element(a);
    if (!e) emu_fail("wgmma at %s:%d: an operand left shared memory", p.file, p.line);
    emu_proxy_check_read(a, e, 2, p.file, p.line);
    uint16_t h;
    memcpy(&h, e, sizeof h);
    return bf16_value(h);
}

/* Performs p: D = A B + (accumulate ? D : 0) from shared memory and D as they are now. */
static void wg_perform(const wg_product &p) {
    static float A[64][16], B[16][256], D[64][256];
    for (int m = 0; m < 64; m++)
        for (int k = 0; k < 16; k++) A[m][k] = p.a_in_regs ? p.a[m][k] : wg_read(p, p.sa, m, k);
    for (int k = 0; k < 16; k++)
        for (int j = 0; j < p.n; j++) B[k][j] = wg_read(p, p.sb, j, k);
    for (int i = 0; i < 128; i++) {
        const int row = 16 * (i / 32) + (i % 32) / 4, col = 2 * (i % 4);
        for (int e = 0; e < p.n / 2; e++) /* d[4 nt + e % 4] */
            D[row + (e & 2) * 4][8 * (e / 4) + col + (e & 1)] = p.accumulate ? p.d[i][e] : 0.0f;
    }
    for (int m = 0; m < 64; m++)
        for (int j = 0; j < p.n; j++) {
            double acc = D[m][j];
            for (int k = 0; k < 16; k++) acc += (double)A[m][k] * (double)B[k][j];
            D[m][j] = (float)acc;
        }
    for (int i = 0; i < 128; i++) {
        const int row = 16 * (i / 32) + (i % 32) / 4, col = 2 * (i % 4);
        for (int e = 0; e < p.n / 2; e++)
            p.d[i][e] = D[row + (e & 2) * 4][8 * (e / 4) + col + (e & 1)];
    }
}

static void wg_fence(unsigned group, void *const *) { g_wg[group].fenced = true; }

static void wg_commit(unsigned group, void *const *) {
    wg_state &s = g_wg[group];
    s.pending.emplace_back();
    s.pending.back().swap(s.queued);
}

static void wg_wait(unsigned group, void *const *lanes) {
    const wg_lane &l0 = *(const wg_lane *)lanes[0];
    wg_state &s = g_wg[group];
    for (unsigned i = 1; i < 128; i++)
        if (((const wg_lane *)lanes[i])->wait_n != l0.wait_n)
            emu_fail("wgmma_wait at %s:%d: thread %u of warpgroup %u waits for another number of "
                     "groups than its thread 0", l0.file, l0.line, i, group);
    if (l0.wait_n < 0)
        emu_fail("wgmma_wait<%d> at %s:%d: a negative number of groups", l0.wait_n, l0.file,
                 l0.line);
    while (s.pending.size() > (size_t)l0.wait_n) {
        for (const wg_product &p : s.pending.front()) wg_perform(p);
        s.pending.pop_front();
    }
    s.fenced = false;
}

/* 1 when p reads shared memory in [at, at + bytes) (each operand's span: conservative) */
static bool wg_reads(const wg_product &p, uint32_t at, size_t bytes) {
    auto hits = [&](const wg_operand &o) { return at < o.hi && o.lo < at + bytes; };
    return (!p.a_in_regs && hits(p.sa)) || hits(p.sb);
}

void emu_wgmma_check_write(uint32_t at, size_t bytes, const char *what, const char *file,
                           int line) {
    for (size_t g = 0; g < g_wg.size(); g++) {
        const wg_state &s = g_wg[g];
        const wg_product *hit = NULL;
        for (const wg_product &p : s.queued)
            if (!hit && wg_reads(p, at, bytes)) hit = &p;
        for (const std::vector<wg_product> &c : s.pending)
            for (const wg_product &p : c)
                if (!hit && wg_reads(p, at, bytes)) hit = &p;
        if (!hit) continue;
        char where[256] = "";
        if (file) snprintf(where, sizeof where, " issued at %s:%d", file, line);
        emu_fail("%s%s lands %zu bytes at shared address 0x%x, which the wgmma issued at %s:%d "
                 "by warpgroup %zu reads and no wgmma_wait has retired yet (a stage handed back, "
                 "or refilled, before the products that read it were waited for)", what, where,
                 bytes, at, hit->file, hit->line, g);
    }
}

void emu_wgmma_block_start(unsigned nthreads) {
    g_wg.clear();
    g_wg.resize(nthreads / 128);
}

void emu_wgmma_block_end(void) {
    for (size_t g = 0; g < g_wg.size(); g++) {
        const wg_state &s = g_wg[g];
        if (!s.queued.empty())
            emu_fail("warpgroup %zu ends with %zu wgmma products issued but not committed (the "
                     "first at %s:%d)", g, s.queued.size(), s.queued[0].file, s.queued[0].line);
        for (const std::vector<wg_product> &c : s.pending)
            if (!c.empty())
                emu_fail("warpgroup %zu ends with wgmma products committed but not waited for "
                         "(the first at %s:%d): wgmma_wait<0> must retire them", g, c[0].file,
                         c[0].line);
    }
}

void emu_wgmma_bf16(float *d, int n, const uint32_t *a, uint64_t desc_a, uint64_t desc_b,
                    int trans_a, int trans_b, int accumulate, const char *file, int line) {
    wg_lane mine = {d, n, a, desc_a, desc_b, trans_a, trans_b, accumulate, 0, file, line};
    emu_group_collective(wg_issue, &mine, "wgmma.mma_async", file, line);
}

void emu_wgmma_fence(const char *file, int line) {
    emu_require_sm90("wgmma.fence", file, line);
    wg_lane mine = {NULL, 0, NULL, 0, 0, 0, 0, 0, 0, file, line};
    emu_group_collective(wg_fence, &mine, "wgmma.fence", file, line);
}

void emu_wgmma_commit(const char *file, int line) {
    wg_lane mine = {NULL, 0, NULL, 0, 0, 0, 0, 0, 0, file, line};
    emu_group_collective(wg_commit, &mine, "wgmma.commit_group", file, line);
}

void emu_wgmma_wait(int n, const char *file, int line) {
    wg_lane mine = {NULL, 0, NULL, 0, 0, 0, 0, 0, n, file, line};
    emu_group_collective_late(wg_wait, &mine, "wgmma.wait_group", file, line);
}
