/* The instructions that let the warpgroups of one block take different roles (sm_90): named
 * barriers, on which a subset of the block's warps meet (a producer warpgroup never waits with
 * its consumers; two consumer warpgroups take turns at the tensor cores), and setmaxnreg, which
 * moves registers from the producer to the consumers. Internal to model/cuda.
 *
 *   named_bar_sync(id, n): this warp arrives on barrier id (1 to 15; 0 is __syncthreads') and
 *       waits until n threads (a multiple of 32) have arrived in this phase;
 *   named_bar_arrive(id, n): the same without waiting (a signal to the warps that sync);
 *       both are per warp: all 32 lanes execute them together;
 *   setmaxnreg_inc<R>() / setmaxnreg_dec<R>(): the warpgroup's registers per thread become R
 *       (24 to 256, a multiple of 8; all 128 threads of the warpgroup execute it), taken from or
 *       given back to the block's pool; the kernel's launch bounds set what it starts with.
 *
 * Under the host emulator (tests/emu, DT_CUDA_EMULATOR) the barriers are the emulator's (warp
 * collectives whose phases it tracks: a phase that a bar.arrive began and no bar.sync closed
 * when the block ends, and a wait that can never complete, abort) and setmaxnreg a warpgroup
 * collective that counts the registers without moving any (a block whose warpgroups end up
 * asking for more than the pool of 65,536 / threads a thread, where the last .inc would wait
 * for ever, aborts). setmaxnreg exists in sm_90a device code only; elsewhere it traps, as wgmma
 * does (wgmma.cuh). */
#ifndef DT_CUDA_WARP_ROLES_CUH
#define DT_CUDA_WARP_ROLES_CUH

#include "model/cuda/cuda_common.cuh"

/* The split of the warp-specialised kernels (flash_forward_tma.cu, flash_dkdv_tma.cu,
 * flash_dkdv_diff_tma.cu): a producer warpgroup and two consumer warpgroups, one block an SM
 * (__launch_bounds__(WS_THREADS, 1)). The pool is 65,536 / 384 = 170 registers a thread, 168
 * in setmaxnreg's multiples of 8 (ptxas gives such a kernel exactly that:
 * tests/scripts/setmaxnreg_pool.py checks it); the producer, which only issues loads, keeps 24
 * and each consumer takes 240, all of the pool. */
#define WS_THREADS 384
#define WS_PRODUCER_REGS 24
#define WS_CONSUMER_REGS 240
static_assert(WS_PRODUCER_REGS + 2 * WS_CONSUMER_REGS <= 3 * (65536 / WS_THREADS / 8 * 8),
              "the warpgroups' registers exceed the pool: a consumer's setmaxnreg.inc would "
              "wait for ever");

#ifdef DT_CUDA_EMULATOR

__device__ __forceinline__ void named_bar_sync(int id, int n, const char *file = __builtin_FILE(),
                                               int line = __builtin_LINE()) {
    emu_named_barrier(id, (unsigned)n, 1, file, line);
}
__device__ __forceinline__ void named_bar_arrive(int id, int n,
                                                 const char *file = __builtin_FILE(),
                                                 int line = __builtin_LINE()) {
    emu_named_barrier(id, (unsigned)n, 0, file, line);
}
template <int R>
__device__ __forceinline__ void setmaxnreg_inc(const char *file = __builtin_FILE(),
                                               int line = __builtin_LINE()) {
    emu_setmaxnreg(R, 1, file, line);
}
template <int R>
__device__ __forceinline__ void setmaxnreg_dec(const char *file = __builtin_FILE(),
                                               int line = __builtin_LINE()) {
    emu_setmaxnreg(R, 0, file, line);
}

#else

__device__ __forceinline__ void named_bar_sync(int id, int n) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}
__device__ __forceinline__ void named_bar_arrive(int id, int n) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
template <int R> __device__ __forceinline__ void setmaxnreg_inc(void) {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(R));
}
template <int R> __device__ __forceinline__ void setmaxnreg_dec(void) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(R));
}
#else
template <int R> __device__ __forceinline__ void setmaxnreg_inc(void) { __trap(); }
template <int R> __device__ __forceinline__ void setmaxnreg_dec(void) { __trap(); }
#endif

#endif

#endif
