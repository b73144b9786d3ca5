/* The agreed error path and the check macro, under mpirun with 1 to 4 ranks: dist_agree gives
 * every rank the largest status of the group whichever rank failed; dist_test_verdict combines
 * exit codes so that one failing rank fails everyone (and a skip does not hide a failure);
 * DT_MPI_CHECK evaluates its argument once, returns DT_ERR_RUNTIME and reports the call's text,
 * file:line, rank and host with MPI's error string. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "dist/check.h"
#include "dist/groups.h"
#include "dist_test_util.h"

static dt_world world;

static void test_agree(void **state) {
    (void)state;
    int errs = 0;
    dt_groups g;
    dt_status st = groups_init(&g, &world, world.size, 1); /* one TP group of everything */
    DTU_EXPECT(errs, st == DT_OK, "groups_init %d", st);
    if (dtu_sum_errors(st != DT_OK) == 0) {
        const int W = world.size, r = world.rank;
        DTU_EXPECT(errs, dist_agree(&g.world, DT_OK) == DT_OK, "all ok");
        for (int bad = 0; bad < W; bad++) {
            st = dist_agree(&g.world, r == bad ? DT_ERR_RUNTIME : DT_OK);
            DTU_EXPECT(errs, st == DT_ERR_RUNTIME, "rank %d failed: agreed %d", bad, st);
            st = dist_agree(&g.tp, r == bad ? DT_ERR_INPUT : DT_OK);
            DTU_EXPECT(errs, st == DT_ERR_INPUT, "rank %d input error: agreed %d", bad, st);
        }
        /* an input error on one rank and a runtime error on another: the larger, everywhere */
        st = dist_agree(&g.world, r == 0 ? DT_ERR_RUNTIME : r == W - 1 ? DT_ERR_INPUT : DT_OK);
        DTU_EXPECT(errs, st == (W > 1 ? DT_ERR_INPUT : DT_ERR_RUNTIME), "mixed: agreed %d", st);
        /* DP groups of one rank each (tp = world): a failure stays inside its group */
        st = dist_agree(&g.dp, r == 0 ? DT_ERR_RUNTIME : DT_OK);
        DTU_EXPECT(errs, st == (r == 0 ? DT_ERR_RUNTIME : DT_OK), "dp of one: %d", st);
        /* control traffic is not counted */
        DTU_EXPECT(errs, comm_bytes_total(&g.world) == 0 && g.world.calls[0] == 0, "counted");
    }
    groups_free(&g);
    dtu_assert_all(errs);
}

static void test_verdict(void **state) {
    (void)state;
    int errs = 0;
    const int W = world.size, r = world.rank;
    DTU_EXPECT(errs, dist_test_verdict(0) == 0, "all pass");
    for (int bad = 0; bad < W; bad++) {
        int v = dist_test_verdict(r == bad ? 3 : 0);
        DTU_EXPECT(errs, v == 1, "rank %d failed: verdict %d", bad, v);
        v = dist_test_verdict(r == bad ? 77 : 0);
        DTU_EXPECT(errs, v == 77, "rank %d skipped: verdict %d", bad, v);
    }
    int v = dist_test_verdict(77);
    DTU_EXPECT(errs, v == 77, "all skipped: %d", v);
    /* a failure is not hidden by a skip elsewhere (a MAX of exit codes would give 77) */
    v = dist_test_verdict(r == W - 1 ? 1 : 77);
    DTU_EXPECT(errs, v == 1, "fail + skip: %d", v);
    dtu_assert_all(errs);
}

static int evaluations;

/* MPI_Comm_rank on MPI_COMM_NULL fails locally, on every rank, without communicating. */
static int failing_mpi_call(int *rank) {
    evaluations++;
    return MPI_Comm_rank(MPI_COMM_NULL, rank);
}

static dt_status use_check(void) {
    int rank = 0;
    DT_MPI_CHECK(failing_mpi_call(&rank));
    return DT_OK;
}

static dt_status use_check_ok(void) {
    int rank = -1;
    DT_MPI_CHECK((evaluations++, MPI_Comm_rank(MPI_COMM_WORLD, &rank)));
    return rank == world.rank ? DT_OK : DT_ERR_INPUT;
}

static void test_mpi_check(void **state) {
    (void)state;
    int errs = 0;
    evaluations = 0;
    DTU_EXPECT(errs, use_check_ok() == DT_OK, "a successful call passes");
    DTU_EXPECT(errs, evaluations == 1, "evaluated %d times", evaluations);
    dtu_capture cap;
    char msg[8192];
    evaluations = 0;
    DTU_EXPECT(errs, dtu_capture_begin(&cap) == 0, "capture");
    dt_status st = use_check();
    DTU_EXPECT(errs, dtu_capture_end(&cap, msg, sizeof msg) == 0, "capture end");
    DTU_EXPECT(errs, st == DT_ERR_RUNTIME, "status %d", st);
    DTU_EXPECT(errs, evaluations == 1, "evaluated %d times", evaluations);
    char want[512];
    snprintf(want, sizeof want, "on rank %d of %d (%s)", world.rank, world.size, world.host);
    /* MPI's own words for the code the call returns */
    int dummy = 0, len = 0;
    char mpi_words[MPI_MAX_ERROR_STRING + 1] = "";
    MPI_Error_string(MPI_Comm_rank(MPI_COMM_NULL, &dummy), mpi_words, &len);
    const char *needles[] = {"MPI call failing_mpi_call(&rank) failed at ", "test_dist_agree.c:",
                             want, mpi_words};
    DTU_EXPECT(errs, len > 0, "MPI_Error_string gave nothing");
    for (size_t i = 0; i < sizeof needles / sizeof needles[0]; i++)
        DTU_EXPECT(errs, strstr(msg, needles[i]) != NULL, "'%s' in '%s'", needles[i], msg);
    dtu_assert_all(errs);
}

int main(int argc, char **argv) {
    if (world_init(&world, &argc, &argv) != DT_OK) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agree),
        cmocka_unit_test(test_verdict),
        cmocka_unit_test(test_mpi_check),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    /* This test checks dist_test_verdict, so it must not trust it for its own verdict (a broken
     * one could turn a failure into 77, "skipped"): a plain MAX of "failed" over all ranks. */
    int failed = rc != 0, any = 1;
    if (MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD) != MPI_SUCCESS) any = 1;
    world_finalize();
    return any ? 1 : 0;
}
