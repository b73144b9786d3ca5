/* The typed host collectives under mpirun with 1 to 4 ranks, on the world and on the TP and DP
 * groups of every layout. Inputs are small integers (or int64 values beyond double's 53 bits), so
 * every result is exactly representable and compared for equality with the value the test
 * computes itself from the ranks' formulas. Covered: all-reduce (sum, max) of f32/f64/i64;
 * uneven reduce-scatter (out of place and in place) and in-place all-gather of f32/f64 with even,
 * balanced (zero-count parts when there are more ranks than elements), irregular, empty and
 * one-owner partitions; broadcast from every root of f32/f64/i64/bytes; each at the default chunk
 * limit and with the limit lowered to 7 elements, so that the chunked and per-part paths for
 * counts beyond INT_MAX run on small buffers; the byte and call counters against the test's own
 * tally of the documented convention; the analytic byte helpers; argument errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dist/groups.h"
#include "dist_test_util.h"

static dt_world world;

/* The limits every collective runs at: 0 = default (INT_MAX), 7 = chunked / per-part paths. */
static const size_t chunk_limits[] = {0, 7};
#define N_LIMITS (sizeof chunk_limits / sizeof chunk_limits[0])

/* The test's own tally of the byte convention of dist/comm.h: each element of the payload is
 * sent once to (or, reducing, from) each of the other p - 1 ranks; all-reduce does it twice. */
typedef struct tally {
    uint64_t bytes[DT_COLL_COUNT];
    uint64_t calls[DT_COLL_COUNT];
} tally;

static void tally_add(tally *t, int p, dt_coll kind, size_t n, size_t elem_bytes) {
    uint64_t once = (uint64_t)(p - 1) * n * elem_bytes;
    t->bytes[kind] += kind == DT_COLL_ALLREDUCE ? 2 * once : once;
    t->calls[kind] += 1;
}

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) abort();
    return p;
}

/* ---- all-reduce ---- */

static void check_allreduce(dt_comm *c, tally *t, int *errs) {
    const int p = c->size, r = c->rank;
    const size_t ns[] = {0, 1, 37, 100};
    const int64_t big = (int64_t)1 << 58; /* sums need 62 bits: wrong if it went through double */
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++) {
        const size_t n = ns[a];
        float *f = xmalloc(n * sizeof *f);
        double *d = xmalloc(n * sizeof *d);
        int64_t *q = xmalloc(n * sizeof *q);
        for (size_t i = 0; i < n; i++) {
            f[i] = (float)((r + 1) * (int)(i % 5 + 1));
            d[i] = (double)((r + 1) * (int)(i % 9 + 1)) * 0.5;
            q[i] = (int64_t)(r + 1) * big + (int64_t)i;
        }
        DTU_EXPECT(*errs, comm_allreduce_f32(c, f, n, DT_REDUCE_SUM) == DT_OK, "f32 sum");
        DTU_EXPECT(*errs, comm_allreduce_f64(c, d, n, DT_REDUCE_SUM) == DT_OK, "f64 sum");
        DTU_EXPECT(*errs, comm_allreduce_i64(c, q, n, DT_REDUCE_SUM) == DT_OK, "i64 sum");
        tally_add(t, p, DT_COLL_ALLREDUCE, n, 4);
        tally_add(t, p, DT_COLL_ALLREDUCE, n, 8);
        tally_add(t, p, DT_COLL_ALLREDUCE, n, 8);
        const int tri = p * (p + 1) / 2; /* sum of r + 1 over the group */
        for (size_t i = 0; i < n; i++) {
            DTU_EXPECT(*errs, f[i] == (float)(tri * (int)(i % 5 + 1)), "%s f32 sum [%zu] %g",
                       c->label, i, f[i]);
            DTU_EXPECT(*errs, d[i] == (double)(tri * (int)(i % 9 + 1)) * 0.5, "f64 sum [%zu] %g",
                       i, d[i]);
            DTU_EXPECT(*errs, q[i] == (int64_t)tri * big + (int64_t)p * (int64_t)i,
                       "i64 sum [%zu] %lld", i, (long long)q[i]);
        }
        for (size_t i = 0; i < n; i++) {
            f[i] = (float)(r * 10 + (int)(i % 3));
            d[i] = -(double)(r * 10 + (int)(i % 3)); /* the max is rank 0's */
            q[i] = r == p - 1 ? INT64_MAX - (int64_t)i : (int64_t)r - 1000;
        }
        DTU_EXPECT(*errs, comm_allreduce_f32(c, f, n, DT_REDUCE_MAX) == DT_OK, "f32 max");
        DTU_EXPECT(*errs, comm_allreduce_f64(c, d, n, DT_REDUCE_MAX) == DT_OK, "f64 max");
        DTU_EXPECT(*errs, comm_allreduce_i64(c, q, n, DT_REDUCE_MAX) == DT_OK, "i64 max");
        tally_add(t, p, DT_COLL_ALLREDUCE, n, 4);
        tally_add(t, p, DT_COLL_ALLREDUCE, n, 8);
        tally_add(t, p, DT_COLL_ALLREDUCE, n, 8);
        for (size_t i = 0; i < n; i++) {
            DTU_EXPECT(*errs, f[i] == (float)((p - 1) * 10 + (int)(i % 3)), "f32 max [%zu] %g",
                       i, f[i]);
            DTU_EXPECT(*errs, d[i] == -(double)(i % 3), "f64 max [%zu] %g", i, d[i]);
            DTU_EXPECT(*errs, q[i] == INT64_MAX - (int64_t)i, "i64 max [%zu]", i);
        }
        free(f);
        free(d);
        free(q);
    }
}

/* ---- uneven partitions ---- */

enum { N_SETS = 6 };

static void counts_of_set(size_t *counts, int p, int set) {
    for (int j = 0; j < p; j++) {
        switch (set) {
        case 0: counts[j] = 4; break;                                  /* even */
        case 1: counts[j] = (size_t)(3 / p + (j < 3 % p)); break;      /* 3 elements: empty parts */
        case 2: counts[j] = (size_t)((j * 3 + 2) % 5); break;          /* irregular, part 1 empty */
        case 3: counts[j] = 0; break;                                  /* nothing at all */
        case 4: counts[j] = (size_t)(50 + 13 * j); break;              /* beyond the chunk limit */
        default: counts[j] = j == p - 1 ? 23 : 0; break;               /* one owner */
        }
    }
}

/* Element k of rank r's reduce-scatter input; the sum over ranks is tri * (k % 11 + 1). */
static double rs_input(int r, size_t k) { return (double)((r + 1) * (int)(k % 11 + 1)); }
/* Element i of owner j's part in the all-gather. */
static double ag_value(int j, size_t i) { return (double)(100 * j + (int)(i % 97)); }

#define SENTINEL (-7.0)

/* One reduce-scatter of f32 (f64 = 0) or f64 (f64 = 1), out of place or in place. */
static void check_reduce_scatter_once(dt_comm *c, tally *t, int *errs, const size_t *counts,
                                      int f64, int in_place) {
    const int p = c->size, r = c->rank;
    size_t n = 0, my_off = 0;
    for (int j = 0; j < p; j++) {
        if (j == r) my_off = n;
        n += counts[j];
    }
    const size_t mine = counts[r], es = f64 ? 8 : 4;
    /* in: n elements; out: mine elements and one guard that must stay untouched */
    void *in = xmalloc(n * es), *outbuf = xmalloc((mine + 1) * es);
    for (size_t k = 0; k < n; k++) {
        if (f64) ((double *)in)[k] = rs_input(r, k);
        else ((float *)in)[k] = (float)rs_input(r, k);
    }
    for (size_t i = 0; i <= mine; i++) {
        if (f64) ((double *)outbuf)[i] = SENTINEL;
        else ((float *)outbuf)[i] = (float)SENTINEL;
    }
    dt_status st;
    if (f64) {
        double *out = in_place ? (double *)in + my_off : (double *)outbuf;
        st = comm_reduce_scatter_f64(c, out, in, counts);
    } else {
        float *out = in_place ? (float *)in + my_off : (float *)outbuf;
        st = comm_reduce_scatter_f32(c, out, in, counts);
    }
    DTU_EXPECT(*errs, st == DT_OK, "reduce-scatter status %d", st);
    tally_add(t, p, DT_COLL_REDUCE_SCATTER, n, es);
    const double tri = p * (p + 1) / 2;
    for (size_t i = 0; i < mine; i++) {
        size_t k = my_off + i;
        double got = in_place ? (f64 ? ((double *)in)[k] : ((float *)in)[k])
                              : (f64 ? ((double *)outbuf)[i] : ((float *)outbuf)[i]);
        DTU_EXPECT(*errs, got == tri * (double)(k % 11 + 1),
                   "%s rs f64=%d in_place=%d part %d [%zu] = %g", c->label, f64, in_place, r, i,
                   got);
    }
    if (!in_place) {
        double guard = f64 ? ((double *)outbuf)[mine] : ((float *)outbuf)[mine];
        DTU_EXPECT(*errs, guard == SENTINEL, "rs wrote past its part (%g)", guard);
        for (size_t k = 0; k < n; k++) { /* the input is const: unchanged */
            double v = f64 ? ((double *)in)[k] : ((float *)in)[k];
            DTU_EXPECT(*errs, v == rs_input(r, k), "rs changed in[%zu]", k);
        }
    }
    free(in);
    free(outbuf);
}

static void check_allgather_once(dt_comm *c, tally *t, int *errs, const size_t *counts,
                                 int f64) {
    const int p = c->size, r = c->rank;
    size_t n = 0, my_off = 0;
    for (int j = 0; j < p; j++) {
        if (j == r) my_off = n;
        n += counts[j];
    }
    const size_t es = f64 ? 8 : 4;
    void *buf = xmalloc((n + 1) * es); /* one guard element past the end */
    for (size_t k = 0; k <= n; k++) {
        int own = k >= my_off && k < my_off + counts[r];
        double v = own ? ag_value(r, k - my_off) : SENTINEL;
        if (f64) ((double *)buf)[k] = v;
        else ((float *)buf)[k] = (float)v;
    }
    dt_status st = f64 ? comm_allgather_f64(c, buf, counts) : comm_allgather_f32(c, buf, counts);
    DTU_EXPECT(*errs, st == DT_OK, "all-gather status %d", st);
    tally_add(t, p, DT_COLL_ALLGATHER, n, es);
    size_t k = 0;
    for (int j = 0; j < p; j++)
        for (size_t i = 0; i < counts[j]; i++, k++) {
            double got = f64 ? ((double *)buf)[k] : ((float *)buf)[k];
            DTU_EXPECT(*errs, got == ag_value(j, i), "%s ag f64=%d part %d [%zu] = %g", c->label,
                       f64, j, i, got);
        }
    double guard = f64 ? ((double *)buf)[n] : ((float *)buf)[n];
    DTU_EXPECT(*errs, guard == SENTINEL, "ag wrote past the end (%g)", guard);
    free(buf);
}

static void check_uneven(dt_comm *c, tally *t, int *errs) {
    size_t counts[64];
    for (int set = 0; set < N_SETS; set++) {
        counts_of_set(counts, c->size, set);
        for (int f64 = 0; f64 <= 1; f64++) {
            check_reduce_scatter_once(c, t, errs, counts, f64, 0);
            check_reduce_scatter_once(c, t, errs, counts, f64, 1);
            check_allgather_once(c, t, errs, counts, f64);
        }
    }
}

/* ---- broadcast ---- */

static void check_broadcast(dt_comm *c, tally *t, int *errs) {
    const int p = c->size, r = c->rank;
    const size_t ns[] = {0, 5, 40};
    for (int root = 0; root < p; root++) {
        for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++) {
            const size_t n = ns[a];
            float *f = xmalloc(n * sizeof *f);
            double *d = xmalloc(n * sizeof *d);
            int64_t *q = xmalloc(n * sizeof *q);
            unsigned char *b = xmalloc(n);
            for (size_t i = 0; i < n; i++) {
                int me = r == root;
                f[i] = me ? (float)(root * 1000 + (int)i) : -1.0f;
                d[i] = me ? (double)(root * 1000 + (int)i) + 0.25 : -1.0;
                q[i] = me ? ((int64_t)(root + 1) << 55) + (int64_t)i : -1;
                b[i] = me ? (unsigned char)((root * 31 + (int)i) & 0xff) : 0;
            }
            DTU_EXPECT(*errs, comm_broadcast_f32(c, f, n, root) == DT_OK, "bcast f32");
            DTU_EXPECT(*errs, comm_broadcast_f64(c, d, n, root) == DT_OK, "bcast f64");
            DTU_EXPECT(*errs, comm_broadcast_i64(c, q, n, root) == DT_OK, "bcast i64");
            DTU_EXPECT(*errs, comm_broadcast_bytes(c, b, n, root) == DT_OK, "bcast bytes");
            tally_add(t, p, DT_COLL_BROADCAST, n, 4);
            tally_add(t, p, DT_COLL_BROADCAST, n, 8);
            tally_add(t, p, DT_COLL_BROADCAST, n, 8);
            tally_add(t, p, DT_COLL_BROADCAST, n, 1);
            for (size_t i = 0; i < n; i++) {
                DTU_EXPECT(*errs, f[i] == (float)(root * 1000 + (int)i),
                           "%s bcast f32 root %d [%zu]", c->label, root, i);
                DTU_EXPECT(*errs, d[i] == (double)(root * 1000 + (int)i) + 0.25, "bcast f64");
                DTU_EXPECT(*errs, q[i] == ((int64_t)(root + 1) << 55) + (int64_t)i, "bcast i64");
                DTU_EXPECT(*errs, b[i] == (unsigned char)((root * 31 + (int)i) & 0xff),
                           "bcast bytes");
            }
            free(f);
            free(d);
            free(q);
            free(b);
        }
    }
}

/* ---- errors that every rank detects alike (no rank is left waiting) ---- */

static void check_argument_errors(dt_comm *c, int *errs) {
    float x[8] = {0};
    size_t counts[64];
    for (int j = 0; j < c->size; j++) counts[j] = 2;
    dt_status st = comm_broadcast_f32(c, x, 1, c->size);
    DTU_EXPECT(*errs, st == DT_ERR_INPUT, "root = size: %d", st);
    st = comm_broadcast_f32(c, x, 1, -1);
    DTU_EXPECT(*errs, st == DT_ERR_INPUT, "root = -1: %d", st);
    st = comm_allreduce_f32(c, x, 1, (dt_reduce_op)7);
    DTU_EXPECT(*errs, st == DT_ERR_INPUT, "unknown op: %d", st);
    /* out overlapping in without being this rank's part (every rank has a part here) */
    float *in = xmalloc(2 * (size_t)c->size * sizeof *in);
    size_t my_off = 2 * (size_t)c->rank;
    float *bad = c->rank == 0 ? in + 1 : in + my_off - 1;
    st = comm_reduce_scatter_f32(c, bad, in, counts);
    DTU_EXPECT(*errs, st == DT_ERR_INPUT, "overlap: %d", st);
    free(in);
    dt_comm none;
    memset(&none, 0, sizeof none);
    DTU_EXPECT(*errs, comm_allreduce_f32(&none, x, 1, DT_REDUCE_SUM) == DT_ERR_INPUT,
               "uninitialised communicator");
}

/* ---- everything on one communicator, counters included ---- */

static void check_comm(dt_comm *c, int *errs) {
    for (size_t l = 0; l < N_LIMITS; l++) {
        comm_set_chunk_limit(chunk_limits[l]);
        comm_reset_bytes(c);
        tally t;
        memset(&t, 0, sizeof t);
        check_allreduce(c, &t, errs);
        check_uneven(c, &t, errs);
        check_broadcast(c, &t, errs);
        check_argument_errors(c, errs); /* failed calls count nothing */
        uint64_t total = 0;
        for (int k = 0; k < DT_COLL_COUNT; k++) {
            DTU_EXPECT(*errs, c->bytes[k] == t.bytes[k], "%s bytes[%d] %llu, tally %llu",
                       c->label, k, (unsigned long long)c->bytes[k],
                       (unsigned long long)t.bytes[k]);
            DTU_EXPECT(*errs, c->calls[k] == t.calls[k], "%s calls[%d] %llu, tally %llu",
                       c->label, k, (unsigned long long)c->calls[k],
                       (unsigned long long)t.calls[k]);
            total += t.bytes[k];
        }
        DTU_EXPECT(*errs, comm_bytes_total(c) == total, "bytes total");
        if (c->size == 1) DTU_EXPECT(*errs, total == 0, "one rank moves nothing");
        /* the group total is the same number on every rank of the group */
        unsigned long long mine = comm_bytes_total(c), lo = 0, hi = 0;
        MPI_Allreduce(&mine, &lo, 1, MPI_UNSIGNED_LONG_LONG, MPI_MIN, c->mpi);
        MPI_Allreduce(&mine, &hi, 1, MPI_UNSIGNED_LONG_LONG, MPI_MAX, c->mpi);
        DTU_EXPECT(*errs, lo == hi, "%s group totals differ: %llu..%llu", c->label, lo, hi);
        comm_reset_bytes(c);
        DTU_EXPECT(*errs, comm_bytes_total(c) == 0 && c->calls[DT_COLL_ALLREDUCE] == 0, "reset");
    }
    comm_set_chunk_limit(0);
}

static void test_world(void **state) {
    (void)state;
    int errs = 0;
    dt_comm c;
    dt_status st = comm_init_world(&c, "world");
    DTU_EXPECT(errs, st == DT_OK, "comm_init_world %d", st);
    DTU_EXPECT(errs, c.size == world.size && c.rank == world.rank, "world comm %d/%d", c.rank,
               c.size);
    if (dtu_sum_errors(errs) == 0) check_comm(&c, &errs);
    comm_free(&c);
    comm_free(&c);
    dtu_assert_all(errs);
}

static void test_every_layout_group(void **state) {
    (void)state;
    int errs = 0;
    for (int tp = 1; tp <= world.size; tp++) {
        if (world.size % tp) continue;
        dt_groups g;
        dt_status st = groups_init(&g, &world, tp, world.size / tp);
        DTU_EXPECT(errs, st == DT_OK, "groups_init tp %d: %d", tp, st);
        if (dtu_sum_errors(st != DT_OK) != 0) break;
        check_comm(&g.tp, &errs); /* the TP groups run at the same time on disjoint ranks */
        check_comm(&g.dp, &errs);
        groups_free(&g);
    }
    dtu_assert_all(errs);
}

static void test_analytic_bytes(void **state) {
    (void)state;
    /* written-out values of the convention for a few (p, n, b) */
    assert_int_equal(comm_bytes_allreduce(4, 1000, 4), 2 * 3 * 1000 * 4);
    assert_int_equal(comm_bytes_reduce_scatter(4, 3, 8), 3 * 3 * 8);
    assert_int_equal(comm_bytes_allgather(3, 10, 2), 2 * 10 * 2);
    assert_int_equal(comm_bytes_broadcast(2, 7, 1), 7);
    assert_int_equal(comm_bytes_allreduce(1, 1000, 4), 0);
    assert_int_equal(comm_bytes_broadcast(1, 1000, 4), 0);
    /* beyond 32 bits: 2 * 7 * 2^33 * 4 */
    assert_true(comm_bytes_allreduce(8, (size_t)1 << 33, 4) ==
                (uint64_t)2 * 7 * 4 * ((uint64_t)1 << 33));
    /* per rank (total / p) is nccl-tests' bus bytes: 2 (p-1)/p S for all-reduce */
    assert_true(comm_bytes_allreduce(4, 1024, 4) / 4 == 2 * 3 * 1024 * 4 / 4);
}

int main(int argc, char **argv) {
    if (world_init(&world, &argc, &argv) != DT_OK) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_analytic_bytes),
        cmocka_unit_test(test_world),
        cmocka_unit_test(test_every_layout_group),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    int verdict = dist_test_verdict(rc == 0 ? 0 : 1);
    world_finalize();
    return verdict;
}
