/* Host emulation of the CUDA subset used by model/cuda (a TEST TOOL, not part of difftrain: it
 * is never linked into the difftrain program). tests/emu/transform.py rewrites each .cu and .cuh
 * file of model/cuda into C++ (launches become emu_launch calls, __shared__ declarations become
 * per-block arenas); g++ compiles them against this header instead of the CUDA toolkit, and the
 * GPU op tests (tests/unit/test_cuda_*.c) run unchanged on the result as emu_test_cuda_*, and
 * the whole trainer as difftrain_emu (tests/emu/CMakeLists.txt). The runtime API part of this
 * header is plain C, as the real one is, for the C files that use streams and events.
 *
 * How it runs: a launch runs its blocks one after another; every CUDA thread of a block is a
 * fiber with its own stack (emu_rt.cpp: a 15-instruction x86-64 context switch). A fiber runs
 * without interruption until it reaches __syncthreads or a warp shuffle, so a kernel without
 * barriers costs one switch in and out per thread. The scheduler runs each warp's lanes up to
 * their next barrier, performs a shuffle once all 32 lanes of the warp wait at it, performs a
 * warpgroup instruction (wgmma) once all 4 warps of the warpgroup wait at it (running the other
 * warps meanwhile), and releases __syncthreads once all threads of the block wait at it.
 *
 * Streams (emu_streams.cpp): every launch, copy, memset, cuBLAS call and (in difftrain_emu)
 * NCCL collective runs when it is issued, so work is never actually concurrent; instead the
 * emulator checks that the program orders it as a GPU needs. Each such operation belongs to its
 * stream, and CUDA's happens-before relation (stream order, cudaEventRecord +
 * cudaStreamWaitEvent, host synchronisation, the legacy default stream's implicit
 * synchronisation with blocking streams) is tracked with vector clocks; two operations of
 * different streams that touch the same device bytes, one of them writing, with nothing
 * ordering them, abort naming both. Copies, memsets, cuBLAS operands and collectives count
 * their exact byte ranges; a kernel counts the element each pointer argument points at (the
 * emulator cannot know a kernel's extent), written through a pointer to non-const, read
 * through a pointer to const. So a missing event wait before the kernel that consumes a
 * collective's result, or before a collective that consumes a kernel's, is reported.
 *
 * What it checks (a violation aborts with the kernel, block and source line):
 *   - the kernels' index arithmetic, reductions and results: the tests compare every output
 *     with the CPU oracle, on the real kernel sources;
 *   - every __syncthreads is reached by every thread of the block, at the same call site (no
 *     thread exited or waiting elsewhere); every full-mask shuffle is reached by all 32 lanes of
 *     the warp at the same call site with the same mask (partial warps and masks abort);
 *   - the tensor-core instructions of model/cuda/mma.cuh (mma.m16n8k16 bf16, ldmatrix.x4),
 *     warp-collective like a shuffle, compute with the PTX ISA's exact fragment layouts
 *     (emu_mma.cpp), so a fragment kept in the wrong register or lane gives a wrong result;
 *     ldmatrix rows must be 16-byte aligned and in shared memory;
 *   - the warpgroup instructions of model/cuda/wgmma.cuh (wgmma.mma_async m64nNk16 bf16 with A
 *     from registers or shared memory, wgmma.fence, commit_group, wait_group; emu_wgmma.cpp):
 *     reached by the 128 threads of a warpgroup (4 consecutive warps; the block must be whole
 *     warpgroups) at one call site with the same operands, else abort (lanes or warps at other
 *     sites, or at __syncthreads or exited while the rest wait: a deadlock on a GPU, reported
 *     with both sites); the products use the ISA's fragment layouts and decode the shared-memory
 *     descriptors (no swizzle or the 32, 64 and 128-byte swizzles, base offset 0 only,
 *     reserved bits clear, every element read in the block's shared memory; N a multiple of 8
 *     up to 256); they are asynchronous as on a
 *     GPU: queued at issue (A's registers copied) and performed by the wgmma_wait that retires
 *     their committed group, from shared memory and the accumulators as they are then, so a
 *     kernel that reads D, or rewrites a staged tile, before that wait computes a wrong result;
 *     the wait completes only once no other warp of the block can run (the latest moment), and
 *     an asynchronous copy (cp.async, bulk, TMA) landing on bytes that a product not yet
 *     retired reads aborts (a stage handed back to its producer before the wait);
 *     a wgmma without a wgmma_fence since the block's start or the warpgroup's last wait, and
 *     a block that ends with products not committed or not waited for, abort. Shared memory
 *     has 32-bit window addresses (emu_shared_address: what __cvta_generic_to_shared gives)
 *     below 2^18, static and dynamic apart;
 *   - the async proxy (emu_proxy.cpp): a wgmma that reads, or an asynchronous copy (bulk, TMA)
 *     that lands on, a byte of shared memory the threads wrote (st.shared or cp.async) after
 *     the block's last fence.proxy.async (wgmma_fence_smem) aborts: the writers must fence
 *     before the barrier that hands the bytes on. Any thread's fence counts for all here (on a
 *     GPU only for its own writes), so a writer that does not fence goes unnoticed while
 *     another thread fences between its write and the read;
 *   - shared memory: static + dynamic sizes within the limits, more than 48 KiB of dynamic
 *     shared memory only after cudaFuncSetAttribute(MaxDynamicSharedMemorySize) for that
 *     kernel; shared memory starts every block as NaN (0xff bytes), so a value read before a
 *     thread of the block wrote it shows up as NaN; the dynamic area ends at a guard page;
 *   - device memory: cudaMalloc returns NaN-filled memory that ends at a guard page (an overrun
 *     of more than the 16-byte rounding faults), cudaFree unmaps it (a use after free faults),
 *     every copy, memset and cuBLAS operand must lie inside one live allocation, and every
 *     non-null pointer argument of a kernel must point into one (a host pointer passed to a
 *     kernel is reported);
 *   - TMA loads (tma.cuh; emu_tma.cpp), named barriers and setmaxnreg (warp_roles.cuh): a load
 *     needs a map that tma_encode_bf16 made, of its rank, a destination aligned to the
 *     swizzle's repeat, and lands like a bulk copy; a named barrier's phase takes one thread
 *     count, and a phase still holding arrivals at the block's end aborts; setmaxnreg counts
 *     registers against the block's pool (a block whose warpgroups ask for more aborts: below);
 *   - mbarriers (mbarrier.cuh): a bulk or TMA copy may complete only on a barrier whose
 *     initialising thread has fenced it since (mbar_init_fence; below);
 *   - launch configurations (block <= 1024 threads, grid.y/z <= 65535, nonzero sizes, a valid
 *     stream): a bad one sets the error that CUDA_LAUNCH_CHECK then reports, as on a GPU;
 *   - the order of work on different streams (above).
 * What it cannot check: data races between threads within one barrier phase (threads run one
 * at a time, in order; the adversarial schedule, DT_EMU_SCHEDULE=adversarial, runs each phase's
 * warps in the reverse order and lands asynchronous copies at their wait, which exposes a race
 * between warps as a different result under one of the two schedules, but not one between the
 * lanes of a warp), the GPU memory model, an unordered access that a kernel makes away
 * from the elements its arguments point at, the ulp differences of CUDA's math library and
 * its FMA contraction (glibc expf/logf/pow are used), the tensor cores' own rounding of a
 * product's sum (each mma and wgmma here rounds a double-precision sum once), the wgmma
 * ordering rules beyond the fence checks above (registers touched between issue and wait;
 * which thread's fence.proxy.async published a byte),
 * the global reads of TMA loads in the stream-order check (the tensor's address is inside the
 * map), the registers a kernel really uses (setmaxnreg is counted against the pool a block of
 * its size gets at one block per SM, not against ptxas's figure), atomics (no kernel uses
 * them), and speed.
 * x86-64 Linux only (the context switch). DT_EMU_DEVICES sets the number of devices (default
 * 1); DT_EMU_REPORT=1 prints the kernel launches and the peak device memory at exit. DT_EMU_GPU
 * says which GPU's limits they have: h100 (the default: compute capability 9.0, 227 KiB of
 * shared memory a block after the opt-in), a100 (8.0, 163 KiB) or l40s (8.9, 99 KiB);
 * cudaGetDeviceProperties reports them, launches and cudaFuncSetAttribute are held to that
 * shared memory, and the sm_90 instructions (wgmma, cp.async.bulk, cp.async.bulk.tensor,
 * setmaxnreg) abort on the 8.x ones. */
#ifndef DT_EMU_CUDA_RUNTIME_H
#define DT_EMU_CUDA_RUNTIME_H

/* Lets model/cuda code that must differ under emulation (inline PTX: mma.cuh, wgmma.cuh) tell. */
#define DT_CUDA_EMULATOR 1

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- runtime API: errors, devices, memory, streams, events. Plain C, as in the real header:
 * dist/nccl_buf_coll.c and tests/emu/emu_nccl_comm.c are C files that include it. ---- */
#ifdef __cplusplus
#define EMU_DEFAULT_ARG(v) = v
extern "C" {
#else
#define EMU_DEFAULT_ARG(v)
#endif
typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevice = 101,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorIllegalState = 401,
    cudaErrorNotReady = 600, /* never returned: work is done when its call returns */
    cudaErrorStreamCaptureUnsupported = 900,
    cudaErrorStreamCaptureInvalidated = 901,
    cudaErrorStreamCaptureUnmatched = 903,
    cudaErrorStreamCaptureUnjoined = 904,
    cudaErrorStreamCaptureIsolation = 905,
    cudaErrorCapturedEvent = 907,
} cudaError_t;
const char *cudaGetErrorString(cudaError_t e);
const char *cudaGetErrorName(cudaError_t e);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);

/* DT_EMU_DEVICES (default 1, at most 64) emulated devices, all alike: one per rank when
 * several ranks share a host (the rank binds the device of its local rank). */
typedef struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem, sharedMemPerBlock, sharedMemPerBlockOptin;
    int major, minor, multiProcessorCount, warpSize, maxThreadsPerBlock;
    int maxGridSize[3];
} cudaDeviceProp;
cudaError_t cudaGetDeviceCount(int *count);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int *device);
cudaError_t cudaDeviceSynchronize(void);
/* free = the device's 80 GiB less the live cudaMalloc bytes (no context or library overhead). */
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);

/* Streams and events (emu_streams.cpp): see "Streams" above for what they order. */
typedef struct emu_stream *cudaStream_t;
typedef struct emu_event *cudaEvent_t;
#define cudaStreamDefault 0x0u
#define cudaStreamNonBlocking 0x1u
#define cudaEventDefault 0x0u
#define cudaEventDisableTiming 0x2u
cudaError_t cudaStreamCreate(cudaStream_t *stream);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaStreamQuery(cudaStream_t stream);
cudaError_t cudaEventCreate(cudaEvent_t *event);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream EMU_DEFAULT_ARG(0));
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventQuery(cudaEvent_t event);
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event,
                                unsigned flags EMU_DEFAULT_ARG(0));

typedef enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
} cudaMemcpyKind;
cudaError_t emu_malloc(void **p, size_t bytes);
cudaError_t cudaFree(void *p);
/* Stream-ordered free: as cudaFree (which synchronises the device). */
cudaError_t cudaFreeAsync(void *p, cudaStream_t stream);
/* Page-locked host memory: plain host memory here, but cudaFreeHost accepts only pointers that
 * cudaMallocHost returned (and not yet freed), and never device memory. */
cudaError_t cudaMallocHost(void **p, size_t bytes);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMemset(void *p, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes,
                            cudaStream_t stream EMU_DEFAULT_ARG(0));
cudaError_t cudaMemset2DAsync(void *p, size_t pitch, int value, size_t width, size_t height,
                              cudaStream_t stream EMU_DEFAULT_ARG(0));
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream EMU_DEFAULT_ARG(0));
/* 1 when [p, p + bytes) lies inside one live cudaMalloc allocation (for the cuBLAS shim). */
int emu_device_range(const void *p, size_t bytes);
/* For the emulator's stand-ins of libraries that work on a stream (cuBLAS, NCCL): one operation
 * on `stream` that reads (write 0) or writes [p, p + bytes) of device memory, checked against
 * the work of the other streams as a kernel's arguments are (see "Streams"). Returns
 * cudaErrorInvalidResourceHandle for a stream that does not exist and cudaErrorInvalidValue
 * for a range outside one live allocation (both reported). `what` names the operation in
 * reports; call emu_stream_op first, then emu_stream_access per buffer. */
cudaError_t emu_stream_op(cudaStream_t stream, const char *what);
cudaError_t emu_stream_access(const void *p, size_t bytes, int write);

/* Graphs by stream capture (emu_graph.cpp), one capture at a time: between
 * cudaStreamBeginCapture and cudaStreamEndCapture the kernel launches, asynchronous copies and
 * memsets, cuBLAS and NCCL calls issued on a capturing stream run nothing and are recorded
 * instead. A stream joins the capture by waiting for an event recorded on a capturing stream
 * (a fork), and every stream that joined must be joined back (the origin waits for an event
 * recorded after its last work) before the capture ends, else cudaErrorStreamCaptureUnjoined;
 * a capturing stream that waits for an event recorded outside the capture invalidates it
 * (cudaErrorStreamCaptureIsolation), and an event last recorded in a capture that has ended
 * cannot be waited for (cudaErrorCapturedEvent). cudaGraphLaunch issues the recorded work
 * again, in its order, the origin's on the launch's stream and each joined stream's on a stream
 * of the instantiated graph, with the recorded event records and waits between them (where the
 * stream order is checked as for any work). A call that would wait for the device or change
 * the memory map while a capture is active (a synchronisation, a synchronous copy, cudaMalloc,
 * cudaFree and their host and asynchronous kinds, cudaEventQuery, work on the legacy default
 * stream) fails with cudaErrorStreamCaptureUnsupported and invalidates the capture, as CUDA's
 * global capture mode does. */
typedef enum cudaStreamCaptureMode {
    cudaStreamCaptureModeGlobal = 0,
    cudaStreamCaptureModeThreadLocal = 1,
    cudaStreamCaptureModeRelaxed = 2,
} cudaStreamCaptureMode;
typedef enum cudaStreamCaptureStatus {
    cudaStreamCaptureStatusNone = 0,
    cudaStreamCaptureStatusActive = 1,
    cudaStreamCaptureStatusInvalidated = 2,
} cudaStreamCaptureStatus;
typedef struct emu_graph *cudaGraph_t;
typedef struct emu_graph_exec *cudaGraphExec_t;
cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph);
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus *status);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph,
                                 unsigned long long flags EMU_DEFAULT_ARG(0));
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
/* 1 while work issued on `stream` is being recorded (the emulator's stand-ins ask first). */
int emu_capturing(cudaStream_t stream);
/* A library stand-in's call issued on the capturing `stream` (emu_capturing): recorded; each
 * launch of the graph calls run(arg, on), `on` the stream that replays `stream`'s work, and
 * release(arg) runs when no graph holds the call any more. */
void emu_capture_call(cudaStream_t stream, const char *what,
                      void (*run)(void *arg, cudaStream_t on), void *arg,
                      void (*release)(void *arg));
/* In a call CUDA refuses during an active capture: 1 (the capture is invalidated, the error
 * recorded and reported with `what`), else 0. */
int emu_capture_refuses(const char *what);

#ifdef __cplusplus
} /* extern "C" */
template <typename T> static inline cudaError_t cudaMalloc(T **p, size_t bytes) {
    return emu_malloc((void **)p, bytes);
}
/* Stream-ordered allocation: as cudaMalloc (every call completes at once). */
template <typename T> static inline cudaError_t cudaMallocAsync(T **p, size_t bytes, cudaStream_t) {
    return emu_malloc((void **)p, bytes);
}
#else
static inline cudaError_t cudaMalloc(void **p, size_t bytes) { return emu_malloc(p, bytes); }
#endif

#ifdef __cplusplus
#include <functional>
#include <tuple>
#include <type_traits>

/* ---- CUDA C++ keywords ---- */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __grid_constant__ /* a kernel's parameters are the launch's own copies here */

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
    dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};

/* The vector types the kernels load and store through, with the sizes and alignment of CUDA's
 * vector_types.h. */
struct __align__(8) float2 {
    float x, y;
};
struct __align__(16) float4 {
    float x, y, z, w;
};
struct __align__(8) uint2 {
    unsigned x, y;
};
struct __align__(16) uint4 {
    unsigned x, y, z, w;
};
static inline float2 make_float2(float x, float y) { return {x, y}; }
static inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
static inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
static inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) {
    return {x, y, z, w};
}

/* Set by the scheduler before it resumes a thread's fiber. */
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
static const int warpSize = 32;

/* CUDA's integer min/max overloads (host C++ has none in the global namespace). */
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline unsigned long long min(unsigned long long a, unsigned long long b) {
    return a < b ? a : b;
}
static inline unsigned long long max(unsigned long long a, unsigned long long b) {
    return a > b ? a : b;
}

/* Round-to-nearest intrinsics: each is one IEEE operation; the empty asm keeps the compiler
 * from fusing the product into a later addition (an FMA), as nvcc never fuses these. */
static inline float emu_opaque(float r) {
    __asm__("" : "+x"(r));
    return r;
}
static inline float __fmul_rn(float a, float b) { return emu_opaque(a * b); }
static inline float __fadd_rn(float a, float b) { return emu_opaque(a + b); }
static inline float __fsub_rn(float a, float b) { return emu_opaque(a - b); }
static inline float __fdiv_rn(float a, float b) { return emu_opaque(a / b); }
static inline float __fsqrt_rn(float a) { return emu_opaque(sqrtf(a)); }
static inline float __fmaf_rn(float a, float b, float c) { return emu_opaque(fmaf(a, b, c)); }

/* ---- barriers and warp shuffles (emu_rt.cpp); the call site identifies the barrier ---- */
void emu_syncthreads(const char *file, int line);
static inline void __syncthreads(const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    emu_syncthreads(file, line);
}
enum { EMU_SHFL_IDX, EMU_SHFL_XOR, EMU_SHFL_DOWN, EMU_SHFL_UP, EMU_COLLECTIVE };
unsigned long long emu_shfl(unsigned long long bits, unsigned mask, int kind, int arg, int width,
                            const char *file, int line);
template <typename T>
static inline T emu_shfl_t(T v, unsigned mask, int kind, int arg, int width, const char *file,
                           int line) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of this type");
    unsigned long long bits = 0;
    memcpy(&bits, &v, sizeof v);
    bits = emu_shfl(bits, mask, kind, arg, width, file, line);
    T out;
    memcpy(&out, &bits, sizeof out);
    return out;
}
template <typename T>
static inline T __shfl_sync(unsigned mask, T v, int src, int width = 32,
                            const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    return emu_shfl_t(v, mask, EMU_SHFL_IDX, src, width, file, line);
}
template <typename T>
static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32,
                                const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    return emu_shfl_t(v, mask, EMU_SHFL_XOR, lane_mask, width, file, line);
}
template <typename T>
static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32,
                                 const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    return emu_shfl_t(v, mask, EMU_SHFL_DOWN, (int)delta, width, file, line);
}
template <typename T>
static inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32,
                               const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    return emu_shfl_t(v, mask, EMU_SHFL_UP, (int)delta, width, file, line);
}

/* ---- warp votes: all 32 lanes at one call site with the full mask (a partial mask aborts) ---- */
unsigned emu_ballot(unsigned mask, int pred, const char *file, int line);
static inline unsigned __ballot_sync(unsigned mask, int pred,
                                     const char *file = __builtin_FILE(),
                                     int line = __builtin_LINE()) {
    return emu_ballot(mask, pred, file, line);
}
static inline int __all_sync(unsigned mask, int pred, const char *file = __builtin_FILE(),
                             int line = __builtin_LINE()) {
    return emu_ballot(mask, pred, file, line) == 0xffffffffu;
}
static inline int __any_sync(unsigned mask, int pred, const char *file = __builtin_FILE(),
                             int line = __builtin_LINE()) {
    return emu_ballot(mask, pred, file, line) != 0u;
}
/* the number of bits set (a lane's own computation: no warp collective) */
static inline int __popc(unsigned x) { return __builtin_popcount(x); }

/* a warp barrier: all 32 lanes meet there (a vote whose result is dropped) */
static inline void __syncwarp(unsigned mask = 0xffffffffu, const char *file = __builtin_FILE(),
                              int line = __builtin_LINE()) {
    (void)emu_ballot(mask, 0, file, line);
}

/* ---- shared-memory barriers with transaction counts (mbarrier) and the bulk copies that
 * complete on them (emu_rt.cpp; model/cuda/mbarrier.cuh documents them and calls these). A
 * barrier must be initialised (in shared memory, 8-byte aligned) before any other use, and a
 * bulk or TMA copy may complete on it only once its initialising thread has fenced
 * (emu_mbar_init_fence: fence.mbarrier_init, or fence.proxy.async; else abort). A phase
 * completes when all its arrivals are in and the bytes it expects have landed. The bulk copies
 * land, like cp.async copies, at the two ends of what a GPU allows: when issued under the
 * in-order schedule (so a stage refilled while something still reads it is overwritten at
 * once), and under the adversarial one only when the phase's arrivals are in and a warp waits
 * for it (so a thread that reads their destination without waiting for the phase reads what was
 * there before). A wait is warp-uniform: all 32 lanes at one call site,
 * on one barrier and parity; a wait that can never complete (every other thread waits at
 * __syncthreads or has exited) aborts, as does a block that ends with copies still in flight. */
void emu_mbar_init(void *bar, unsigned count, const char *file, int line);
void emu_mbar_init_fence(const char *file, int line);
void emu_mbar_arrive(void *bar, unsigned expect_tx, const char *file, int line);
void emu_mbar_expect_tx(void *bar, unsigned bytes, const char *file, int line);
void emu_mbar_wait(const void *bar, unsigned parity, const char *file, int line);
void emu_bulk_copy(void *dst, const void *src, unsigned bytes, void *bar, const char *file,
                   int line);
/* Named barriers (model/cuda/warp_roles.cuh): bar.sync (sync 1) or bar.arrive (0) on barrier id
 * (1 to 15) of count threads (a multiple of 32), warp by warp: all 32 lanes of a warp at one
 * call site; a phase completes with count / 32 warp arrivals, and a syncing warp waits for the
 * phase it arrived in. A phase still holding arrivals when the block ends aborts, as does a
 * wait that can never complete. setmaxnreg.inc / .dec (regs: 24 to 256, a multiple of 8): a
 * warpgroup collective that moves no registers here but counts them: each warpgroup starts
 * with 65,536 / threads a thread (rounded down to 8: what ptxas gives a kernel launched at one
 * block per SM), an .inc may only raise its count and a .dec only lower it, and a block whose
 * warpgroups end holding more than that pool aborts (on a GPU its last .inc waits for ever). */
void emu_named_barrier(int id, unsigned count, int sync, const char *file, int line);
void emu_setmaxnreg(unsigned regs, int inc, const char *file, int line);
/* Tensor maps and the TMA loads that complete on an mbarrier (emu_tma.cpp; model/cuda/tma.cuh
 * documents them and calls these). emu_tma_encode stores, in the 128 bytes of map, a tiled map
 * of a tensor of `rank` (1 to 5) dimensions of elem_bytes-byte elements at base: dims (innermost
 * first), the byte strides of dimensions 1.. (rank - 1 of them), the box; swizzle 0, 32, 64 or
 * 128 (bytes). It returns 0, or -1 with the reason in why: what cuTensorMapEncodeTiled refuses,
 * and a swizzled box whose rows are not exactly the swizzle's width (not emulated).
 * emu_tma_load copies the box at coords (one per dimension, in elements, negative or past the
 * end allowed: those elements are zeros) into shared memory at dst, row after row of the box,
 * each 16-byte chunk at the address the swizzle gives (bits 4.. of the shared-window address
 * XOR bits 7..), as a bulk copy of the box's bytes on bar (landing when a bulk copy would).
 * dst must be 128-byte aligned in the shared window, and (swizzled) aligned to the swizzle's
 * repeat, 8 times its width. */
int emu_tma_encode(void *map, const void *base, int rank, int elem_bytes, const uint64_t *dims,
                   const uint64_t *strides, const uint32_t *box, int swizzle, char *why, int len);
void emu_tma_load(void *dst, const void *map, int rank, const int *coords, void *bar,
                  const char *file, int line);

/* ---- cp.async (emu_rt.cpp; model/cuda/cp_async.cuh documents the instructions and calls
 * these) ----
 * emu_cp_async copies 16 bytes of src (src_bytes of them, 0 or 16, the rest zero-filled) to
 * dst in shared memory: at once under the in-order schedule; under the adversarial one
 * (emu_schedule_adversarial) it reads src at once but the bytes land in dst only when the
 * issuing thread's emu_cp_async_wait retires the copy's committed group (the latest moment a
 * kernel may count on) or emu_cp_async_flush runs (cp.async.mbarrier.arrive: every copy the
 * thread issued). emu_cp_async_commit closes the thread's group; emu_cp_async_wait(n) waits
 * until at most n of its committed groups are pending (cp.async.wait_group n). */
void emu_cp_async(void *dst, const void *src, int src_bytes);
void emu_cp_async_commit(void);
void emu_cp_async_wait(int n);
void emu_cp_async_flush(void);
/* The GPU whose limits the emulated devices have from now on: key "h100", "a100" or "l40s"
 * (DT_EMU_GPU, above), or NULL for the environment's choice; for the emulator's self-tests. */
void emu_set_gpu(const char *key);
/* 1 under the adversarial schedule: DT_EMU_SCHEDULE=adversarial (read at the first launch;
 * "in-order" or unset: the default), or after emu_set_schedule(1). Then each barrier phase runs
 * the warps of a block last to first instead of first to last, and cp.async and bulk copies
 * land late (above; in order they land when issued): a kernel whose result depends on the order
 * of warps within a phase (a read of another warp's write without a barrier between, or a write
 * over what another warp still reads) or that reads a staged tile before its wait and barrier
 * computes differently under one of the two schedules. emu_set_schedule(-1) goes back to the
 * environment's choice (read again). */
int emu_schedule_adversarial(void);
void emu_set_schedule(int adversarial);

/* ---- warp-collective instructions (emu_rt.cpp schedules, emu_mma.cpp computes) ----
 * A collective is reached by all 32 lanes of a warp at one call site, like a full-mask shuffle
 * (the same checks: partial warps, divergent lanes and different call sites abort). Each lane
 * passes a pointer to its own operands and results; once the whole warp waits there, `op` runs
 * once with the 32 lanes' pointers (lanes[l] of lane l) and the lanes go on. */
void emu_warp_collective(void (*op)(void *const *lanes), void *mine, const char *file, int line);
/* mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 d, a, b, d (C = D: accumulates in place)
 * and ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16, with the PTX ISA's fragment layouts
 * (model/cuda/mma.cuh documents them and calls these under DT_CUDA_EMULATOR). ldmatrix checks
 * that every row address is 16-byte aligned and lies in the block's shared memory. */
void emu_mma_bf16_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2], const char *file,
                           int line);
void emu_ldmatrix_x4(uint32_t r[4], const void *row, int trans, const char *file, int line);
/* 1 when [p, p + bytes) lies in the running block's static or dynamic shared memory. */
int emu_shared_range(const void *p, size_t bytes);

/* ---- warpgroup matrix products (emu_wgmma.cpp; model/cuda/wgmma.cuh documents them and calls
 * these under DT_CUDA_EMULATOR) ----
 * The 32-bit shared-window address of p, as __cvta_generic_to_shared gives it: p must lie in
 * the running block's static or dynamic shared memory (else the process aborts); every address
 * is below 2^18, as a wgmma descriptor needs, and keeps p's offset mod 16. */
uint32_t emu_shared_address(const void *p);
/* wgmma.mma_async.sync.aligned.m64nNk16.f32.bf16.bf16 of the calling thread's warpgroup (the
 * 128 threads of warps 4w..4w+3 reach it together, a warpgroup collective): D (64 x n) =
 * A (64 x 16) B (16 x n) + (accumulate ? D : 0), where d is this thread's n/2 accumulators, a
 * its 4 registers of A (NULL: A in shared memory, named by desc_a, K-major (trans_a 0) or
 * M-major (1)) and desc_b names B (K-major (trans_b 0) or N-major (1)). Queued, and performed
 * by the wgmma_wait that retires its group; the warpgroup must have executed wgmma_fence since
 * the block started or since its last wgmma_wait. */
void emu_wgmma_bf16(float *d, int n, const uint32_t *a, uint64_t desc_a, uint64_t desc_b,
                    int trans_a, int trans_b, int accumulate, const char *file, int line);
/* wgmma.fence, wgmma.commit_group (closes the products queued since the last commit into a
 * group) and wgmma.wait_group n (performs the oldest committed groups until at most n remain):
 * warpgroup collectives. */
void emu_wgmma_fence(const char *file, int line);
void emu_wgmma_commit(const char *file, int line);
void emu_wgmma_wait(int n, const char *file, int line);
/* fence.proxy.async.shared::cta (emu_proxy.cpp): what the threads of the block wrote to shared
 * memory becomes visible to the wgmma products and the asynchronous copies. */
void emu_proxy_fence(const char *file, int line);

/* ---- shared memory (transform.py rewrites the declarations into these) ---- */
/* `extern __shared__ T name[];` -> `EMU_DYN_SHARED(T, name);`: the launch's dynamic area. */
extern unsigned char *emu_dyn_smem;
#define EMU_DYN_SHARED(T, name) T *name = (T *)emu_dyn_smem
/* `__shared__ T name[dims];` -> `EMU_SHARED(T, name, [dims]);`: one instance per block, placed
 * in the block's static arena by the first thread that reaches the declaration. */
struct emu_shared_site {
    unsigned long long block_serial;
    size_t offset;
};
void *emu_static_smem(emu_shared_site *site, size_t bytes, size_t align, const char *name);
#define EMU_SHARED(T, name, dims)                                                                  \
    typedef T name##_emu_type dims;                                                                \
    static emu_shared_site name##_emu_site;                                                        \
    name##_emu_type &name = *(name##_emu_type *)emu_static_smem(                                   \
        &name##_emu_site, sizeof(name##_emu_type), alignof(name##_emu_type), #name)

enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
cudaError_t emu_func_set_attribute(const void *kernel, cudaFuncAttribute attr, int value);
template <typename K>
static inline cudaError_t cudaFuncSetAttribute(K *kernel, cudaFuncAttribute attr, int value) {
    return emu_func_set_attribute(reinterpret_cast<const void *>(kernel), attr, value);
}

/* ---- kernel launches: transform.py rewrites kernel<<<grid, block, smem, stream>>>(args) into
 * emu_launch(kernel, "kernel", dim3(grid), dim3(block), smem, stream,
 *            typename emu_kernel_args<decltype(kernel)>::type(args)),
 * which converts the arguments to the parameter types once (as a launch does) and runs every
 * thread of the grid on a copy of them. ---- */
template <typename F> struct emu_kernel_args;
template <typename... P> struct emu_kernel_args<void(P...)> { typedef std::tuple<P...> type; };
/* a launch through a pointer to a (template) kernel: `auto kern = k<T>; kern<<<...>>>(...)` */
template <typename... P> struct emu_kernel_args<void (*)(P...)> {
    typedef std::tuple<P...> type;
};
struct emu_launch_cfg {
    const void *kernel;
    const char *name;
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
};
/* Validates the configuration (false: the launch error is recorded and nothing runs); a valid
 * launch is one operation on its stream. */
bool emu_launch_check(const emu_launch_cfg &c);
/* Reports a non-null pointer argument that is not inside a device allocation, and records the
 * launch's access to the `bytes` it points at: a write through a pointer to non-const, a read
 * through a pointer to const (the emulator cannot know how far from p a kernel reaches). */
void emu_check_pointer_arg(const emu_launch_cfg &c, int index, const void *p, size_t bytes,
                           bool write);
/* Runs every block of the grid; each thread calls thunk(ctx). */
void emu_run_grid(const emu_launch_cfg &c, void (*thunk)(const void *), const void *ctx);

template <typename A> static inline void emu_check_arg(const emu_launch_cfg &, int, const A &) {}
template <typename A> struct emu_pointee_size {
    static const size_t value = sizeof(A);
};
template <> struct emu_pointee_size<void> {
    static const size_t value = 1;
};
template <> struct emu_pointee_size<const void> {
    static const size_t value = 1;
};
template <typename A>
static inline void emu_check_arg(const emu_launch_cfg &c, int index, A *const &p) {
    emu_check_pointer_arg(c, index, (const void *)p, emu_pointee_size<A>::value,
                          !std::is_const<A>::value);
}
/* Records an operation issued on the capturing stream s (emu_graph.cpp): op issues it again,
 * on the stream that replays s's work at a launch of the graph. */
void emu_capture_add(cudaStream_t s, const char *what, std::function<void(cudaStream_t)> op);

template <typename... P> struct emu_call {
    void (*kernel)(P...);
    const std::tuple<P...> *args;
};
template <typename... P> static void emu_thunk(const void *ctx) {
    const emu_call<P...> *call = (const emu_call<P...> *)ctx;
    std::apply(call->kernel, *call->args);
}
template <typename... P>
static inline void emu_launch(void (*kernel)(P...), const char *name, dim3 grid, dim3 block,
                              size_t smem, cudaStream_t stream,
                              const typename emu_kernel_args<void(P...)>::type &args) {
    if (emu_capturing(stream)) { /* recorded: the graph's launch issues it again */
        emu_capture_add(stream, name, [=](cudaStream_t on) {
            emu_launch(kernel, name, grid, block, smem, on, args);
        });
        return;
    }
    const emu_launch_cfg c = {
        reinterpret_cast<const void *>(kernel), name, grid, block, smem, stream};
    if (!emu_launch_check(c)) return;
    int index = 0;
    std::apply([&](const auto &...a) { (emu_check_arg(c, index++, a), ...); }, args);
    const emu_call<P...> call = {kernel, &args};
    emu_run_grid(c, emu_thunk<P...>, &call);
}

#endif /* __cplusplus */

#endif
