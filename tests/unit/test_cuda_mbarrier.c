/* The mbarriers and bulk copies of model/cuda/mbarrier.cuh on the device, through the
 * producer/consumer ring of model/cuda/mbarrier_test.h (one producer warp, four consumer warps, a
 * ring of 1 to 4 shared-memory stages with a full and an empty barrier each), against sums
 * computed here: the producer filling each stage with one bulk copy per row (the transaction
 * count of the full barrier) or with 16-byte cp.async and one arrival per lane once its copies
 * have landed; more tiles than stages, so that every stage goes round several times and the
 * phase parities alternate. The inputs are small integers: every sum is exact. This is the check
 * that the emulator's mbarriers (tests/emu/emu_rt.cpp, which emu_selftest runs the same kernel
 * on) behave as the hardware's. Exits 77 (skipped) without a device, on a device older than
 * compute capability 9.0, and in a build without sm_90 device code. Under the host emulator
 * (emu_test_cuda_mbarrier) it runs in full. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "cuda_test_util.h"
#include "model/cuda/mbarrier_test.h"

#define TILE (64 * 32)
#define MAX_TILES 13

static void test_ring(void **state) {
    (void)state;
    float *in = malloc(sizeof(float) * MAX_TILES * TILE);
    float *out = malloc(sizeof(float) * MAX_TILES * 128);
    assert_true(in && out);
    for (int i = 0; i < MAX_TILES * TILE; i++)
        in[i] = (float)((i * 7919) % 13 - 6);
    int runs = 0, failed = 0;
    for (int mode = MBAR_TEST_BULK; mode <= MBAR_TEST_CP_ASYNC; mode++)
        for (int stages = 1; stages <= 4; stages++)
            for (int n = 1; n <= MAX_TILES; n += 3, runs++) {
                assert_int_equal(cuda_mbarrier_test_ring(out, in, n, stages, mode), 0);
                int bad = 0;
                for (int t = 0; t < n; t++)
                    for (int w = 0; w < 4; w++)
                        for (int c = 0; c < 32; c++) {
                            float want = 0.0f;
                            for (int r = 16 * w; r < 16 * w + 16; r++)
                                want += in[(size_t)t * TILE + r * 32 + c];
                            bad += out[(t * 4 + w) * 32 + c] != want;
                        }
                if (bad)
                    printf("FAIL ring %s, %d stages, %d tiles: %d of %d sums wrong\n",
                           mode == MBAR_TEST_BULK ? "bulk copies" : "cp.async", stages, n, bad,
                           n * 128);
                failed += bad != 0;
            }
    printf("mbarrier ring: %d of %d runs wrong\n", failed, runs);
    assert_int_equal(failed, 0);
    free(in);
    free(out);
}

int main(void) {
    cut_require_support(cuda_mbarrier_test_supported, "mbarriers");
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_ring)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
