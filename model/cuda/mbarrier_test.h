/* Test-only entry points to the mbarrier pipeline of mbarrier.cuh (test_cuda_mbarrier), not for
 * the backend: a producer/consumer ring like a warp-specialised kernel's, whose results a test
 * compares with a host reference on a GPU (and, built against tests/emu, on the emulator). All
 * arrays are host memory. */
#ifndef DT_CUDA_MBARRIER_TEST_H
#define DT_CUDA_MBARRIER_TEST_H

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when the current device can run the kernel below: compute capability 9.0 or later and, in
 * this build, device code for it of sm_90 or later (the bulk copies and transaction counts),
 * which a kernel reports from the device; 1 under the host emulator. Otherwise 0, with the
 * reason in why (len bytes). */
int cuda_mbarrier_test_supported(char *why, int len);

/* How the producer fills a stage (MBAR_TEST_*):
 *   BULK: lane 0 arrives on the stage's full barrier expecting the tile's bytes, then the 32
 *         lanes issue one bulk copy per row (64 rows of 128 bytes);
 *   CP_ASYNC: the 32 lanes copy the tile with 16-byte cp.async and each arrives on the full
 *         barrier once its copies have landed (cp_async_mbar_arrive; count 32);
 *   NO_WAIT: BULK, but the consumers read each stage without waiting for it to be full (a
 *         planted race, never run on a GPU: the emulator, which lands a phase's copies only
 *         when a warp waits for the phase, aborts, the producer's waits falling out of step
 *         or copies left in flight). */
enum { MBAR_TEST_BULK = 0, MBAR_TEST_CP_ASYNC = 1, MBAR_TEST_NO_WAIT = 2 };

/* One block: warp 0 produces, warps 1..4 consume. in: n_tiles tiles of 64 x 32 floats; a ring of
 * `stages` (1 to 4) shared-memory stages with a full and an empty barrier each. Tile t goes
 * into stage t % stages once the consumers have handed that stage back (the empty barrier's
 * phase of round t / stages - 1; count 128: every consumer thread arrives); consumer warp w
 * (0..3) waits for the stage to be full (parity (t / stages) & 1) and sums rows 16w..16w+15 of
 * each column: out[(t * 4 + w) * 32 + lane]. Returns 0, or -1 (nothing run) for other
 * arguments. */
int cuda_mbarrier_test_ring(float *out, const float *in, int n_tiles, int stages, int mode);

#ifdef __cplusplus
}
#endif

#endif
