#include "testutil.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util/rng.h"

int tu_close(double got, double ref, double atol, double rtol) {
    if (isnan(got) || isnan(ref)) return 0;
    return fabs(got - ref) <= atol + rtol * fabs(ref);
}

static double assert_close(const void *got, int is_double, const double *ref, size_t n,
                           double atol, double rtol, const char *what, const char *file,
                           int line) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double g = is_double ? ((const double *)got)[i] : (double)((const float *)got)[i];
        double err = fabs(g - ref[i]);
        if (err > worst || isnan(err)) worst = err;
        if (!tu_close(g, ref[i], atol, rtol)) {
            print_error("%s:%d: %s[%zu] = %.9g, expected %.9g (|diff| %.3g > %.3g + %.3g*|ref|)\n",
                           file, line, what, i, g, ref[i], err, atol, rtol);
            fail();
        }
    }
    return worst;
}

double tu_assert_close_f(const float *got, const double *ref, size_t n, double atol, double rtol,
                         const char *what, const char *file, int line) {
    return assert_close(got, 0, ref, n, atol, rtol, what, file, line);
}

double tu_assert_close_d(const double *got, const double *ref, size_t n, double atol, double rtol,
                         const char *what, const char *file, int line) {
    return assert_close(got, 1, ref, n, atol, rtol, what, file, line);
}

void tu_fill_normal_f(float *x, size_t n, uint64_t seed, double std) {
    uint64_t key = rng_key(seed, "test");
    for (size_t i = 0; i < n; i++) x[i] = (float)(std * rng_normal(key, i));
}

void tu_fill_normal_d(double *x, size_t n, uint64_t seed, double std) {
    uint64_t key = rng_key(seed, "test");
    for (size_t i = 0; i < n; i++) x[i] = std * rng_normal(key, i);
}

char *tu_tmpdir(void) {
    const char *base = getenv("TMPDIR");
    char buf[4096];
    snprintf(buf, sizeof buf, "%s/difftrain-test-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(buf)) return NULL;
    return strdup(buf);
}

void tu_rmdir(const char *path) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", path);
}
