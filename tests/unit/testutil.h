/* Helpers shared by the cmocka unit tests. Link with cmocka (include <cmocka.h> after the
 * standard headers setjmp.h, stdarg.h, stddef.h in the test file). */
#ifndef DT_TESTUTIL_H
#define DT_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

/* |got - ref| <= atol + rtol * |ref| (STYLE: tolerance = abs + rel * |ref|). */
int tu_close(double got, double ref, double atol, double rtol);

/* Fails the running cmocka test, naming `what`, the first offending index and the values, when
 * any element of got is not close to ref. Returns the largest |got - ref| seen. */
double tu_assert_close_f(const float *got, const double *ref, size_t n, double atol, double rtol,
                         const char *what, const char *file, int line);
double tu_assert_close_d(const double *got, const double *ref, size_t n, double atol, double rtol,
                         const char *what, const char *file, int line);
#define assert_close_f(got, ref, n, atol, rtol, what)                                              \
    tu_assert_close_f((got), (ref), (n), (atol), (rtol), (what), __FILE__, __LINE__)
#define assert_close_d(got, ref, n, atol, rtol, what)                                              \
    tu_assert_close_d((got), (ref), (n), (atol), (rtol), (what), __FILE__, __LINE__)

/* Deterministic test data: x[i] ~ N(0, std^2) from (seed, i). */
void tu_fill_normal_f(float *x, size_t n, uint64_t seed, double std);
void tu_fill_normal_d(double *x, size_t n, uint64_t seed, double std);

/* A fresh temporary directory (mkdtemp under $TMPDIR or /tmp); the caller frees the string. */
char *tu_tmpdir(void);
/* rm -rf of a directory made by tu_tmpdir. */
void tu_rmdir(const char *path);

#endif
