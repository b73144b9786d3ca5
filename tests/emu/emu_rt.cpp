/* The host emulator's runtime (a test tool; see include/cuda_runtime.h for what it checks):
 * fibers and their scheduler, barriers, shuffles, warp and warpgroup collectives, shared memory
 * and its shared-window addresses, device memory, copies, the devices. Streams and events are
 * in emu_streams.cpp; the tensor-core instructions in emu_mma.cpp and emu_wgmma.cpp. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <map>
#include <set>
#include <vector>

#include "emu_internal.h"

#if !defined(__x86_64__) || !defined(__linux__)
#error "the CUDA host emulator switches fibers with x86-64 Linux assembly"
#endif

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
unsigned char *emu_dyn_smem;

#define EMU_MAX_THREADS 1024u
#define EMU_STATIC_SMEM (48u * 1024u)      /* static __shared__ per block */
#define EMU_DEFAULT_DYN_SMEM (48u * 1024u) /* dynamic without the opt-in attribute */

/* The GPU the emulated devices stand for (DT_EMU_GPU; cuda_runtime.h): what
 * cudaGetDeviceProperties reports, and the shared memory a block may have after the opt-in
 * (static + dynamic), which the launches are held to. */
struct emu_gpu {
    const char *key, *name;
    int major, minor, sms;
    size_t optin_smem, memory;
};
static const emu_gpu g_gpus[] = {
    {"h100", "difftrain host emulator (H100 limits)", 9, 0, 132, 227u * 1024u, (size_t)80 << 30},
    {"a100", "difftrain host emulator (A100 limits)", 8, 0, 108, 163u * 1024u, (size_t)80 << 30},
    {"l40s", "difftrain host emulator (L40S limits)", 8, 9, 142, 99u * 1024u, (size_t)48 << 30},
};

#define EMU_MAX_OPTIN_SMEM (227u * 1024u) /* the largest of them: the H100's */

static const emu_gpu *g_gpu; /* NULL: DT_EMU_GPU not read yet */

static const emu_gpu *emu_gpu_named(const char *key, const char *from) {
    if (!key || !*key) return &g_gpus[0];
    for (const emu_gpu &g : g_gpus)
        if (strcmp(key, g.key) == 0) return &g;
    emu_fail("%s%s: expected h100, a100 or l40s", from, key);
}

static const emu_gpu &emu_gpu_profile(void) {
    if (!g_gpu) g_gpu = emu_gpu_named(getenv("DT_EMU_GPU"), "DT_EMU_GPU=");
    return *g_gpu;
}

void emu_set_gpu(const char *key) {
    g_gpu = key ? emu_gpu_named(key, "emu_set_gpu: ") : NULL; /* NULL: the environment's */
}
#define EMU_OPTIN_SMEM (emu_gpu_profile().optin_smem)

void emu_require_sm90(const char *what, const char *file, int line) {
    const emu_gpu &g = emu_gpu_profile();
    if (g.major != 9 || g.minor != 0)
        emu_fail("%s at %s:%d on a compute capability %d.%d device (DT_EMU_GPU=%s): an sm_90 "
                 "instruction", what, file, line, g.major, g.minor, g.key);
}

/* ---- fibers: emu_switch saves the callee-saved registers on the current stack, stores its
 * stack pointer in *save and continues on stack `to` (System V x86-64 ABI) ---- */
extern "C" void emu_switch(void **save, void *to);
__asm__(".text\n"
        ".globl emu_switch\n"
        ".type emu_switch, @function\n"
        "emu_switch:\n"
        "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
        "  ret\n"
        ".size emu_switch, .-emu_switch\n");

/* A thread runs (ST_RUN) or waits: at a shuffle or warp collective (ST_WARP), at a warpgroup
 * collective (ST_GROUP), at __syncthreads (ST_BLOCK), for an mbarrier's phase (ST_MBAR); or it
 * has exited (ST_DONE). */
enum { ST_RUN, ST_WARP, ST_GROUP, ST_BLOCK, ST_MBAR, ST_DONE };
struct emu_thread {
    void *sp;
    int state;
    const char *file; /* the barrier it waits at */
    int line;
    unsigned long long bits, result; /* shuffle: its value, the value it receives */
    unsigned mask;
    int kind, arg, width;
    void (*op)(void *const *); /* a warp collective: its operation and this lane's operands */
    void (*group_op)(unsigned, void *const *); /* a warpgroup collective's operation */
    const char *what;                          /* and its name, for reports */
    void *operands;
    const void *bar; /* ST_MBAR: the barrier and the parity of the phase it waits for */
    unsigned parity;
    bool late; /* ST_GROUP: a collective performed once no warp can run */
};
static emu_thread g_t[EMU_MAX_THREADS];
static uint3 g_tid[EMU_MAX_THREADS];
static unsigned g_cur, g_nthreads;
static void *g_sched_sp;
static const emu_launch_cfg *g_cfg; /* the running launch, NULL outside kernels */
static void (*g_thunk)(const void *);
static const void *g_ctx;
static unsigned long long g_block_serial;

#define EMU_STACK (128u * 1024u)
#define EMU_PAGE 4096u
static char *g_stacks; /* EMU_MAX_THREADS x (guard page, stack) */

static void pass_on(void);

static void fiber_main(void) {
    g_thunk(g_ctx);
    g_t[g_cur].state = ST_DONE;
    pass_on();
    abort(); /* a finished fiber is never resumed */
}

static void fiber_init(unsigned t) {
    char *top = g_stacks + (size_t)(t + 1) * (EMU_STACK + EMU_PAGE);
    void **sp = (void **)((uintptr_t)top & ~(uintptr_t)15);
    *--sp = NULL;               /* fiber_main's return address: never used */
    *--sp = (void *)fiber_main; /* emu_switch returns here, with rsp = 8 mod 16 as after a call */
    for (int i = 0; i < 6; i++) *--sp = NULL; /* rbp rbx r12 r13 r14 r15 */
    g_t[t].sp = sp;
    g_t[t].state = ST_RUN;
}

void emu_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fflush(stdout);
    fprintf(stderr, "emu: ");
    if (g_cfg)
        fprintf(stderr, "kernel %s, block (%u,%u,%u) of grid (%u,%u,%u), block size (%u,%u,%u): ",
                g_cfg->name, blockIdx.x, blockIdx.y, blockIdx.z, gridDim.x, gridDim.y, gridDim.z,
                blockDim.x, blockDim.y, blockDim.z);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    abort();
}

static bool same_site(const emu_thread &a, const emu_thread &b) {
    return a.line == b.line && (a.file == b.file || strcmp(a.file, b.file) == 0);
}

/* ---- scheduling. The scheduler starts a warp at its first lane; each lane runs until its
 * next barrier (or its end) and then switches straight to the next lane of its warp (pass_on).
 * The last lane checks the warp: if all 32 lanes wait at the same shuffle or warp collective,
 * it performs it and the warp goes on from its first lane; otherwise all 32 lanes wait at the
 * same warpgroup collective, or every lane waits at __syncthreads or has exited, and the
 * scheduler takes the warp back. When the last of the 4 warps of a warpgroup (warps 4w..4w+3)
 * comes to wait at the collective where the other three wait, the scheduler performs it and
 * those warps can run again. The scheduler sweeps over the warps, running every warp that can
 * run, until none can; then every thread waits at __syncthreads or has exited (a warpgroup
 * still waiting at its collective is a deadlock), and it releases the __syncthreads (all
 * threads at the same one) or ends the block (all exited). The lanes of a warp are set running
 * together (a performed shuffle or collective, a released barrier), so a warp can run exactly
 * when its first lane can. ---- */

static unsigned g_warp_begin, g_warp_end; /* the running warp's threads */

static inline void switch_to(unsigned t) {
    emu_thread &me = g_t[g_cur];
    g_cur = t;
    threadIdx = g_tid[t];
    emu_switch(&me.sp, g_t[t].sp);
}

/* The warp's lanes stopped with at_group of them (the first is `first`) at a warpgroup
 * collective and none at a shuffle: all 32 must wait there, at the same call site. */
static void warp_at_group(unsigned at_group, unsigned at_sync, unsigned first) {
    const unsigned t0 = g_warp_begin, t1 = g_warp_end, w = t0 / 32;
    const emu_thread &f = g_t[first];
    if (at_group != t1 - t0)
        emu_fail("warpgroup-collective %s at %s:%d reached by %u of the 32 lanes of warp %u (%u "
                 "wait at __syncthreads, %u exited): every thread of the warpgroup must reach it",
                 f.what, f.file, f.line, at_group, w, at_sync, t1 - t0 - at_group - at_sync);
    for (unsigned t = t0 + 1; t < t1; t++) {
        const emu_thread &l = g_t[t];
        if (!same_site(l, f) || l.group_op != f.group_op)
            emu_fail("lanes 0 and %u of warp %u wait at different warpgroup collectives (%s at "
                     "%s:%d, %s at %s:%d)", t - t0, w, f.what, f.file, f.line, l.what, l.file,
                     l.line);
    }
}

/* The warp's lanes stopped with at_mbar of them waiting for an mbarrier phase: all of them
 * must, at the same call site, for the same barrier and parity (the scheduler takes the warp
 * back and lets it run once that phase has completed). */
static void warp_at_mbar(unsigned at_mbar) {
    const unsigned t0 = g_warp_begin, t1 = g_warp_end, w = t0 / 32;
    const emu_thread &f = g_t[t0];
    if (at_mbar != t1 - t0)
        emu_fail("mbarrier wait reached by %u of the %u lanes of warp %u: the emulator needs "
                 "warp-uniform waits (all lanes at one wait)", at_mbar, t1 - t0, w);
    for (unsigned t = t0 + 1; t < t1; t++) {
        const emu_thread &l = g_t[t];
        if (!same_site(l, f) || l.bar != f.bar || l.parity != f.parity)
            emu_fail("lanes 0 and %u of warp %u wait for different mbarrier phases (%p parity %u "
                     "at %s:%d, %p parity %u at %s:%d)", t - t0, w, f.bar, f.parity, f.file,
                     f.line, l.bar, l.parity, l.file, l.line);
    }
}

/* The last lane of the warp has stopped: performs the shuffle all lanes wait at (true), or
 * finds none waiting at a shuffle (false); aborts on a shuffle that not all lanes reached, and
 * on a warpgroup collective that not all lanes reached. */
static bool warp_shuffle(void) {
    const unsigned t0 = g_warp_begin, t1 = g_warp_end, w = t0 / 32;
    unsigned at_shfl = 0, at_sync = 0, at_group = 0, at_mbar = 0, first = t1, first_group = t1;
    for (unsigned t = t0; t < t1; t++) {
        at_mbar += g_t[t].state == ST_MBAR;
        if (g_t[t].state == ST_WARP) {
            at_shfl++;
            if (first == t1) first = t;
        } else if (g_t[t].state == ST_GROUP) {
            at_group++;
            if (first_group == t1) first_group = t;
        }
        at_sync += g_t[t].state == ST_BLOCK;
    }
    if (at_mbar) warp_at_mbar(at_mbar);
    if (at_shfl == 0) {
        if (at_group) warp_at_group(at_group, at_sync, first_group);
        return false;
    }
    const emu_thread &f = g_t[first];
    const char *what = f.kind == EMU_COLLECTIVE ? "warp-collective instruction" : "shuffle";
    if (t1 - t0 != 32)
        emu_fail("full-warp %s at %s:%d in warp %u, which has only %u threads", what, f.file,
                 f.line, w, t1 - t0);
    if (at_shfl != 32)
        emu_fail("%s at %s:%d reached by %u of the 32 lanes of warp %u (%u wait at "
                 "__syncthreads, %u at a warpgroup collective, %u exited): every lane of the "
                 "mask must reach it",
                 what, f.file, f.line, at_shfl, w, at_sync, at_group,
                 32 - at_shfl - at_sync - at_group);
    for (unsigned t = t0 + 1; t < t1; t++) {
        const emu_thread &l = g_t[t];
        if (!same_site(l, f) || l.kind != f.kind || l.mask != f.mask || l.width != f.width ||
            l.op != f.op)
            emu_fail("lanes 0 and %u of warp %u wait at different shuffles or collectives (%s:%d, "
                     "%s:%d)", t - t0, w, f.file, f.line, l.file, l.line);
    }
    emu_thread *l = g_t + t0;
    if (f.kind == EMU_COLLECTIVE) {
        void *lanes[32];
        for (int lane = 0; lane < 32; lane++) lanes[lane] = l[lane].operands;
        f.op(lanes);
        for (int lane = 0; lane < 32; lane++) l[lane].state = ST_RUN;
        return true;
    }
    if (f.mask != 0xffffffffu)
        emu_fail("shuffle at %s:%d with mask 0x%08x: only full-warp masks are emulated", f.file,
                 f.line, f.mask);
    if (f.width != 32)
        emu_fail("shuffle at %s:%d with width %d: only width 32 is emulated", f.file, f.line,
                 f.width);
    for (int lane = 0; lane < 32; lane++) {
        int src = lane;
        switch (f.kind) {
        case EMU_SHFL_IDX: src = ((l[lane].arg % 32) + 32) % 32; break; /* srcLane mod width */
        case EMU_SHFL_XOR: src = lane ^ l[lane].arg; break;
        case EMU_SHFL_DOWN: src = lane + l[lane].arg; break;
        case EMU_SHFL_UP: src = lane - l[lane].arg; break;
        }
        if (src < 0 || src > 31) src = lane; /* outside the warp: keeps its own value */
        l[lane].result = l[src].bits;
        l[lane].state = ST_RUN;
    }
    return true;
}

/* Called by the running lane once it has stopped (its state says where). */
static void pass_on(void) {
    if (g_cur + 1 < g_warp_end)
        switch_to(g_cur + 1);
    else if (warp_shuffle())
        switch_to(g_warp_begin); /* the warp continues from its first lane */
    else
        emu_switch(&g_t[g_cur].sp, g_sched_sp);
}

/* ---- barriers, shuffles and collectives, called by the running fiber ---- */

void emu_syncthreads(const char *file, int line) {
    if (!g_cfg) emu_fail("__syncthreads outside a kernel (%s:%d)", file, line);
    emu_thread &me = g_t[g_cur];
    me.file = file;
    me.line = line;
    me.state = ST_BLOCK;
    pass_on();
}

unsigned long long emu_shfl(unsigned long long bits, unsigned mask, int kind, int arg, int width,
                            const char *file, int line) {
    if (!g_cfg) emu_fail("warp shuffle outside a kernel (%s:%d)", file, line);
    emu_thread &me = g_t[g_cur];
    me.bits = bits;
    me.op = NULL;
    me.mask = mask;
    me.kind = kind;
    me.arg = arg;
    me.width = width;
    me.file = file;
    me.line = line;
    me.state = ST_WARP;
    pass_on();
    return me.result;
}

void emu_warp_collective(void (*op)(void *const *), void *mine, const char *file, int line) {
    if (!g_cfg) emu_fail("warp-collective instruction outside a kernel (%s:%d)", file, line);
    emu_thread &me = g_t[g_cur];
    me.op = op;
    me.operands = mine;
    me.mask = 0xffffffffu;
    me.kind = EMU_COLLECTIVE;
    me.arg = 0;
    me.width = 32;
    me.file = file;
    me.line = line;
    me.state = ST_WARP;
    pass_on();
}

/* a vote: lane l's predicate is bit l of every lane's result */
struct ballot_lane {
    int pred;
    unsigned result;
};
static void ballot_op(void *const *lanes) {
    unsigned bits = 0;
    for (unsigned l = 0; l < 32; l++) bits |= (((ballot_lane *)lanes[l])->pred != 0) << l;
    for (unsigned l = 0; l < 32; l++) ((ballot_lane *)lanes[l])->result = bits;
}
unsigned emu_ballot(unsigned mask, int pred, const char *file, int line) {
    if (mask != 0xffffffffu)
        emu_fail("warp vote at %s:%d with mask 0x%08x: only full-warp votes are emulated", file,
                 line, mask);
    ballot_lane mine = {pred, 0u};
    emu_warp_collective(ballot_op, &mine, file, line);
    return mine.result;
}

/* ---- mbarriers: a table per block, by address. A phase's bulk copies are held as long as they
 * can be: until its arrivals are all in and a warp waits for the phase (or no warp can run
 * without it); then they land, each taking its bytes off the transaction count, and the phase
 * completes when that count is back at zero. So a thread that reads a stage without waiting
 * for its phase reads the old contents. ---- */

struct bulk_copy {
    unsigned bytes;
    uint32_t at;                /* where they land (shared-window address) */
    std::function<void()> land; /* writes them into shared memory */
    const char *what, *file;    /* the instruction, where it was issued */
    int line;
    /* Lands it: aborts where an unretired wgmma reads its bytes or the threads wrote them after
     * the last fence.proxy.async; then the bytes, and the async proxy's view of them. */
    void complete(void) const {
        emu_wgmma_check_write(at, bytes, what, file, line);
        emu_proxy_check_write(at, bytes, what, file, line);
        land();
        emu_proxy_publish(at, bytes);
    }
};
struct mbar_state {
    unsigned count, pending, phase; /* arrivals a phase takes, still to come; phases completed */
    long tx;                        /* bytes expected and not yet landed */
    std::vector<bulk_copy> copies;  /* issued in this phase, not landed */
    const char *file;               /* where it was initialised */
    int line;
    unsigned init_thread; /* the thread that initialised it, */
    bool published;       /* and has fenced since (fence.mbarrier_init or fence.proxy.async) */
};
static std::map<const void *, mbar_state> g_mbar;

static mbar_state &mbar_find(const void *bar, const char *what, const char *file, int line) {
    auto it = g_mbar.find(bar);
    if (it == g_mbar.end())
        emu_fail("%s at %s:%d on %p, which no mbarrier.init of this block initialised", what,
                 file, line, bar);
    return it->second;
}

/* All arrivals in: the held copies land; at zero outstanding bytes the phase completes. */
static void mbar_settle(mbar_state &b, const char *file, int line) {
    if (b.pending) return;
    for (const bulk_copy &c : b.copies) {
        c.complete();
        b.tx -= c.bytes;
    }
    b.copies.clear();
    if (b.tx < 0)
        emu_fail("mbarrier (initialised at %s:%d): %ld bytes more landed than its phase expected "
                 "(at %s:%d)", b.file, b.line, -b.tx, file, line);
    if (b.tx > 0) return;
    b.phase++;
    b.pending = b.count;
}

void emu_mbar_init(void *bar, unsigned count, const char *file, int line) {
    if (!g_cfg) emu_fail("mbarrier.init outside a kernel (%s:%d)", file, line);
    if ((uintptr_t)bar % 8 || !emu_shared_range(bar, 8))
        emu_fail("mbarrier.init at %s:%d: %p is not an 8-byte aligned shared-memory address",
                 file, line, bar);
    if (count == 0 || count >= (1u << 20))
        emu_fail("mbarrier.init at %s:%d: count %u (1 to 2^20 - 1)", file, line, count);
    g_mbar[bar] = mbar_state{count, count, 0u, 0L, {}, file, line, g_cur, false};
}

void emu_mbar_publish_inits(void) {
    for (auto &it : g_mbar)
        if (it.second.init_thread == g_cur) it.second.published = true;
}

void emu_mbar_init_fence(const char *file, int line) {
    if (!g_cfg) emu_fail("fence.mbarrier_init outside a kernel (%s:%d)", file, line);
    emu_mbar_publish_inits();
}

void emu_mbar_arrive(void *bar, unsigned expect_tx, const char *file, int line) {
    mbar_state &b = mbar_find(bar, "mbarrier.arrive", file, line);
    if (b.pending == 0) /* cannot happen: a phase with all its arrivals waits only for bytes */
        emu_fail("mbarrier.arrive at %s:%d: the phase has all %u arrivals and waits for %ld bytes",
                 file, line, b.count, b.tx);
    b.tx += expect_tx;
    b.pending--;
    if (b.copies.empty()) mbar_settle(b, file, line); /* else they land when someone waits */
}

void emu_mbar_expect_tx(void *bar, unsigned bytes, const char *file, int line) {
    mbar_state &b = mbar_find(bar, "mbarrier.expect_tx", file, line);
    b.tx += bytes;
}

void emu_mbar_wait(const void *bar, unsigned parity, const char *file, int line) {
    if (!g_cfg) emu_fail("mbarrier wait outside a kernel (%s:%d)", file, line);
    mbar_state &b = mbar_find(bar, "mbarrier.try_wait", file, line);
    mbar_settle(b, file, line);
    if ((b.phase & 1u) != (parity & 1u)) return; /* the phase of that parity has completed */
    emu_thread &me = g_t[g_cur];
    me.bar = bar;
    me.parity = parity & 1u;
    me.file = file;
    me.line = line;
    me.state = ST_MBAR;
    pass_on();
}

void emu_mbar_async_copy(void *bar, unsigned bytes, uint32_t at, std::function<void()> land,
                         const char *what, const char *file, int line) {
    mbar_state &b = mbar_find(bar, what, file, line);
    if (!b.published)
        emu_fail("%s at %s:%d completes on the mbarrier initialised at %s:%d, which its thread "
                 "has not published to the async proxy (mbar_init_fence, fence.mbarrier_init, "
                 "after mbarrier.init: without it the copy may find the barrier uninitialised)",
                 what, file, line, b.file, b.line);
    bulk_copy c{bytes, at, std::move(land), what, file, line};
    if (emu_schedule_adversarial()) { /* lands when a warp waits */
        b.copies.push_back(std::move(c));
        return;
    }
    c.complete();
    b.tx -= bytes;
    if (!b.pending) mbar_settle(b, file, line); /* the phase may complete */
}

void emu_bulk_copy(void *dst, const void *src, unsigned bytes, void *bar, const char *file,
                   int line) {
    emu_require_sm90("cp.async.bulk", file, line);
    mbar_find(bar, "cp.async.bulk", file, line);
    if (bytes == 0 || bytes % 16 || (uintptr_t)dst % 16 || (uintptr_t)src % 16 ||
        !emu_shared_range(dst, bytes))
        emu_fail("cp.async.bulk at %s:%d: %u bytes (a nonzero multiple of 16) from %p (16-byte "
                 "aligned) to %p (16-byte aligned, in shared memory)", file, line, bytes, src,
                 dst);
    emu_mbar_async_copy(bar, bytes, emu_shared_address(dst),
                        [dst, src, bytes]() { memcpy(dst, src, bytes); }, "cp.async.bulk", file,
                        line);
}

/* ---- named barriers (bar.sync / bar.arrive with an id and a thread count): each id is an
 * mbarrier of the block kept outside shared memory, whose phase takes count / 32 warp
 * arrivals; a warp that syncs waits for the phase it arrived in. All uses of an id in a phase
 * must give the same count; a phase left with arrivals at the block's end aborts. ---- */

static uint64_t g_named[16]; /* their keys in g_mbar */

struct named_lane {
    int id;
    unsigned count, parity;
};

static void named_arrive_op(void *const *lanes) {
    named_lane *l0 = (named_lane *)lanes[0];
    const emu_thread &t0 = g_t[g_cur];
    const unsigned warps = l0->count / 32;
    mbar_state &b = g_mbar.emplace(&g_named[l0->id], mbar_state{warps, warps, 0u, 0L, {},
                                                                t0.file, t0.line, g_cur, true})
                        .first->second;
    if (b.pending == b.count) { /* a new phase: its count and site are this use's */
        b.count = b.pending = warps;
        b.file = t0.file;
        b.line = t0.line;
    } else if (b.count != warps) {
        emu_fail("named barrier %d at %s:%d with %u threads, where its phase was begun with %u "
                 "(at %s:%d)", l0->id, t0.file, t0.line, l0->count, 32 * b.count, b.file,
                 b.line);
    }
    const unsigned parity = b.phase & 1u;
    emu_mbar_arrive(&g_named[l0->id], 0u, t0.file, t0.line);
    for (int lane = 0; lane < 32; lane++) ((named_lane *)lanes[lane])->parity = parity;
}

void emu_named_barrier(int id, unsigned count, int sync, const char *file, int line) {
    if (!g_cfg) emu_fail("named barrier outside a kernel (%s:%d)", file, line);
    if (id < 1 || id > 15 || count == 0 || count % 32 || count > g_nthreads)
        emu_fail("named barrier at %s:%d: id %d (1 to 15; 0 is __syncthreads') and %u threads (a "
                 "nonzero multiple of 32, at most the block's %u)", file, line, id, count,
                 g_nthreads);
    named_lane mine = {id, count, 0u};
    emu_warp_collective(named_arrive_op, &mine, file, line);
    if (sync) emu_mbar_wait(&g_named[id], mine.parity, file, line);
}

/* ---- setmaxnreg: the registers a thread of each warpgroup holds, out of the block's pool. A
 * kernel that uses it is compiled for its block at one block per SM (__launch_bounds__(threads,
 * 1)), and ptxas then gives each thread all a block of that size may have: 65,536 / threads
 * rounded down to a multiple of 8 (168 at 384 threads, as ptxas -v reports for the TMA
 * kernels). A .dec gives registers back to the pool; an .inc takes them, waiting on a GPU until
 * the pool has them, so a block whose warpgroups end up asking for more than it holds hangs
 * there. ---- */

struct setmaxnreg_ask {
    unsigned regs;
    int inc;
};
static std::vector<unsigned> g_wg_regs; /* per warpgroup, this block */
static bool g_setmaxnreg_used;          /* by this block */
static const char *g_inc_file;          /* the last .inc, for the report */
static int g_inc_line;

static unsigned launch_regs(void) {
    const unsigned r = 65536u / g_nthreads / 8u * 8u;
    return r < 256u ? r : 256u;
}

static void setmaxnreg_block_start(void) {
    g_wg_regs.assign((g_nthreads + 127) / 128, launch_regs());
    g_setmaxnreg_used = false;
    g_inc_file = NULL;
}

static void setmaxnreg_op(unsigned group, void *const *lanes) {
    const setmaxnreg_ask &a = *(const setmaxnreg_ask *)lanes[0];
    const emu_thread &t0 = g_t[group * 128];
    unsigned &cur = g_wg_regs[group];
    if (a.inc ? a.regs < cur : a.regs > cur)
        emu_fail("setmaxnreg.%s %u at %s:%d by warpgroup %u, which holds %u registers a thread "
                 "(an .inc may only raise the count, a .dec only lower it)",
                 a.inc ? "inc" : "dec", a.regs, t0.file, t0.line, group, cur);
    cur = a.regs;
    g_setmaxnreg_used = true; /* (only in blocks of whole warpgroups: a group collective) */
    if (a.inc) {
        g_inc_file = t0.file;
        g_inc_line = t0.line;
    }
}

/* The block has ended: what its warpgroups hold must fit the pool, or the last .inc hangs. */
static void check_setmaxnreg_end(void) {
    if (!g_setmaxnreg_used) return;
    unsigned long long held = 0;
    for (unsigned r : g_wg_regs) held += 128ull * r;
    const unsigned long long pool = (unsigned long long)g_nthreads * launch_regs();
    if (held > pool)
        emu_fail("setmaxnreg: the warpgroups end holding %llu registers and the block has %llu "
                 "(%u threads at %u): on a GPU the setmaxnreg.inc at %s:%d waits for ever",
                 held, pool, g_nthreads, launch_regs(), g_inc_file ? g_inc_file : "?",
                 g_inc_line);
}

void emu_setmaxnreg(unsigned regs, int inc, const char *file, int line) {
    emu_require_sm90("setmaxnreg", file, line);
    if (regs < 24 || regs > 256 || regs % 8)
        emu_fail("setmaxnreg.%s %u at %s:%d: 24 to 256 registers, a multiple of 8",
                 inc ? "inc" : "dec", regs, file, line);
    setmaxnreg_ask mine = {regs, inc};
    emu_group_collective(setmaxnreg_op, &mine, inc ? "setmaxnreg.inc" : "setmaxnreg.dec", file,
                         line);
}

/* a warp that waits for an mbarrier phase which has completed can run again */
static void mbar_release(unsigned w) {
    emu_thread *l = g_t + w * 32;
    if (l->state != ST_MBAR) return;
    mbar_state &b = g_mbar.at(l->bar);
    mbar_settle(b, l->file, l->line);
    if ((b.phase & 1u) == l->parity) return;
    const unsigned end = w * 32 + 32 < g_nthreads ? w * 32 + 32 : g_nthreads;
    for (unsigned t = w * 32; t < end; t++) g_t[t].state = ST_RUN;
}

/* No warp can run: a warp still waiting for an mbarrier phase waits for ever (a GPU hangs). */
static void check_mbar_deadlock(void) {
    for (unsigned w = 0; w * 32 < g_nthreads; w++) {
        const emu_thread &f = g_t[w * 32];
        if (f.state != ST_MBAR) continue;
        const mbar_state &b = g_mbar.at(f.bar);
        const uint64_t *key = (const uint64_t *)f.bar;
        if (key >= g_named && key < g_named + 16)
            emu_fail("warp %u waits at %s:%d at named barrier %d (phase begun at %s:%d), which "
                     "never completes: %u of its %u warp arrivals missing, and no other warp "
                     "can run (a deadlock)", w, f.file, f.line, (int)(key - g_named), b.file,
                     b.line, b.pending, b.count);
        emu_fail("warp %u waits at %s:%d for phase parity %u of the mbarrier initialised at %s:%d, "
                 "which never completes: %u of its %u arrivals and %ld bytes missing, and no "
                 "other warp can run (a deadlock)", w, f.file, f.line, f.parity, b.file, b.line,
                 b.pending, b.count, b.tx);
    }
}

/* The block has ended: a bulk copy still held would land in the next block's shared memory;
 * a named barrier's phase with arrivals would hold the next block's first. */
static void check_mbar_end(void) {
    for (const auto &kv : g_mbar) {
        const mbar_state &b = kv.second;
        const uint64_t *key = (const uint64_t *)kv.first;
        if (key >= g_named && key < g_named + 16 && b.pending != b.count)
            emu_fail("the block ended with named barrier %d's phase begun at %s:%d holding %u of "
                     "its %u warp arrivals (a bar.arrive that no bar.sync met)",
                     (int)(key - g_named), b.file, b.line, b.count - b.pending, b.count);
        if (!kv.second.copies.empty())
            emu_fail("the block ended with %zu bulk copies in flight on the mbarrier initialised "
                     "at %s:%d (%u of %u arrivals missing)", kv.second.copies.size(),
                     kv.second.file, kv.second.line, kv.second.pending, kv.second.count);
    }
    g_mbar.clear();
}

static void group_collective(void (*op)(unsigned, void *const *), void *mine, const char *what,
                             const char *file, int line, bool late) {
    if (!g_cfg) emu_fail("%s outside a kernel (%s:%d)", what, file, line);
    if (g_nthreads % 128 != 0)
        emu_fail("%s at %s:%d in a block of %u threads: warpgroup instructions need whole "
                 "warpgroups (a multiple of 128 threads)", what, file, line, g_nthreads);
    emu_thread &me = g_t[g_cur];
    me.group_op = op;
    me.what = what;
    me.operands = mine;
    me.file = file;
    me.line = line;
    me.late = late;
    me.state = ST_GROUP;
    pass_on();
}

void emu_group_collective(void (*op)(unsigned, void *const *), void *mine, const char *what,
                          const char *file, int line) {
    group_collective(op, mine, what, file, line, false);
}

void emu_group_collective_late(void (*op)(unsigned, void *const *), void *mine,
                               const char *what, const char *file, int line) {
    group_collective(op, mine, what, file, line, true);
}

/* Runs warp w from its first lane until all its lanes have stopped (none at a shuffle). */
static void run_warp(unsigned w) {
    g_warp_begin = w * 32;
    g_warp_end = g_warp_begin + 32 < g_nthreads ? g_warp_begin + 32 : g_nthreads;
    g_cur = g_warp_begin;
    threadIdx = g_tid[g_cur];
    emu_switch(&g_sched_sp, g_t[g_cur].sp);
}

static std::vector<unsigned> g_late; /* warpgroups complete at a late collective */

/* Performs the collective all 128 lanes of warpgroup g wait at, on their operands, and lets them
 * run again. */
static void group_perform(unsigned g) {
    emu_thread *l = g_t + 128 * g;
    void *lanes[128];
    for (int i = 0; i < 128; i++) lanes[i] = l[i].operands;
    l[0].group_op(g, lanes);
    for (int i = 0; i < 128; i++) l[i].state = ST_RUN;
}

/* Warp w has stopped with its 32 lanes at one warpgroup collective: once all 4 warps of its
 * warpgroup wait there, performs it (group_perform; a late one once no warp can run). */
static void group_arrived(unsigned w) {
    const unsigned g = w / 4;
    const emu_thread &me = g_t[w * 32];
    bool all = true;
    for (unsigned v = 4 * g; v < 4 * g + 4; v++) {
        const emu_thread &o = g_t[v * 32];
        if (o.state != ST_GROUP) {
            all = false; /* still running, or at __syncthreads: the sweep's end reports that */
        } else if (!same_site(o, me) || o.group_op != me.group_op) {
            emu_fail("warps %u and %u of warpgroup %u wait at different warpgroup collectives "
                     "(%s at %s:%d, %s at %s:%d)", v, w, g, o.what, o.file, o.line, me.what,
                     me.file, me.line);
        }
    }
    if (!all) return;
    if (me.late) { /* performed once no warp can run */
        if (std::find(g_late.begin(), g_late.end(), g) == g_late.end()) g_late.push_back(g);
        return;
    }
    group_perform(g);
}

/* No warp can run: performs the late collectives whose warpgroups are all there, in the order
 * they were complete; returns whether there were any. */
static bool late_groups_perform(void) {
    if (g_late.empty()) return false;
    std::vector<unsigned> ready;
    ready.swap(g_late);
    for (unsigned g : ready) group_perform(g);
    return true;
}

/* No warp can run: a warpgroup collective that some warps wait at is never reached by the
 * others of their warpgroup (they wait at __syncthreads or have exited): a GPU hangs there. */
static void check_group_deadlock(void) {
    for (unsigned w = 0; w * 32 < g_nthreads; w++) {
        const emu_thread &f = g_t[w * 32];
        if (f.state != ST_GROUP) continue;
        const unsigned g = w / 4;
        for (unsigned v = 4 * g; v < 4 * g + 4; v++) {
            if (g_t[v * 32].state == ST_GROUP) continue;
            const emu_thread *b = NULL; /* a lane of warp v at __syncthreads */
            for (unsigned t = v * 32; t < v * 32 + 32 && !b; t++)
                if (g_t[t].state == ST_BLOCK) b = &g_t[t];
            if (b)
                emu_fail("warpgroup-collective %s at %s:%d: warp %u of warpgroup %u waits there, "
                         "while warp %u of the warpgroup waits at __syncthreads at %s:%d (a "
                         "deadlock)", f.what, f.file, f.line, w, g, v, b->file, b->line);
            emu_fail("warpgroup-collective %s at %s:%d: warp %u of warpgroup %u waits there, "
                     "but warp %u of the warpgroup has exited", f.what, f.file, f.line, w, g, v);
        }
    }
}

/* ---- the schedule (cuda_runtime.h: emu_schedule_adversarial) and cp.async: under the
 * adversarial schedule each thread's copies wait in its queue, with the queue's length at each
 * commit, until a wait retires their group; every block starts with empty queues ---- */

static int g_schedule_env = -1, g_schedule_set = -1; /* -1: not read; the override, -1 none */

int emu_schedule_adversarial(void) {
    if (g_schedule_set >= 0) return g_schedule_set;
    if (g_schedule_env < 0) {
        const char *e = getenv("DT_EMU_SCHEDULE");
        if (!e || !*e || strcmp(e, "in-order") == 0) g_schedule_env = 0;
        else if (strcmp(e, "adversarial") == 0) g_schedule_env = 1;
        else emu_fail("DT_EMU_SCHEDULE=%s: expected 'in-order' or 'adversarial'", e);
    }
    return g_schedule_env;
}

void emu_set_schedule(int adversarial) {
    g_schedule_set = adversarial < 0 ? -1 : adversarial != 0;
    g_schedule_env = -1; /* read again at the next use */
}

struct emu_copy {
    unsigned char *dst;
    unsigned char bytes[16];
};
static std::vector<emu_copy> g_copies[EMU_MAX_THREADS];
static std::vector<size_t> g_groups[EMU_MAX_THREADS]; /* queue length at each pending commit */

void emu_cp_async(void *dst, const void *src, int src_bytes) {
    emu_copy c;
    c.dst = (unsigned char *)dst;
    memcpy(c.bytes, src, (size_t)src_bytes);
    memset(c.bytes + src_bytes, 0, (size_t)(16 - src_bytes));
    if (g_cfg && emu_schedule_adversarial()) {
        g_copies[g_cur].push_back(c);
    } else {
        if (g_cfg) emu_wgmma_check_write(emu_shared_address(c.dst), 16, "cp.async", NULL, 0);
        memcpy(c.dst, c.bytes, 16);
    }
}

void emu_cp_async_commit(void) {
    if (g_cfg && emu_schedule_adversarial()) g_groups[g_cur].push_back(g_copies[g_cur].size());
}

/* lands the first n copies of the running thread's queue, in issue order */
static void land_copies(size_t n) {
    std::vector<emu_copy> &q = g_copies[g_cur];
    for (size_t i = 0; i < n; i++) {
        emu_wgmma_check_write(emu_shared_address(q[i].dst), 16, "cp.async", NULL, 0);
        memcpy(q[i].dst, q[i].bytes, 16);
    }
    q.erase(q.begin(), q.begin() + (long)n);
    for (size_t &g : g_groups[g_cur]) g -= n;
}

void emu_cp_async_wait(int n) {
    std::vector<size_t> &g = g_groups[g_cur];
    if (!g_cfg || g.size() <= (size_t)n) return;
    const size_t retire = g.size() - (size_t)n; /* the oldest groups */
    const size_t upto = g[retire - 1];
    g.erase(g.begin(), g.begin() + (long)retire);
    land_copies(upto);
}

void emu_cp_async_flush(void) {
    if (!g_cfg) return;
    g_groups[g_cur].clear();
    land_copies(g_copies[g_cur].size());
}

static void run_block(void) {
    const unsigned n = g_nthreads, nwarps = (n + 31) / 32;
    const bool reverse = emu_schedule_adversarial() != 0;
    for (unsigned t = 0; t < n; t++) {
        fiber_init(t);
        g_copies[t].clear();
        g_groups[t].clear();
    }
    emu_wgmma_block_start(n);
    setmaxnreg_block_start();
    g_mbar.clear();
    g_late.clear();
    for (;;) {
        bool ran;
        do { /* every warp that can run runs, until none can */
            ran = false;
            for (unsigned i = 0; i < nwarps; i++) { /* last to first when adversarial */
                const unsigned w = reverse ? nwarps - 1 - i : i;
                mbar_release(w);
                if (g_t[w * 32].state != ST_RUN) continue;
                run_warp(w);
                ran = true;
                if (g_t[w * 32].state == ST_GROUP) group_arrived(w);
            }
            if (!ran) ran = late_groups_perform();
        } while (ran);
        check_group_deadlock();
        check_mbar_deadlock();
        unsigned done = 0, first = n;
        for (unsigned t = 0; t < n; t++) {
            if (g_t[t].state == ST_DONE) {
                done++;
            } else if (first == n) {
                first = t;
            } else if (!same_site(g_t[t], g_t[first])) {
                emu_fail("threads %u and %u wait at different __syncthreads (%s:%d, %s:%d)", first,
                         t, g_t[first].file, g_t[first].line, g_t[t].file, g_t[t].line);
            }
        }
        if (done == n) break;
        if (done)
            emu_fail("__syncthreads at %s:%d reached by %u of the %u threads (%u exited): every "
                     "thread of the block must reach it",
                     g_t[first].file, g_t[first].line, n - done, n, done);
        for (unsigned t = 0; t < n; t++) g_t[t].state = ST_RUN;
    }
    check_mbar_end();
    emu_wgmma_block_end();
    check_setmaxnreg_end();
}

/* ---- shared memory: a static arena (48 KiB) and a dynamic one (227 KiB), each between guard
 * pages; the dynamic area and every static variable end as close to a guard page as the
 * alignment allows, and are NaN-filled (0xff bytes) at the start of each block ---- */

static unsigned char *g_static_end, *g_dyn_end;
static size_t g_static_used;
static uint32_t g_static_base; /* the shared window's end of static memory: set per launch by
                                  emu_run_grid (see the shared window below) */
static bool g_dyn_optin; /* the running kernel has the MaxDynamicSharedMemorySize attribute */
static std::map<const void *, int> g_max_dyn; /* cudaFuncAttributeMaxDynamicSharedMemorySize */

static unsigned char *guarded_region(size_t bytes) {
    size_t len = (bytes + EMU_PAGE - 1) / EMU_PAGE * EMU_PAGE;
    char *p = (char *)mmap(NULL, len + 2 * EMU_PAGE, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) emu_fail("out of host memory (%zu bytes)", bytes);
    mprotect(p, EMU_PAGE, PROT_NONE);
    mprotect(p + EMU_PAGE + len, EMU_PAGE, PROT_NONE);
    return (unsigned char *)p + EMU_PAGE + len; /* the end: the upper guard page */
}

void *emu_static_smem(emu_shared_site *site, size_t bytes, size_t align, const char *name) {
    if (!g_cfg) emu_fail("__shared__ %s outside a kernel", name);
    if (site->block_serial != g_block_serial) { /* the first thread of this block to get here */
        size_t used = (g_static_used + bytes + align - 1) / align * align;
        if (used > EMU_STATIC_SMEM)
            emu_fail("static shared memory of %zu bytes (with __shared__ %s) exceeds 48 KiB", used,
                     name);
        /* 48 KiB in all, unless the kernel opted in to more (then the GPU's opt-in limit) */
        const size_t limit = g_dyn_optin ? EMU_OPTIN_SMEM : EMU_DEFAULT_DYN_SMEM;
        if (used + g_cfg->smem > limit)
            emu_fail("static (%zu) + dynamic (%zu) shared memory exceed %zu bytes", used,
                     g_cfg->smem, limit);
        g_static_used = used;
        site->offset = used;
        site->block_serial = g_block_serial;
        memset(g_static_end - used, 0xff, bytes);
        emu_proxy_publish(g_static_base - (uint32_t)used, bytes);
    }
    return g_static_end - site->offset;
}

int emu_shared_range(const void *p, size_t bytes) {
    if (!g_cfg) return 0;
    const unsigned char *a = (const unsigned char *)p;
    const size_t dyn = (g_cfg->smem + 15) / 16 * 16;
    if (a >= g_dyn_end - dyn && a <= g_dyn_end && bytes <= (size_t)(g_dyn_end - a)) return 1;
    return a >= g_static_end - g_static_used && a <= g_static_end &&
           bytes <= (size_t)(g_static_end - a);
}

/* ---- the shared window: the 32-bit addresses that __cvta_generic_to_shared gives and wgmma
 * descriptors hold. The dynamic area lies at [0, dyn) (dyn: its size rounded to 16 bytes) and
 * the static arena below g_static_base, as its variables lie below g_static_end, with room
 * for all the static memory the launch may still declare (at most 48 KiB, and at most the limit
 * less the dynamic size), so the two never meet. Addresses keep the pointers' offsets mod 16 and
 * stay below 227 KiB + 32 < 2^18, as descriptors need. ---- */

static size_t dyn_bytes(void) { return (g_cfg->smem + 15) / 16 * 16; }

uint32_t emu_shared_address(const void *p) {
    if (!g_cfg) emu_fail("shared address of %p outside a kernel", p);
    const unsigned char *a = (const unsigned char *)p;
    if (a >= emu_dyn_smem && a <= g_dyn_end) return (uint32_t)(a - emu_dyn_smem);
    if (a >= g_static_end - g_static_used && a <= g_static_end)
        return g_static_base - (uint32_t)(g_static_end - a);
    emu_fail("shared address of %p, which is not in the block's shared memory (the shared "
             "window of a generic address outside it is undefined)", p);
}

void emu_shared_spans(uint32_t *dyn, uint32_t *static_lo, uint32_t *static_hi) {
    *dyn = (uint32_t)dyn_bytes();
    *static_lo = g_static_base - (uint32_t)g_static_used;
    *static_hi = g_static_base;
}

void *emu_shared_pointer(uint32_t addr, size_t bytes) {
    if (!g_cfg) return NULL;
    const uint64_t end = (uint64_t)addr + bytes;
    if (end <= dyn_bytes()) return emu_dyn_smem + addr;
    if (addr >= g_static_base - g_static_used && end <= g_static_base)
        return g_static_end - (g_static_base - addr);
    return NULL;
}

cudaError_t emu_func_set_attribute(const void *kernel, cudaFuncAttribute attr, int value) {
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
        (unsigned)value > EMU_OPTIN_SMEM) {
        fprintf(stderr, "emu: cudaFuncSetAttribute(%d, %d): not supported\n", (int)attr, value);
        return cudaErrorInvalidValue;
    }
    g_max_dyn[kernel] = value;
    return cudaSuccess;
}

/* ---- what the process did on the emulated device, printed at exit when DT_EMU_REPORT is set
 * (for scripts that must know the device was used, and how much memory it held) ---- */

static unsigned long long g_launches;
static size_t g_live_bytes, g_peak_bytes;

static void print_report(void) {
    fprintf(stderr, "emu: %llu kernel launches; peak %zu bytes of device memory in cudaMalloc\n",
            g_launches, g_peak_bytes);
}

static void count_launch(void) {
    static bool registered;
    if (!registered && getenv("DT_EMU_REPORT")) atexit(print_report);
    registered = true;
    g_launches++;
}

/* ---- device memory: one mapping per allocation, ending at a guard page ---- */

struct emu_alloc {
    uintptr_t start;
    size_t bytes;
    void *map;
    size_t map_len;
};
static std::map<uintptr_t, emu_alloc> g_allocs; /* by start address */
static cudaError_t g_last_error;

cudaError_t emu_api_error(cudaError_t e, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fflush(stdout);
    fprintf(stderr, "emu: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    g_last_error = e;
    return e;
}

/* The allocation holding [p, p + bytes) (bytes 0: p may be its end), or NULL. */
static const emu_alloc *find_alloc(const void *p, size_t bytes) {
    uintptr_t a = (uintptr_t)p;
    auto it = g_allocs.upper_bound(a);
    if (it == g_allocs.begin()) return NULL;
    --it;
    size_t off = a - it->first;
    if (off > it->second.bytes || bytes > it->second.bytes - off) return NULL;
    return &it->second;
}

int emu_device_range(const void *p, size_t bytes) { return p && find_alloc(p, bytes) != NULL; }

uintptr_t emu_alloc_start(const void *p, size_t bytes) {
    const emu_alloc *a = p ? find_alloc(p, bytes) : NULL;
    return a ? a->start : 0;
}

cudaError_t emu_malloc(void **p, size_t bytes) {
    if (!p) return emu_api_error(cudaErrorInvalidValue, "cudaMalloc: NULL result pointer");
    *p = NULL;
    if (emu_capture_refuses("cudaMalloc")) return cudaErrorStreamCaptureUnsupported;
    if (bytes == 0) return cudaSuccess;
    size_t rounded = (bytes + 15) / 16 * 16; /* 16-byte aligned start */
    size_t len = (rounded + EMU_PAGE - 1) / EMU_PAGE * EMU_PAGE + EMU_PAGE;
    char *m = (char *)mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return emu_api_error(cudaErrorMemoryAllocation, "cudaMalloc(%zu): out of memory", bytes);
    mprotect(m + len - EMU_PAGE, EMU_PAGE, PROT_NONE);
    char *start = m + len - EMU_PAGE - rounded;
    memset(start, 0xff, rounded); /* uninitialised device memory: NaN */
    g_allocs[(uintptr_t)start] = {(uintptr_t)start, bytes, m, len};
    g_live_bytes += bytes;
    if (g_live_bytes > g_peak_bytes) g_peak_bytes = g_live_bytes;
    *p = start;
    return cudaSuccess;
}

cudaError_t cudaFree(void *p) {
    if (emu_capture_refuses("cudaFree")) return cudaErrorStreamCaptureUnsupported;
    if (!p) return cudaSuccess;
    auto it = g_allocs.find((uintptr_t)p);
    if (it == g_allocs.end())
        return emu_api_error(cudaErrorInvalidValue, "cudaFree(%p): not a live cudaMalloc pointer",
                             p);
    emu_stream_free(it->first);
    munmap(it->second.map, it->second.map_len); /* a later use of p faults */
    g_live_bytes -= it->second.bytes;
    g_allocs.erase(it);
    return cudaSuccess;
}

static std::set<void *> g_host_allocs; /* live cudaMallocHost buffers */

cudaError_t cudaMallocHost(void **p, size_t bytes) {
    if (emu_capture_refuses("cudaMallocHost")) return cudaErrorStreamCaptureUnsupported;
    if (!p) return emu_api_error(cudaErrorInvalidValue, "cudaMallocHost: NULL result pointer");
    *p = malloc(bytes ? bytes : 1);
    if (!*p)
        return emu_api_error(cudaErrorMemoryAllocation, "cudaMallocHost(%zu): out of memory", bytes);
    memset(*p, 0xff, bytes); /* not zero-filled on a GPU either */
    g_host_allocs.insert(*p);
    return cudaSuccess;
}

cudaError_t cudaFreeHost(void *p) {
    if (emu_capture_refuses("cudaFreeHost")) return cudaErrorStreamCaptureUnsupported;
    if (!p) return cudaSuccess;
    if (!g_host_allocs.erase(p))
        return emu_api_error(cudaErrorInvalidValue,
                         "cudaFreeHost(%p): not a live cudaMallocHost pointer", p);
    free(p);
    return cudaSuccess;
}

/* Stream-ordered free: as cudaFree, which synchronises the device (every call completes at once). */
cudaError_t cudaFreeAsync(void *p, cudaStream_t s) {
    CHECK_STREAM(s, "cudaFreeAsync");
    return cudaFree(p);
}

/* ---- copies and memsets: the device side must lie inside one allocation; each is one
 * operation on its stream, which reads or writes that side ---- */

static cudaError_t check_device(const void *p, size_t bytes, const char *what, const char *side) {
    if (find_alloc(p, bytes)) return cudaSuccess;
    return emu_api_error(cudaErrorInvalidValue,
                         "%s: %s [%p, +%zu bytes) is not inside one device allocation", what,
                         side, p, bytes);
}
static cudaError_t check_host(const void *p, size_t bytes, const char *what, const char *side) {
    if (!p) return emu_api_error(cudaErrorInvalidValue, "%s: %s is NULL", what, side);
    if (!find_alloc(p, 0)) return cudaSuccess;
    return emu_api_error(cudaErrorInvalidValue,
                         "%s: %s %p (+%zu bytes) is device memory, but the copy kind says host",
                         what, side, p, bytes);
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t s) {
    CHECK_STREAM(s, "cudaMemcpyAsync");
    if (bytes == 0) return cudaSuccess;
    const bool dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice ||
                         (kind == cudaMemcpyDefault && find_alloc(dst, 0));
    const bool src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice ||
                         (kind == cudaMemcpyDefault && find_alloc(src, 0));
    if (kind > cudaMemcpyDefault)
        return emu_api_error(cudaErrorInvalidValue, "cudaMemcpy: bad kind");
    cudaError_t e = dst_dev ? check_device(dst, bytes, "cudaMemcpy", "destination")
                            : check_host(dst, bytes, "cudaMemcpy", "destination");
    if (e == cudaSuccess)
        e = src_dev ? check_device(src, bytes, "cudaMemcpy", "source")
                    : check_host(src, bytes, "cudaMemcpy", "source");
    if (e != cudaSuccess) return e;
    const char *d = (const char *)dst, *sr = (const char *)src;
    if (d < sr + bytes && sr < d + bytes)
        return emu_api_error(cudaErrorInvalidValue, "cudaMemcpy: source and destination overlap");
    if (emu_capturing(s)) {
        emu_capture_add(s, "cudaMemcpyAsync", [=](cudaStream_t on) {
            (void)cudaMemcpyAsync(dst, src, bytes, kind, on);
        });
        return cudaSuccess;
    }
    emu_stream_begin_op(s, "cudaMemcpy");
    if (src_dev) emu_stream_record(emu_alloc_start(src, bytes), src, bytes, false);
    if (dst_dev) emu_stream_record(emu_alloc_start(dst, bytes), dst, bytes, true);
    memcpy(dst, src, bytes);
    return cudaSuccess;
}
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    if (emu_capture_refuses("cudaMemcpy")) return cudaErrorStreamCaptureUnsupported;
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kind, 0);
    return e == cudaSuccess ? cudaStreamSynchronize(0) : e; /* the host waits for the copy */
}
static cudaError_t memset_rows(void *p, size_t pitch, int value, size_t width, size_t height,
                               cudaStream_t s, const char *what) {
    CHECK_STREAM(s, what);
    if (width == 0 || height == 0) return cudaSuccess;
    if (width > pitch)
        return emu_api_error(cudaErrorInvalidValue, "%s: width %zu > pitch %zu", what, width,
                             pitch);
    const size_t span = pitch * (height - 1) + width;
    cudaError_t e = check_device(p, span, what, "destination");
    if (e != cudaSuccess) return e;
    if (emu_capturing(s)) {
        emu_capture_add(s, what, [=](cudaStream_t on) {
            (void)memset_rows(p, pitch, value, width, height, on, what);
        });
        return cudaSuccess;
    }
    emu_stream_begin_op(s, what);
    emu_stream_record(emu_alloc_start(p, span), p, span, true);
    for (size_t r = 0; r < height; r++) memset((char *)p + r * pitch, value, width);
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t s) {
    return memset_rows(p, bytes, value, bytes, 1, s, "cudaMemset");
}
cudaError_t cudaMemset(void *p, int value, size_t bytes) {
    return cudaMemsetAsync(p, value, bytes, 0);
}
cudaError_t cudaMemset2DAsync(void *p, size_t pitch, int value, size_t width, size_t height,
                              cudaStream_t s) {
    return memset_rows(p, pitch, value, width, height, s, "cudaMemset2D");
}

/* ---- errors and the devices (emulated H100s) ---- */

const char *cudaGetErrorName(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureUnmatched: return "cudaErrorStreamCaptureUnmatched";
    case cudaErrorStreamCaptureUnjoined: return "cudaErrorStreamCaptureUnjoined";
    case cudaErrorStreamCaptureIsolation: return "cudaErrorStreamCaptureIsolation";
    case cudaErrorCapturedEvent: return "cudaErrorCapturedEvent";
    }
    return "cudaErrorUnknown";
}
const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalState: return "the operation is not permitted in this state";
    case cudaErrorStreamCaptureUnsupported:
        return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated:
        return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureUnmatched:
        return "the capture was not initiated in this stream";
    case cudaErrorStreamCaptureUnjoined:
        return "capture sequence contains a fork that was not joined to the primary stream";
    case cudaErrorStreamCaptureIsolation:
        return "dependency created on uncaptured work in another stream";
    case cudaErrorCapturedEvent:
        return "operation not permitted on an event last recorded in a capturing stream";
    }
    return "unknown error";
}
cudaError_t cudaGetLastError(void) {
    cudaError_t e = g_last_error;
    g_last_error = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return g_last_error; }

/* DT_EMU_DEVICES devices (default 1), so that several ranks on one host can each bind the device
 * of their local rank. They differ only in their number: each process has one memory, used
 * by whichever device it binds (a process that used two would see them share it). */
static int device_count(void) {
    static int n = 0;
    if (n) return n;
    const char *env = getenv("DT_EMU_DEVICES");
    n = 1;
    if (env && *env) {
        char *end = NULL;
        long v = strtol(env, &end, 10);
        if (*end || v < 1 || v > 64)
            emu_fail("DT_EMU_DEVICES=%s: expected a number of emulated devices from 1 to 64", env);
        n = (int)v;
    }
    return n;
}

static int g_device;
cudaError_t cudaGetDeviceCount(int *count) {
    if (!count) return emu_api_error(cudaErrorInvalidValue, "cudaGetDeviceCount: NULL");
    *count = device_count();
    return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int device) {
    if (!p || device < 0 || device >= device_count())
        return emu_api_error(cudaErrorInvalidDevice,
                             "cudaGetDeviceProperties: device %d of %d (DT_EMU_DEVICES)", device,
                             device_count());
    memset(p, 0, sizeof *p);
    const emu_gpu &gpu = emu_gpu_profile();
    snprintf(p->name, sizeof p->name, "%s", gpu.name);
    p->totalGlobalMem = gpu.memory;
    p->sharedMemPerBlock = EMU_STATIC_SMEM;
    p->sharedMemPerBlockOptin = gpu.optin_smem;
    p->major = gpu.major;
    p->minor = gpu.minor;
    p->multiProcessorCount = gpu.sms;
    p->warpSize = 32;
    p->maxThreadsPerBlock = EMU_MAX_THREADS;
    p->maxGridSize[0] = 0x7fffffff;
    p->maxGridSize[1] = p->maxGridSize[2] = 65535;
    return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    if (!free_bytes || !total_bytes) return emu_api_error(cudaErrorInvalidValue, "cudaMemGetInfo: NULL");
    *total_bytes = emu_gpu_profile().memory;
    *free_bytes = *total_bytes - g_live_bytes;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
    if (device < 0 || device >= device_count())
        return emu_api_error(cudaErrorInvalidDevice,
                             "cudaSetDevice(%d): %d device%s (DT_EMU_DEVICES)", device,
                             device_count(), device_count() == 1 ? "" : "s");
    g_device = device;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int *device) {
    if (!device) return emu_api_error(cudaErrorInvalidValue, "cudaGetDevice: NULL");
    *device = g_device;
    return cudaSuccess;
}

/* ---- launches ---- */

bool emu_launch_check(const emu_launch_cfg &c) {
    if (g_cfg) emu_fail("launch of %s from inside a kernel", c.name);
    const dim3 g = c.grid, b = c.block;
    const unsigned long long threads = (unsigned long long)b.x * b.y * b.z;
    auto it = g_max_dyn.find(c.kernel);
    size_t dyn_limit = it != g_max_dyn.end() ? (size_t)it->second : EMU_DEFAULT_DYN_SMEM;
    if (dyn_limit > EMU_OPTIN_SMEM) dyn_limit = EMU_OPTIN_SMEM; /* emu_set_gpu since the opt-in */
    cudaError_t e = cudaSuccess;
    const char *why = "";
    if (!g.x || !g.y || !g.z || !b.x || !b.y || !b.z)
        e = cudaErrorInvalidConfiguration, why = "a zero grid or block dimension";
    else if (threads > EMU_MAX_THREADS || b.z > 64)
        e = cudaErrorInvalidConfiguration, why = "more than 1024 threads per block";
    else if (g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535)
        e = cudaErrorInvalidConfiguration, why = "grid too large";
    else if (c.smem > dyn_limit)
        e = cudaErrorInvalidValue,
        why = dyn_limit == EMU_DEFAULT_DYN_SMEM
                  ? "more than 48 KiB of dynamic shared memory without cudaFuncSetAttribute("
                    "cudaFuncAttributeMaxDynamicSharedMemorySize) for this kernel"
                  : "more dynamic shared memory than cudaFuncSetAttribute allowed";
    else if (!emu_stream_valid(c.stream))
        e = cudaErrorInvalidResourceHandle, why = "a stream that does not exist";
    if (e == cudaSuccess) {
        emu_stream_begin_op(c.stream, c.name);
        count_launch();
        return true;
    }
    emu_api_error(e, "launch of %s<<<(%u,%u,%u), (%u,%u,%u), %zu>>> fails: %s", c.name, g.x, g.y,
                  g.z, b.x, b.y, b.z, c.smem, why);
    return false;
}

void emu_check_pointer_arg(const emu_launch_cfg &c, int index, const void *p, size_t bytes,
                           bool write) {
    if (!p) return;
    const emu_alloc *a = find_alloc(p, 0);
    if (!a)
        emu_fail("launch of %s: argument %d (%p) is not device memory (a host pointer, or freed)",
                 c.name, index + 1, p);
    emu_stream_record(a->start, p, bytes, write);
}

void emu_run_grid(const emu_launch_cfg &c, void (*thunk)(const void *), const void *ctx) {
    if (!g_stacks) { /* once: the fibers' stacks, each above a guard page */
        size_t len = (size_t)EMU_MAX_THREADS * (EMU_STACK + EMU_PAGE);
        g_stacks =
            (char *)mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (g_stacks == MAP_FAILED) emu_fail("cannot map the fiber stacks");
        for (unsigned t = 0; t < EMU_MAX_THREADS; t++)
            mprotect(g_stacks + (size_t)t * (EMU_STACK + EMU_PAGE), EMU_PAGE, PROT_NONE);
        g_static_end = guarded_region(EMU_STATIC_SMEM);
        g_dyn_end = guarded_region(EMU_MAX_OPTIN_SMEM); /* whichever GPU is emulated */
    }
    g_dyn_optin = g_max_dyn.count(c.kernel) != 0;
    const size_t limit = g_dyn_optin ? EMU_OPTIN_SMEM : EMU_DEFAULT_DYN_SMEM;
    const size_t static_room = limit - c.smem < EMU_STATIC_SMEM ? limit - c.smem : EMU_STATIC_SMEM;
    g_static_base = (uint32_t)(((c.smem + 15) / 16 * 16 + static_room + 15) / 16 * 16);
    g_nthreads = c.block.x * c.block.y * c.block.z;
    for (unsigned t = 0; t < g_nthreads; t++)
        g_tid[t] = {t % c.block.x, t / c.block.x % c.block.y, t / (c.block.x * c.block.y)};
    blockDim = c.block;
    gridDim = c.grid;
    g_thunk = thunk;
    g_ctx = ctx;
    g_cfg = &c;
    const size_t dyn = (c.smem + 15) / 16 * 16;
    emu_dyn_smem = g_dyn_end - dyn;
    for (unsigned z = 0; z < c.grid.z; z++)
        for (unsigned y = 0; y < c.grid.y; y++)
            for (unsigned x = 0; x < c.grid.x; x++) {
                blockIdx = {x, y, z};
                g_block_serial++;
                g_static_used = 0;
                memset(emu_dyn_smem, 0xff, dyn);
                if (dyn) emu_proxy_publish(0, dyn);
                run_block();
            }
    g_cfg = NULL;
}
