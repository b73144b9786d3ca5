/* Helpers shared by the multi-rank tests (tests/unit/test_dist_*.c). Header-only (static inline)
 * because the test build links exactly one source file plus testutil.c per test.
 *
 * The pattern of a multi-rank test: every rank runs the same collectives in the same order, and
 * a failed expectation is COUNTED (DTU_EXPECT), not asserted, so that no rank leaves a test early
 * and leaves the others waiting in a collective. At the end of a test dtu_assert_all() sums the
 * counts over all ranks and asserts zero, so all ranks fail (or pass) the test together. main()
 * combines the cmocka result over all ranks with dist_test_verdict and every rank exits with it. */
#ifndef DT_DIST_TEST_UTIL_H
#define DT_DIST_TEST_UTIL_H

#include <mpi.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Counts a failed expectation into the int `errs` and prints the first few, with the rank. */
#define DTU_EXPECT(errs, cond, ...)                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            if ((errs)++ < 8) {                                                                    \
                int dtu_rank_ = -1;                                                                \
                MPI_Comm_rank(MPI_COMM_WORLD, &dtu_rank_);                                         \
                fprintf(stderr, "[rank %d] %s:%d: expected %s: ", dtu_rank_, __FILE__, __LINE__,  \
                        #cond);                                                                    \
                fprintf(stderr, __VA_ARGS__);                                                      \
                fputc('\n', stderr);                                                               \
            }                                                                                      \
        }                                                                                          \
    } while (0)

/* The sum over all ranks of errs (a failed combination counts as an error). */
static inline long dtu_sum_errors(int errs) {
    long mine = errs, all = 0;
    if (MPI_Allreduce(&mine, &all, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS) return 1;
    return all;
}

/* Fails the running cmocka test on every rank when any rank counted an error. */
#define dtu_assert_all(errs) assert_int_equal(dtu_sum_errors(errs), 0)

/* Captures what this process writes to stderr between dtu_capture_begin and dtu_capture_end
 * (into buf, NUL-terminated, truncated to len - 1 bytes). Returns 0 on success. */
typedef struct dtu_capture {
    int saved_fd;
    FILE *tmp;
} dtu_capture;

static inline int dtu_capture_begin(dtu_capture *cap) {
    fflush(stderr);
    cap->tmp = tmpfile();
    cap->saved_fd = cap->tmp ? dup(fileno(stderr)) : -1;
    if (cap->saved_fd < 0 || dup2(fileno(cap->tmp), fileno(stderr)) < 0) return -1;
    return 0;
}

static inline int dtu_capture_end(dtu_capture *cap, char *buf, size_t len) {
    fflush(stderr);
    int ok = cap->saved_fd >= 0 && dup2(cap->saved_fd, fileno(stderr)) >= 0;
    if (cap->saved_fd >= 0) close(cap->saved_fd);
    buf[0] = '\0';
    if (cap->tmp) {
        rewind(cap->tmp);
        size_t n = fread(buf, 1, len - 1, cap->tmp);
        buf[n] = '\0';
        fclose(cap->tmp);
    }
    return ok ? 0 : -1;
}

#ifdef cmocka_unit_test /* included after <cmocka.h> */
#include "dist/comm.h"
#include "dist/world.h"

/* The body of main() for tests on a communicator of all ranks: the world, *comm on it
 * ("world"), the tests, and the verdict over all ranks (dist_test_verdict), which every rank
 * returns. */
static inline int dtu_run_world_tests(int *argc, char ***argv, dt_comm *comm,
                                      const struct CMUnitTest *tests, size_t count) {
    dt_world world;
    if (world_init(&world, argc, argv) != DT_OK) return 1;
    if (comm_init_world(comm, "world") != DT_OK) return 1;
    int rc = _cmocka_run_group_tests("tests", tests, count, NULL, NULL);
    comm_free(comm);
    int verdict = dist_test_verdict(rc == 0 ? 0 : 1);
    world_finalize();
    return verdict;
}
#endif

#endif
