/* Asynchronous global -> shared copies (cp.async, sm_80 and later), used by the fused attention
 * (flash_core.cuh) to stage the next bf16 tile while the current one is multiplied. Internal to
 * model/cuda.
 *
 *   cp_async16(dst, src, src_bytes): cp.async.cg.shared.global of 16 bytes from src (global,
 *       16-byte aligned) to dst (shared, 16-byte aligned); only the first src_bytes (0 or 16)
 *       are read, the rest of the 16 bytes is zero-filled (src_bytes = 0: a zero chunk, src is
 *       not read but must still be a valid address);
 *   cp_async_commit(): closes the group of this thread's copies issued since the last commit;
 *   cp_async_wait<N>(): waits until at most N of this thread's committed groups are pending.
 * A copy is visible to the other threads of the block only after the issuing thread's wait and
 * a __syncthreads that follows it.
 *
 * Under the host emulator (tests/emu, DT_CUDA_EMULATOR) a copy happens at once (a memcpy and the
 * zero fill) under its default schedule, and lands only when the wait that retires its group
 * runs under the adversarial one (emu_cp_async, cuda_runtime.h), so a kernel that reads a staged
 * tile too early reads the old contents there. The emulated copy checks what the instruction
 * requires: dst 16-byte aligned in the block's shared memory, src 16-byte aligned, src_bytes 0
 * or 16. emu_selftest checks these functions (emu_selftest_cp_async.cu). */
#ifndef DT_CUDA_CP_ASYNC_CUH
#define DT_CUDA_CP_ASYNC_CUH

#include <stdint.h>

#include "model/cuda/cuda_common.cuh"

#ifdef DT_CUDA_EMULATOR

#include <stdio.h>
#include <stdlib.h>

__device__ __forceinline__ void cp_async16(void *dst, const void *src, int src_bytes,
                                           const char *file = __builtin_FILE(),
                                           int line = __builtin_LINE()) {
    const bool ok = ((uintptr_t)dst % 16 == 0) && ((uintptr_t)src % 16 == 0) &&
                    (src_bytes == 0 || src_bytes == 16) && emu_shared_range(dst, 16);
    if (!ok) {
        fprintf(stderr, "%s:%d: cp.async: dst %p (must be 16-byte aligned shared memory), src %p "
                "(16-byte aligned), src-size %d (0 or 16)\n", file, line, dst, src, src_bytes);
        fflush(stderr);
        abort();
    }
    emu_cp_async(dst, src, src_bytes);
}
__device__ __forceinline__ void cp_async_commit(void) { emu_cp_async_commit(); }
template <int N> __device__ __forceinline__ void cp_async_wait(void) { emu_cp_async_wait(N); }

#else

__device__ __forceinline__ void cp_async16(void *dst, const void *src, int src_bytes) {
    const unsigned addr = smem_addr(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(addr), "l"(src),
                 "r"(src_bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit(void) {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N> __device__ __forceinline__ void cp_async_wait(void) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

#endif

#endif
