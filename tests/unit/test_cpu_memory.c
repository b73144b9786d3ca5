/* CPU backend memory functions: zero-filled aligned allocation, allocation failure, copies,
 * overlapping in-backend copies, memset. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cpu_test_util.h"
#include "model/cpu/cpu_ops.h"
#include "testutil.h"
#include "util/alloc.h"

static void test_alloc_zeroed_aligned(void **state) {
    (void)state;
    const size_t sizes[4] = {1, 3, 4096, 1000003};
    for (int k = 0; k < 4; k++) {
        unsigned char *p = cpu_alloc(sizes[k]);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 64, 0);
        for (size_t i = 0; i < sizes[k]; i++) assert_int_equal(p[i], 0);
        cpu_free(p);
    }
    void *z = cpu_alloc(0); /* a valid, freeable pointer */
    assert_non_null(z);
    cpu_free(z);
    cpu_free(NULL);
}

static void test_alloc_failure(void **state) {
    (void)state;
    dt_alloc_fail_after(1);
    void *p = cpu_alloc(128);
    dt_alloc_fail_after(0);
    assert_null(p);
}

static void test_copies(void **state) {
    (void)state;
    enum { N = 1000 };
    float host[N], back[N];
    tu_fill_normal_f(host, N, 95, 1.0);
    float *a = cpu_alloc(N * sizeof(float)), *b = cpu_alloc(N * sizeof(float));
    assert_non_null(a);
    assert_non_null(b);
    cpu_copy_from_host(a, host, N * sizeof(float));
    cpu_copy(b, a, N * sizeof(float));
    cpu_synchronize();
    cpu_copy_to_host(back, b, N * sizeof(float));
    assert_memory_equal(back, host, sizeof host);

    /* overlapping copy within the backend: shift by 10 elements */
    cpu_copy(a + 10, a, (N - 10) * sizeof(float));
    assert_memory_equal(a + 10, host, (N - 10) * sizeof(float));

    cpu_memset_zero(b + 5, 20 * sizeof(float));
    for (int i = 0; i < N; i++) assert_true(b[i] == ((i >= 5 && i < 25) ? 0.0f : host[i]));
    cpu_copy(b, a, 0); /* zero bytes: no-op */
    cpu_copy_to_host(NULL, NULL, 0);
    cpu_free(a);
    cpu_free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_zeroed_aligned),
        cmocka_unit_test(test_alloc_failure),
        cmocka_unit_test(test_copies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
