/* Shared by the CUDA backend's kernels (the .cu files of model/cuda): error checks, the compute stream, the
 * backend's scratch workspace, launch sizes and warp/block reductions.
 *
 * Every op of the backend enqueues its kernels on one compute stream (cuda_stream()) and
 * returns; the results are ready once that stream reaches them (copy_to_host and synchronize
 * wait for it). A CUDA error inside an op is fatal: cuda_check prints the call, file:line and
 * CUDA's message to stderr and aborts, which under mpirun/srun ends the whole job (the model
 * never continues on a half-done op). */
#ifndef DT_CUDA_COMMON_CUH
#define DT_CUDA_COMMON_CUH

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#define CUDA_CHECK(call) cuda_check((call), #call, __FILE__, __LINE__)
/* After a kernel launch: launch-configuration errors are reported here, at the launch site. */
#define CUDA_LAUNCH_CHECK() cuda_check(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)

void cuda_check(cudaError_t e, const char *what, const char *file, int line);

/* The stream every op runs on (created by cuda_backend_init). */
cudaStream_t cuda_stream(void);

/* Backend-owned device scratch of at least `bytes`, grown on demand (the old contents are not
 * kept, nor is new memory zero-filled) and reused by the next caller: valid until the next call
 * of cuda_workspace. Ops use it for intermediate buffers that the backend interface does not
 * pass in (partial sums, per-row deltas). Growing is stream-ordered (cudaFreeAsync of the old
 * buffer, cudaMallocAsync of the new one on the compute stream): kernels queued before still read
 * the old one, and the host does not wait. */
void *cuda_workspace(size_t bytes);

/* Independent workspaces of the same kind, so that a user of one never invalidates another's:
 * CUDA_WS_OPS is cuda_workspace's (the ops' intermediates); CUDA_WS_GEMM holds the bf16 copies of
 * a matrix product's operands (matmul.cu), which any op may run between its own workspace uses;
 * CUDA_WS_ROPE holds RoPE's cos/sin table, which rope.cu keeps between calls (a cache);
 * CUDA_WS_WEIGHTS the bf16 copies of the weight matrices (weight_copies.cu). */
enum {
    CUDA_WS_OPS = 0,
    CUDA_WS_GEMM = 1,
    CUDA_WS_ROPE = 2,
    CUDA_WS_WEIGHTS = 3,
    CUDA_WS_SLOTS = 4
};
void *cuda_workspace_slot(int slot, size_t bytes);
/* cuda_workspace_slot for a user that keeps the slot's contents between calls: *fresh is set
 * when the memory returned is new (the first use, grown, or after cuda_memory_shutdown), whose
 * contents must then be rebuilt, and cleared when it is the memory of the last call. */
void *cuda_workspace_slot_kept(int slot, size_t bytes, bool *fresh);

/* Blocks of `threads` threads covering n elements (at least 1, at most 2^31 - 1: kernels use a
 * grid-stride loop beyond that). */
static inline unsigned cuda_blocks(size_t n, int threads) {
    size_t b = (n + (size_t)threads - 1) / (size_t)threads;
    if (b < 1) b = 1;
    if (b > 0x7fffffffu) b = 0x7fffffffu;
    return (unsigned)b;
}

/* The 32-bit shared-window address of p (shared memory) that PTX's shared-space operands take
 * (ldmatrix, cp.async, mbarriers, bulk and TMA copies, wgmma descriptors): under the host
 * emulator its emulated window (emu_shared_address, which aborts outside shared memory). */
__device__ __forceinline__ uint32_t smem_addr(const void *p) {
#ifdef DT_CUDA_EMULATOR
    return emu_shared_address(p);
#else
    return (uint32_t)__cvta_generic_to_shared(p);
#endif
}

/* The calling thread's warp, threadIdx.x / 32 (a one-dimensional block), as lane 0 of its warp
 * has it: a shuffle makes the value provably the same across the warp, so that the compiler
 * treats branches on it, and on what is computed from it (the causal mask's test of a warp's
 * rows, a warp-specialised kernel's roles), as uniform. Computed from threadIdx.x directly,
 * ptxas takes such branches for divergent and, in a kernel with wgmma products, serialises
 * every product (its advisory C7520: "wgmma.mma_async instructions are serialized due to program
 * dependence on compiler-inserted WG.AR in divergent path"), as CUTLASS's
 * canonical_warp_idx_sync avoids. (The mma.sync kernels keep threadIdx.x / 32: with this their
 * masked tiles take fewer instructions, their ordinary ones the same or more.) Every lane of the
 * warp calls it. */
__device__ __forceinline__ int warp_index(void) {
    return __shfl_sync(0xffffffffu, (int)(threadIdx.x / 32), 0);
}

/* p, made opaque to the compiler where this is called: what a loop derives from it (wgmma
 * descriptors, say) is computed in the loop, not hoisted out of it into registers that the loop
 * body needs (ptxas would spill them). No instruction. */
template <typename T> __device__ __forceinline__ T *opaque_ptr(T *p) {
#if defined(__CUDA_ARCH__)
    asm volatile("" : "+l"(p));
#endif
    return p;
}

__device__ __forceinline__ float warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

__device__ __forceinline__ double warp_sum(double x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

__device__ __forceinline__ float warp_max(float x) {
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}

/* Sum over the block (blockDim.x a multiple of 32, at most 1024) in float or double; every
 * thread gets the result (a butterfly adds the same pairs in every lane). `scratch` is
 * __shared__ T[32]. The order of additions is fixed by the block shape, so the result is
 * deterministic. Contains __syncthreads: call from every thread of the block. */
template <typename T> __device__ __forceinline__ T block_sum(T x, T *scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    x = warp_sum(x);
    __syncthreads(); /* scratch may still be read by a previous call */
    if (lane == 0) scratch[warp] = x;
    __syncthreads();
    x = lane < nwarps ? scratch[lane] : T(0);
    return warp_sum(x);
}

__device__ __forceinline__ float block_max(float x, float *scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    x = warp_max(x);
    __syncthreads();
    if (lane == 0) scratch[warp] = x;
    __syncthreads();
    x = lane < nwarps ? scratch[lane] : -INFINITY;
    return warp_max(x);
}

#endif
