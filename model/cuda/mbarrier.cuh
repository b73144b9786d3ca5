/* Shared-memory barriers with transaction counts (mbarrier) and the bulk copies that complete on
 * them (cp.async.bulk, sm_90): the pipeline of a warp-specialised kernel, in which producer warps
 * fill a ring of shared-memory stages and consumer warps wait for each stage to be full, use it,
 * and hand it back. Internal to model/cuda.
 *
 *   mbar_init(bar, count): by one thread, then mbar_init_fence() and a __syncthreads before any
 *       other use; a phase of the barrier completes when count arrivals are in and every byte
 *       it expects has landed;
 *   mbar_arrive(bar): this thread's arrival;
 *   mbar_arrive_expect_tx(bar, bytes): this thread's arrival, and `bytes` more to land in the
 *       phase (the bulk copies it is about to issue);
 *   mbar_wait(bar, parity): until the phase of that parity has completed (phases alternate 0, 1,
 *       0, ...: a ring's stage s in its round r waits for parity r & 1);
 *   bulk_copy_g2s(dst, src, bytes, bar): copies `bytes` (a nonzero multiple of 16; both addresses
 *       16-byte aligned) from global to shared memory in the async proxy, taking them off the
 *       barrier's expected bytes as they land; the data is visible to a thread once it has seen
 *       the phase complete (mbar_wait);
 *   cp_async_mbar_arrive(bar): an arrival on bar once every cp.async this thread issued so far
 *       has landed (.noinc: one of bar's count, not an extra one).
 * A barrier's 8 bytes must not be written otherwise while in use.
 *
 * Under the host emulator (tests/emu, DT_CUDA_EMULATOR) each is a call into the emulator, which
 * keeps the barriers' state, holds a phase's bulk copies until its arrivals are all in (so a
 * consumer that reads a stage without waiting reads the old contents), aborts on misuse (an
 * uninitialised barrier, a copy completing on one whose initialising thread has not called
 * mbar_init_fence, misaligned or out-of-range copies, more bytes than expected, a wait that can
 * never complete, copies still in flight when the block ends) and needs warp-uniform waits.
 * cp_async_mbar_arrive lands this thread's cp.async copies still in flight (the adversarial
 * schedule holds them: cp_async.cuh), then arrives.
 * Elsewhere than sm_90 and later device code the functions trap. test_cuda_mbarrier runs a
 * producer/consumer ring on a GPU and on the emulator. */
#ifndef DT_CUDA_MBARRIER_CUH
#define DT_CUDA_MBARRIER_CUH

#include <stdint.h>

#include "model/cuda/cuda_common.cuh"

#ifdef DT_CUDA_EMULATOR

__device__ __forceinline__ void mbar_init(uint64_t *bar, unsigned count,
                                          const char *file = __builtin_FILE(),
                                          int line = __builtin_LINE()) {
    emu_mbar_init(bar, count, file, line);
}
__device__ __forceinline__ void mbar_init_fence(const char *file = __builtin_FILE(),
                                                int line = __builtin_LINE()) {
    emu_mbar_init_fence(file, line);
}
__device__ __forceinline__ void mbar_arrive(uint64_t *bar, const char *file = __builtin_FILE(),
                                            int line = __builtin_LINE()) {
    emu_mbar_arrive(bar, 0u, file, line);
}
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t *bar, unsigned bytes,
                                                      const char *file = __builtin_FILE(),
                                                      int line = __builtin_LINE()) {
    emu_mbar_arrive(bar, bytes, file, line);
}
__device__ __forceinline__ void mbar_wait(const uint64_t *bar, unsigned parity,
                                          const char *file = __builtin_FILE(),
                                          int line = __builtin_LINE()) {
    emu_mbar_wait(bar, parity, file, line);
}
__device__ __forceinline__ void bulk_copy_g2s(void *dst, const void *src, unsigned bytes,
                                              uint64_t *bar, const char *file = __builtin_FILE(),
                                              int line = __builtin_LINE()) {
    emu_bulk_copy(dst, src, bytes, bar, file, line);
}
__device__ __forceinline__ void cp_async_mbar_arrive(uint64_t *bar,
                                                     const char *file = __builtin_FILE(),
                                                     int line = __builtin_LINE()) {
    emu_cp_async_flush();
    emu_mbar_arrive(bar, 0u, file, line);
}

#else

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define DT_MBAR_ASM(...) asm volatile(__VA_ARGS__)
#else
#define DT_MBAR_ASM(...) __trap()
#endif

__device__ __forceinline__ void mbar_init(uint64_t *bar, unsigned count) {
    DT_MBAR_ASM("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count)
                : "memory");
}
__device__ __forceinline__ void mbar_init_fence(void) {
    DT_MBAR_ASM("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t *bar) {
    DT_MBAR_ASM("{\n .reg .b64 state;\n mbarrier.arrive.shared::cta.b64 state, [%0];\n}\n" ::"r"(
                    smem_addr(bar))
                : "memory");
}
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t *bar, unsigned bytes) {
    DT_MBAR_ASM("{\n .reg .b64 state;\n"
                " mbarrier.arrive.expect_tx.shared::cta.b64 state, [%0], %1;\n}\n" ::"r"(
                    smem_addr(bar)),
                "r"(bytes)
                : "memory");
}
__device__ __forceinline__ void mbar_wait(const uint64_t *bar, unsigned parity) {
    uint32_t done = 0;
    do {
        DT_MBAR_ASM("{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                    " selp.u32 %0, 1, 0, p;\n}\n"
                    : "=r"(done)
                    : "r"(smem_addr(bar)), "r"(parity)
                    : "memory");
    } while (!done);
}
__device__ __forceinline__ void bulk_copy_g2s(void *dst, const void *src, unsigned bytes,
                                              uint64_t *bar) {
    DT_MBAR_ASM("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, "
                "[%3];\n" ::"r"(smem_addr(dst)),
                "l"(src), "r"(bytes), "r"(smem_addr(bar))
                : "memory");
}
__device__ __forceinline__ void cp_async_mbar_arrive(uint64_t *bar) {
    DT_MBAR_ASM("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(smem_addr(bar))
                : "memory");
}
#undef DT_MBAR_ASM

#endif

#endif
