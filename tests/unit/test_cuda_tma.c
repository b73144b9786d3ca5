/* TMA loads (model/cuda/tma.cuh), the swizzled wgmma layouts that read them (wgmma.cuh) and the
 * warp roles of an FA3-style kernel (warp_roles.cuh) on the device, through the kernels of
 * model/cuda/tma_test.h, against references computed here:
 *   - layouts: the raw shared-memory image of one box of a 2-d or 3-d tensor, for each swizzle
 *     (none, 32, 64, 128 bytes), inside the tensor and reaching past its start and its end (those
 *     elements zero), against this file's own model of the layout: element L of the box (row
 *     after row) at byte 2 L, its 16-byte chunk moved by bits 7.. of that byte offset;
 *   - products: a (64 x 64) b with A and B loaded by TMA under each swizzle, B K-major and
 *     N-major, N 64 and 128, by wgmma on the swizzled descriptors;
 *   - the pipeline: a producer warpgroup feeding a ring of 1 to 4 stages by TMA, two consumer
 *     warpgroups taking turns through named barriers after setmaxnreg, 1 to 16 k tiles.
 * The values are small integers: every product is exact. This is the check that the emulator's
 * TMA, swizzles and named barriers (tests/emu/emu_tma.cpp, emu_wgmma.cpp, emu_rt.cpp) behave as
 * the hardware's. Exits 77 (skipped) without a device, on a device other than compute
 * capability 9.0 and in a build without sm_90a device code. Under the host emulator
 * (emu_test_cuda_tma) it runs in full. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cuda_test_util.h"
#include "model/cuda/tma_test.h"

/* the bf16 bits of a small integer (exact) */
static uint16_t bf16_of(int v) {
    const float f = (float)v;
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (uint16_t)(u >> 16);
}

static int small(size_t i, int salt) { return (int)((i * 7919u + (size_t)salt * 104729u) % 9) - 4; }

/* Loads the box at coords and checks every byte of its image. Returns the wrong elements. */
static int check_layout(int rank, const uint64_t *dims, const uint32_t *box, const int *coords,
                        int swizzle) {
    size_t n = 1, elems = 1;
    for (int i = 0; i < rank; i++) {
        n *= dims[i];
        elems *= box[i];
    }
    uint16_t *in = malloc(n * sizeof *in), *out = malloc(elems * sizeof *out);
    assert_true(in && out);
    for (size_t i = 0; i < n; i++) in[i] = (uint16_t)(i * 40503u + 17u); /* distinct bits */
    assert_int_equal(cuda_tma_test_layout(out, in, rank, dims, box, coords, swizzle), 0);
    int bad = 0;
    const unsigned mask = swizzle ? (unsigned)swizzle / 16u - 1u : 0u;
    for (size_t e = 0; e < elems; e++) {
        size_t rest = e, src = 0, stride = 1;
        int inside = 1;
        for (int i = 0; i < rank; i++) {
            const long long x = coords[i] + (long long)(rest % box[i]);
            rest /= box[i];
            inside = inside && x >= 0 && (uint64_t)x < dims[i];
            src += (size_t)(x < 0 ? 0 : x) * stride;
            stride *= dims[i];
        }
        const unsigned byte = 2u * (unsigned)e, at = byte ^ (((byte >> 7) & mask) << 4);
        const uint16_t want = inside ? in[src] : 0;
        if (out[at / 2] != want && bad++ < 4)
            printf("  swizzle %d, box element %zu: 0x%04x at byte %u, expected 0x%04x\n",
                   swizzle, e, out[at / 2], at, want);
    }
    free(in);
    free(out);
    return bad;
}

static void test_layouts(void **state) {
    (void)state;
    int runs = 0, failed = 0;
    for (int swizzle = 0; swizzle <= 128; swizzle = swizzle ? 2 * swizzle : 32) {
        const uint32_t w = swizzle ? (uint32_t)swizzle / 2 : 24; /* box row: the swizzle's width */
        const uint64_t dims2[2] = {3 * w + 8, 40};
        const uint32_t box2[2] = {w, 24};
        const int at2[][2] = {{0, 0}, {w + 8, 5}, {-8, -3}, {2 * w + 8, 30}, {-(int)w, 40}};
        for (size_t c = 0; c < sizeof at2 / sizeof at2[0]; c++, runs++) {
            const int bad = check_layout(2, dims2, box2, at2[c], swizzle);
            if (bad) printf("FAIL 2-d box at (%d, %d): %d wrong\n", at2[c][0], at2[c][1], bad);
            failed += bad != 0;
        }
        const uint64_t dims3[3] = {2 * w, 11, 3};
        const uint32_t box3[3] = {w, 6, 2};
        const int at3[][3] = {{w, 2, 0}, {0, 8, 2}, {w, -2, -1}};
        for (size_t c = 0; c < sizeof at3 / sizeof at3[0]; c++, runs++) {
            const int bad = check_layout(3, dims3, box3, at3[c], swizzle);
            if (bad)
                printf("FAIL 3-d box at (%d, %d, %d): %d wrong\n", at3[c][0], at3[c][1],
                       at3[c][2], bad);
            failed += bad != 0;
        }
    }
    printf("TMA layouts: %d of %d boxes wrong\n", failed, runs);
    assert_int_equal(failed, 0);
}

static void test_products(void **state) {
    (void)state;
    uint16_t a[64 * 64], b[64 * 128], bt[128 * 64];
    int av[64 * 64], bv[64 * 128];
    float d[64 * 128];
    for (int i = 0; i < 64 * 64; i++) a[i] = bf16_of(av[i] = small((size_t)i, 1));
    for (int i = 0; i < 64 * 128; i++) bv[i] = small((size_t)i, 2);
    int runs = 0, failed = 0;
    for (int n = 64; n <= 128; n += 64) {
        for (int k = 0; k < 64; k++)
            for (int j = 0; j < n; j++) {
                b[k * n + j] = bf16_of(bv[k * n + j]);
                bt[j * 64 + k] = b[k * n + j];
            }
        for (int swizzle = 32; swizzle <= 128; swizzle *= 2)
            for (int trans_b = 0; trans_b <= 1; trans_b++, runs++) {
                memset(d, 0, sizeof d);
                assert_int_equal(cuda_tma_test_product(d, a, bt, b, n, swizzle, trans_b), 0);
                int bad = 0;
                for (int i = 0; i < 64; i++)
                    for (int j = 0; j < n; j++) {
                        int want = 0;
                        for (int k = 0; k < 64; k++) want += av[i * 64 + k] * bv[k * n + j];
                        bad += d[i * n + j] != (float)want;
                    }
                if (bad)
                    printf("FAIL product n %d, swizzle %d, B %s-major: %d of %d wrong\n", n,
                           swizzle, trans_b ? "N" : "K", bad, 64 * n);
                failed += bad != 0;
            }
    }
    printf("swizzled wgmma products: %d of %d wrong\n", failed, runs);
    assert_int_equal(failed, 0);
}

static void test_pipeline(void **state) {
    (void)state;
    enum { MAX_K = 64 * 16 };
    uint16_t *a = malloc(sizeof *a * 128 * MAX_K), *bt = malloc(sizeof *bt * 64 * MAX_K);
    int *av = malloc(sizeof *av * 128 * MAX_K), *bv = malloc(sizeof *bv * 64 * MAX_K);
    float *d = malloc(sizeof *d * 128 * 64);
    assert_true(a && bt && av && bv && d);
    const int tiles[] = {1, 2, 5, 16};
    int runs = 0, failed = 0;
    for (size_t ti = 0; ti < sizeof tiles / sizeof tiles[0]; ti++) {
        const int k = 64 * tiles[ti];
        for (int i = 0; i < 128 * k; i++) a[i] = bf16_of(av[i] = small((size_t)i, 3));
        for (int i = 0; i < 64 * k; i++) bt[i] = bf16_of(bv[i] = small((size_t)i, 4));
        for (int stages = 1; stages <= 4; stages++, runs++) {
            memset(d, 0, sizeof *d * 128 * 64);
            assert_int_equal(cuda_tma_test_pipeline(d, a, bt, tiles[ti], stages), 0);
            int bad = 0;
            for (int i = 0; i < 128; i++)
                for (int j = 0; j < 64; j++) {
                    int want = 0;
                    for (int kk = 0; kk < k; kk++) want += av[i * k + kk] * bv[j * k + kk];
                    bad += d[i * 64 + j] != (float)want;
                }
            if (bad)
                printf("FAIL pipeline, %d k tiles, %d stages: %d of %d wrong\n", tiles[ti],
                       stages, bad, 128 * 64);
            failed += bad != 0;
        }
    }
    printf("warp-specialised pipeline: %d of %d runs wrong\n", failed, runs);
    assert_int_equal(failed, 0);
    free(a);
    free(bt);
    free(av);
    free(bv);
    free(d);
}

int main(void) {
    cut_require_support(cuda_tma_test_supported, "TMA and warp roles");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layouts),
        cmocka_unit_test(test_products),
        cmocka_unit_test(test_pipeline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
