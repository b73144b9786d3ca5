/* groups_init under mpirun with 1 to 4 ranks: for every (tp, dp) with tp * dp = world size (and
 * dp = auto), each rank's TP and DP groups hold exactly the ranks the layout specifies, in order
 * (checked by gathering world ranks over each group's own communicator, against the formula of
 * dist/groups.h written out independently here); a layout that does not match the world size
 * gives DT_ERR_INPUT on every rank. Exact integer checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "dist/groups.h"
#include "dist_test_util.h"

static dt_world world;

/* Gathers the world rank of every member of c, in c's rank order. */
static int gather_members(const dt_comm *c, int *members) {
    return MPI_Allgather(&world.rank, 1, MPI_INT, members, 1, MPI_INT, c->mpi) == MPI_SUCCESS;
}

static void check_layout(int tp, int dp_arg, int *errs) {
    const int W = world.size, r = world.rank, dp = W / tp;
    dt_groups g;
    dt_status st = groups_init(&g, &world, tp, dp_arg);
    DTU_EXPECT(*errs, st == DT_OK, "groups_init(tp %d, dp %d) status %d", tp, dp_arg, st);
    if (dtu_sum_errors(st != DT_OK) != 0) { /* all ranks leave together, none left waiting */
        groups_free(&g);
        return;
    }
    DTU_EXPECT(*errs, g.tp_size == tp && g.dp_size == dp, "sizes %d %d", g.tp_size, g.dp_size);
    DTU_EXPECT(*errs, g.tp_rank == r % tp && g.dp_rank == r / tp, "ranks %d %d", g.tp_rank,
               g.dp_rank);
    DTU_EXPECT(*errs, g.world.size == W && g.world.rank == r, "world %d/%d", g.world.rank,
               g.world.size);
    DTU_EXPECT(*errs, g.tp.size == tp && g.tp.rank == r % tp, "tp comm %d/%d", g.tp.rank,
               g.tp.size);
    DTU_EXPECT(*errs, g.dp.size == dp && g.dp.rank == r / tp, "dp comm %d/%d", g.dp.rank,
               g.dp.size);
    DTU_EXPECT(*errs, !strcmp(g.world.label, "world") && !strcmp(g.tp.label, "tp") &&
                          !strcmp(g.dp.label, "dp"),
               "labels %s %s %s", g.world.label, g.tp.label, g.dp.label);
    int members[64];
    /* TP group: tp consecutive ranks starting at the multiple of tp at or below r */
    DTU_EXPECT(*errs, gather_members(&g.tp, members), "tp all-gather failed");
    for (int i = 0; i < tp; i++)
        DTU_EXPECT(*errs, members[i] == (r - r % tp) + i, "tp(%d,%d) member %d is %d", tp, dp, i,
                   members[i]);
    /* DP group: the ranks with r's position inside its TP group, one per TP group */
    DTU_EXPECT(*errs, gather_members(&g.dp, members), "dp all-gather failed");
    for (int j = 0; j < dp; j++)
        DTU_EXPECT(*errs, members[j] == j * tp + r % tp, "dp(%d,%d) member %d is %d", tp, dp, j,
                   members[j]);
    DTU_EXPECT(*errs, gather_members(&g.world, members), "world all-gather failed");
    for (int k = 0; k < W; k++) DTU_EXPECT(*errs, members[k] == k, "world member %d", k);
    for (int k = 0; k < DT_COLL_COUNT; k++)
        DTU_EXPECT(*errs, g.tp.bytes[k] == 0 && g.dp.bytes[k] == 0, "fresh counters");
    groups_free(&g);
    DTU_EXPECT(*errs, g.tp.size == 0 && g.dp.size == 0 && g.world.size == 0, "freed");
    groups_free(&g); /* twice is safe */
}

static void test_every_layout(void **state) {
    (void)state;
    int errs = 0, layouts = 0;
    for (int tp = 1; tp <= world.size; tp++) {
        if (world.size % tp) continue;
        check_layout(tp, world.size / tp, &errs);
        check_layout(tp, 0, &errs); /* dp = auto */
        layouts++;
    }
    DTU_EXPECT(errs, layouts >= 1, "no layout tried");
    dtu_assert_all(errs);
}

/* The status each rank got, combined: min and max over all ranks must both be `want`. */
static void expect_status_everywhere(int *errs, dt_status got, dt_status want, const char *what) {
    int mine = (int)got, lo = -1, hi = -1;
    MPI_Allreduce(&mine, &lo, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&mine, &hi, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    DTU_EXPECT(*errs, lo == (int)want && hi == (int)want, "%s: statuses %d..%d, wanted %d", what,
               lo, hi, (int)want);
}

static void test_mismatched_layout_is_input_error(void **state) {
    (void)state;
    int errs = 0;
    const int W = world.size;
    struct { int tp, dp; } bad[] = {
        {W + 1, 1}, /* tp * dp > world */
        {1, W + 1},
        {W, 2},
        {0, W},     /* tp < 1 */
        {-1, 0},
        {W + 1, 0}, /* auto dp, tp does not divide the world */
        {1, W - 1}, /* tp * dp < world (not with one rank) */
    };
    const size_t n_bad = sizeof bad / sizeof bad[0] - (W == 1); /* the last: tp * dp < world */
    for (size_t i = 0; i < n_bad; i++) {
        dt_groups g;
        dt_status st = groups_init(&g, &world, bad[i].tp, bad[i].dp);
        char what[64];
        snprintf(what, sizeof what, "tp %d dp %d", bad[i].tp, bad[i].dp);
        expect_status_everywhere(&errs, st, DT_ERR_INPUT, what);
        DTU_EXPECT(errs, g.world.size == 0 && g.tp.size == 0, "no communicator left behind");
        groups_free(&g);
    }
    /* the message names the keys and the world size (rank 0 prints it; the others are silent) */
    dtu_capture cap;
    char msg[4096];
    DTU_EXPECT(errs, dtu_capture_begin(&cap) == 0, "capture");
    dt_groups g;
    dt_status st = groups_init(&g, &world, W + 1, 1);
    DTU_EXPECT(errs, dtu_capture_end(&cap, msg, sizeof msg) == 0, "capture end");
    DTU_EXPECT(errs, st == DT_ERR_INPUT, "status %d", st);
    char want[128];
    snprintf(want, sizeof want, "parallel.tp = %d, parallel.dp = 1 (tp * dp = %d), world size = %d",
             W + 1, W + 1, W);
    if (world.rank == 0) DTU_EXPECT(errs, strstr(msg, want) != NULL, "'%s' in '%s'", want, msg);
    else DTU_EXPECT(errs, msg[0] == '\0', "rank %d is silent, printed '%s'", world.rank, msg);
    dtu_assert_all(errs);
}

int main(int argc, char **argv) {
    if (world_init(&world, &argc, &argv) != DT_OK) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_layout),
        cmocka_unit_test(test_mismatched_layout_is_input_error),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    int verdict = dist_test_verdict(rc == 0 ? 0 : 1);
    world_finalize();
    return verdict;
}
