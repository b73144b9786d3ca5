/* The CUDA device probe: skipped (77) without a device; with one, a kernel must compute. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#include <cmocka.h>

#include "model/cuda/cuda_probe.h"

static void test_every_device_computes(void **state) {
    (void)state;
    int n = cuda_probe_device_count();
    assert_true(n > 0);
    for (int dev = 0; dev < n; dev++) {
        char name[256];
        assert_int_equal(cuda_probe_describe(dev, name, sizeof name), 0);
        printf("device %d: %s\n", dev, name);
        assert_int_equal(cuda_probe_roundtrip(dev), 0);
    }
}

int main(void) {
    if (cuda_probe_device_count() == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_every_device_computes)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
