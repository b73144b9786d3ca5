/* A test-only switch of the fused attention ops (flash.h), not for the backend. */
#ifndef DT_CUDA_FLASH_TEST_H
#define DT_CUDA_FLASH_TEST_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* on != 0: the ops run the kernels' fp32-input instances (Tin = float: plain loads, each tile
 * rounded to bf16 in registers as it is staged, synchronously) on fp32 tensors: the bf16 q, k, v
 * widened (exactly) into fp32 copies, and the fp32 output gradient (dout, or DIFF's G stored as
 * rounded floats) as it is; 0 (the default): the production path, whose kernels stage bf16
 * tensors with cp.async (q, k, v as they are, the bf16 copy of dout, DIFF's bf16 G). The widened
 * values round back to the same bf16, so the two must give the same bits (test_cuda_flash): a
 * check of the asynchronous staging pipeline against plain loads. Not thread safe; set it
 * between ops. */
void cuda_flash_test_f32_staging(int on);

/* Which kernels the bf16 ops run where the build has sm_90a code and the device is compute
 * capability 9.0: mode 1 the sm_90 wgmma ones (flash_forward_sm90.cu, flash_backward_sm90.cu),
 * 0 the mma.sync ones, -1 (the default) as the environment says (DIFFTRAIN_FLASH_SM90=1: wgmma;
 * else mma.sync). Elsewhere the mma.sync kernels run whatever the mode. Lets a test or benchmark
 * compare the two on one device. Not thread safe; set it between ops. */
void cuda_flash_test_sm90(int mode);
/* 1 where the build and device have the sm_90 wgmma kernels (whether they run or not) */
int cuda_flash_sm90_capable(void);
/* 1 when the bf16 ops would run the sm_90 wgmma kernels now */
int cuda_flash_sm90(void);

/* Which kernel runs the bf16 forward where the build and device have the sm_90 kernels
 * (cuda_flash_sm90_capable) and its block fits the shared memory: mode 1 the warp-specialised
 * one (flash_forward_tma.cu: TMA loads, two consumer warpgroups, DIFF V1's two branches or 128
 * rows of a standard head; the bits of the wgmma forward), 0 the others (the wgmma or mma.sync
 * ones, as cuda_flash_test_sm90 says), -1 (the default) as the environment says
 * (DIFFTRAIN_FLASH_TMA=1: the warp-specialised one; else not). The backward is not affected.
 * Not thread safe; set it between ops. */
void cuda_flash_test_tma(int mode);
/* 1 when the bf16 forward of head dim d (DIFF V1's when diff) would run the warp-specialised
 * kernel now */
int cuda_flash_tma(int d, int diff);

/* Which kernel computes dk and dv in the bf16 backward on the mma.sync kernels where the build
 * and device have the sm_90 kernels (cuda_flash_sm90_capable) and its block fits the shared
 * memory: mode 1 the warp-specialised one (TMA loads, two consumer warpgroups; the bits of the
 * mma.sync one, stored dS tiles included): for DIFF V1 with both branches of a head paired
 * (cuda_flash_test_diff_paired) flash_dkdv_diff_tma.cu's, a branch a warpgroup, and for standard
 * heads (the baseline, DIFF V2) flash_dkdv_tma.cu's, a key tile a warpgroup; 0 the mma.sync one;
 * -1 (the default) as the environment says (DIFFTRAIN_FLASH_TMA_BWD=1: the warp-specialised
 * one; else not). Not thread safe; set it between ops. */
void cuda_flash_test_tma_bwd(int mode);
/* 1 when the bf16 backward of head dim d (DIFF V1's where diff) would run the warp-specialised
 * dk/dv now */
int cuda_flash_tma_bwd(int d, int diff);

/* How the mma.sync backward gets dq's dS (the wgmma kernels always recompute it) */
enum {
    FLASH_DQ_RECOMPUTE = 0, /* dq recomputes S and dP (DIFFTRAIN_FLASH_DQ=recompute) */
    FLASH_DQ_STORED = 1,    /* dq reads the dS tiles dk/dv stores (flash_backward.cu; =stored) */
    FLASH_DQ_AUTO = 2       /* the default (=auto): stored where the tiles of an op take at most
                             * FLASH_DQ_AUTO_BYTES of workspace, else recomputed */
};
/* The auto mode's cap on the stored tiles' workspace. Under it dq reads them: 11 to 15% less
 * time for the backward's dq and dk/dv on an H100 (docs/gpu-performance.md); above it, where T
 * grows, the workspace (quadratic in T) would cost more than the time. */
#define FLASH_DQ_AUTO_BYTES ((size_t)2 << 30)
/* mode: a FLASH_DQ_* mode, or -1 (the default) as the environment says (DIFFTRAIN_FLASH_DQ=auto,
 * stored or recompute; unset: auto). Not thread safe; set it between ops. */
void cuda_flash_test_dq_mode(int mode);
/* The auto mode's cap in bytes instead of FLASH_DQ_AUTO_BYTES (0: that default again) */
void cuda_flash_test_dq_auto_bytes(size_t bytes);
/* The FLASH_DQ_* mode the backward ops would take now (FLASH_DQ_RECOMPUTE where the wgmma
 * kernels run) */
int cuda_flash_dq_mode(void);
/* 1 when a backward of B sequences of T tokens over nq q-heads (DIFF V1: 2H) would read stored
 * dS tiles now */
int cuda_flash_dq_stored_at(int B, int T, int nq);

/* How many query rows a warp of the mma.sync forward takes for standard / GQA heads (the
 * baseline, DIFF V2): 32 (flash_forward_rows32.cu: each K and V fragment loaded from shared
 * memory feeds two m16 fragments), 16 (flash_forward.cu), -1 (the default) as the environment
 * says (DIFFTRAIN_FLASH_FWD_ROWS=32 or 16; unset: 32). The two give the same bits. DIFF V1's
 * forward and the wgmma kernels are not affected. Not thread safe; set it between ops. */
void cuda_flash_test_fwd_rows(int rows);
/* The rows a warp the standard forward would take now (16 where the wgmma kernels run): the
 * choice asked for; where its kernel does not fit the device's shared memory for a head dim (32
 * rows at d = 128 on a 99 KiB GPU) that forward runs the 16-row kernel instead */
int cuda_flash_fwd_rows(void);

/* How the mma.sync forward of DIFF V1 shares the work of a row group's two branch warps: mode 1
 * each warp keeps O_1 and O_2 of half of V's 2d columns, the warps handing each other their P
 * through shared memory (flash_forward_diff.cu), 0 each keeps its branch's O over all 2d columns
 * (flash_forward.cu, the kernel the split one replaced), -1 (the default) as the environment
 * says (DIFFTRAIN_FLASH_DIFF_FWD=split or branch; unset: split). The two give the same bits.
 * The wgmma kernels are not affected. Not thread safe; set it between ops. */
void cuda_flash_test_diff_fwd_split(int mode);
/* 1 when DIFF V1's forward would run the split kernel now (0 where the wgmma kernels run; the
 * warp-specialised one, where cuda_flash_tma says, takes precedence over either): the
 * choice asked for; where the split kernel does not fit the device's shared memory for a head
 * dim (an A100 at d = 96 and 128) that forward runs the per-branch kernel instead */
int cuda_flash_diff_fwd_split(void);

/* How the mma.sync backward takes DIFF V1's two branches: on != 0 (the default) both branches of
 * a head per query tile, dP = G V^T once for both: dk/dv with dV from P_1 - lambda P_2
 * (flash_dkdv_diff.cu), and dq where it recomputes dS with dP shared by the branches' warps
 * (flash_dq_diff.cu); 0 each branch with its own dP and dV products (flash_dkdv_kernel,
 * flash_dq_kernel), the kernels the paired ones replaced, kept to compare them (tests,
 * bench_attn). Not thread safe; set it between ops. */
void cuda_flash_test_diff_paired(int on);

/* Caps the shared memory a block may have (bytes; 0: no cap) below the device's own limit, so
 * that the ops choose the kernels and stages a GPU with that much would run (an A100: 166,912;
 * an L40S or RTX 4090: 101,376) and cuda_flash_usable answers as there; the sm_90 kernels run
 * only with the H100's whole 227 KiB. Lets one device check that every choice gives the same
 * bits. Not thread safe; set it between ops. */
void cuda_flash_test_smem_limit(size_t bytes);
/* The shared memory a block may have now: the device's after the opt-in, or the cap if lower */
size_t cuda_flash_smem_limit(void);

#ifdef __cplusplus
}
#endif

#endif
