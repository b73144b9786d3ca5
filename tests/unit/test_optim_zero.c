/* ZeRO's bucketed gradient reduction (optim/zero.h: zero_reduce_range, zero_finish_reduce) under
 * mpirun with 1 to 4 ranks, on the CPU backend (MPI), at stages 0, 1 and 2. For buffers of
 * 1 .. 100 elements (fewer elements than ranks included: empty shards), the buffer is reduced
 * range by range in several bucketings: one bucket (the whole buffer: what the trainer does with
 * parallel.overlap_grad_reduce off), every element alone in reverse order (buckets smaller than
 * dp, each inside one shard), irregular buckets with empty ones in the backward's order (last
 * range first) and in forward order (buckets straddling shard boundaries, and ranges whose
 * intersection with some shards is empty).
 *
 * Two data sets. Small multiples of 1/4 from the ranks' formulas: every partial sum is exact in
 * float, so the result must equal, exactly, both the sum the test computes itself and the
 * whole-buffer reduction, at any dp and whatever order MPI sums in. Random floats: at dp <= 2 a
 * sum of two is the same in either order, so the bucketed result must be bit-identical to the
 * whole-buffer one (at dp 3 and 4 MPI may pick another summation order for another message size).
 * Also: stage 2 accumulates two micro-batches and clears the buffer, the bytes counted for the
 * buckets equal the whole buffer's, empty buckets move nothing, and a range outside the buffer is
 * refused with DT_ERR_INPUT on every rank. Each case also runs with MPI's chunk limit lowered to
 * 7 elements (comm_set_chunk_limit), so that the per-part path of the collectives takes buckets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dist/groups.h"
#include "dist/partition.h"
#include "dist_test_util.h"
#include "optim/zero.h"

static dt_world world;

enum { MAX_BUCKETS = 256 };

typedef struct bucketing {
    const char *name;
    int n;
    size_t first[MAX_BUCKETS], count[MAX_BUCKETS];
} bucketing;

static void add_bucket(bucketing *b, size_t first, size_t count) {
    if (b->n >= MAX_BUCKETS) abort();
    b->first[b->n] = first;
    b->count[b->n] = count;
    b->n++;
}

/* The bucketings of a buffer of P elements (every one covers [0, P) exactly once). */
static int make_bucketings(bucketing *out, size_t P) {
    static const size_t sizes[] = {3, 0, 1, 7, 2, 0, 11, 4};
    const size_t n_sizes = sizeof sizes / sizeof sizes[0];
    memset(out, 0, 4 * sizeof *out);
    out[0].name = "whole";
    add_bucket(&out[0], 0, P);
    out[1].name = "singletons, last first";
    for (size_t i = P; i-- > 0;) add_bucket(&out[1], i, 1);
    /* irregular cuts from the end, as the backward finishes them: sizes cycle, 0 = empty */
    out[2].name = "irregular, last first";
    size_t end = P;
    for (size_t k = 0; end > 0; k++) {
        size_t c = sizes[k % n_sizes] < end ? sizes[k % n_sizes] : end;
        add_bucket(&out[2], end - c, c);
        end -= c;
    }
    add_bucket(&out[2], 0, 0); /* an empty range at the very start */
    out[3].name = "irregular, first first";
    for (int k = out[2].n; k-- > 0;) add_bucket(&out[3], out[2].first[k], out[2].count[k]);
    return 4;
}

/* Exactly representable data: rank r's gradient element i of micro-batch mb. */
static float exact_value(int r, size_t i, int mb) {
    return (float)((r + 1) * 64 + (int)(i % 61) + 4 * mb) + 0.25f * (float)((i + (size_t)r) % 4);
}

/* Deterministic pseudo-random floats in (-1, 1), different on every rank. */
static float random_value(int r, size_t i, int mb) {
    uint64_t x = ((uint64_t)r * 0x9E3779B97F4A7C15u) ^ ((uint64_t)i * 0xBF58476D1CE4E5B9u) ^
                 ((uint64_t)(mb + 1) * 0x94D049BB133111EBu);
    x ^= x >> 31;
    x *= 0xD6E8FEB86CB4B4Fu;
    x ^= x >> 29;
    return (float)((double)(x >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
}

typedef float (*value_fn)(int r, size_t i, int mb);

/* One step's reduction: `micro` micro-batches (each reduced at stage 2, the sum of them once at
 * stages 0 and 1), each by the bucketing b. Returns this rank's summed range (a copy, z->count
 * elements) and checks what must hold whatever the data. */
static float *reduce_step(dt_comm *dp, int stage, size_t P, const bucketing *b, value_fn value,
                          int *errs) {
    const dt_backend *be = dt_backend_cpu();
    dt_zero z;
    DTU_EXPECT(*errs, zero_init(&z, stage, dp, buf_coll_host(), be, P) == DT_OK, "zero_init");
    float *grads = malloc((P ? P : 1) * sizeof *grads);
    float *out = malloc((z.count ? z.count : 1) * sizeof *out);
    if (!grads || !out) abort();
    const int micro = 2;
    zero_begin_step(&z);
    memset(grads, 0, P * sizeof *grads);
    comm_reset_bytes(dp);
    int reductions = 0;
    for (int mb = 0; mb < micro; mb++) {
        for (size_t i = 0; i < P; i++) grads[i] += value(dp->rank, i, mb); /* the "backward" */
        if (stage != 2 && mb + 1 < micro) continue;
        for (int k = 0; k < b->n; k++)
            DTU_EXPECT(*errs, zero_reduce_range(&z, grads, b->first[k], b->count[k]) == DT_OK,
                       "zero_reduce_range [%zu, +%zu)", b->first[k], b->count[k]);
        DTU_EXPECT(*errs, zero_finish_reduce(&z, grads) == DT_OK, "zero_finish_reduce");
        reductions++;
        if (stage == 2)
            for (size_t i = 0; i < P; i++)
                DTU_EXPECT(*errs, grads[i] == 0.0f, "stage 2 leaves grads[%zu] = %g", i, grads[i]);
    }
    float *range = zero_range_grads(&z, grads);
    DTU_EXPECT(*errs, range == (stage == 0 ? grads : stage == 1 ? grads + z.first : z.grad_accum),
               "zero_range_grads at stage %d", stage);
    memcpy(out, range, z.count * sizeof *out);

    /* the buckets move what the whole buffer moves; empty buckets and one rank move nothing */
    int nonempty = 0;
    for (int k = 0; k < b->n; k++) nonempty += b->count[k] > 0;
    dt_coll kind = stage == 0 ? DT_COLL_ALLREDUCE : DT_COLL_REDUCE_SCATTER;
    uint64_t want = (uint64_t)reductions * (stage == 0 ? comm_bytes_allreduce(dp->size, P, 4)
                                                       : comm_bytes_reduce_scatter(dp->size, P, 4));
    DTU_EXPECT(*errs, comm_bytes_total(dp) == want, "%s stage %d: %llu bytes, want %llu", b->name,
               stage, (unsigned long long)comm_bytes_total(dp), (unsigned long long)want);
    uint64_t calls = dp->size > 1 ? (uint64_t)reductions * (uint64_t)nonempty : 0;
    DTU_EXPECT(*errs, dp->calls[kind] == calls, "%s stage %d: %llu calls, want %llu", b->name,
               stage, (unsigned long long)dp->calls[kind], (unsigned long long)calls);
    zero_free(&z);
    free(grads);
    return out;
}

static void check_stage(dt_comm *dp, int stage, size_t P, int *errs) {
    bucketing b[4];
    int nb = make_bucketings(b, P);
    size_t first, count;
    if (stage == 0) {
        first = 0;
        count = P;
    } else {
        dist_partition(P, dp->size, dp->rank, &first, &count);
    }
    const int micro = 2;
    float *whole_exact = reduce_step(dp, stage, P, &b[0], exact_value, errs);
    float *whole_random = reduce_step(dp, stage, P, &b[0], random_value, errs);
    for (size_t i = 0; i < count; i++) {
        /* the step's sum over ranks and both micro-batches (at stage 2 as two reductions) */
        float want = 0;
        for (int r = 0; r < dp->size; r++)
            for (int mb = 0; mb < micro; mb++) want += exact_value(r, first + i, mb);
        DTU_EXPECT(*errs, whole_exact[i] == want, "stage %d P %zu: whole [%zu] = %g, want %g",
                   stage, P, first + i, whole_exact[i], want);
    }
    for (int k = 1; k < nb; k++) {
        float *got = reduce_step(dp, stage, P, &b[k], exact_value, errs);
        for (size_t i = 0; i < count; i++)
            DTU_EXPECT(*errs, got[i] == whole_exact[i], "stage %d P %zu %s: [%zu] = %g, whole %g",
                       stage, P, b[k].name, first + i, got[i], whole_exact[i]);
        free(got);
        if (dp->size > 2) continue;
        got = reduce_step(dp, stage, P, &b[k], random_value, errs);
        for (size_t i = 0; i < count; i++)
            DTU_EXPECT(*errs, memcmp(&got[i], &whole_random[i], sizeof(float)) == 0,
                       "stage %d P %zu %s random: [%zu] = %.9g, whole %.9g", stage, P, b[k].name,
                       first + i, got[i], whole_random[i]);
        free(got);
    }
    free(whole_exact);
    free(whole_random);
}

static void test_buckets_match_whole_buffer(void **state) {
    (void)state;
    int errs = 0;
    dt_comm dp;
    DTU_EXPECT(errs, comm_init_world(&dp, "dp") == DT_OK, "comm_init_world");
    static const size_t totals[] = {1, 3, 10, 37, 100};
    static const size_t limits[] = {0, 7};
    for (size_t l = 0; l < sizeof limits / sizeof limits[0]; l++) {
        comm_set_chunk_limit(limits[l]);
        for (int stage = 0; stage <= 2; stage++)
            for (size_t t = 0; t < sizeof totals / sizeof totals[0]; t++)
                check_stage(&dp, stage, totals[t], &errs);
    }
    comm_set_chunk_limit(0);
    comm_free(&dp);
    dtu_assert_all(errs);
}

static void test_range_outside_buffer(void **state) {
    (void)state;
    int errs = 0;
    dt_comm dp;
    DTU_EXPECT(errs, comm_init_world(&dp, "dp") == DT_OK, "comm_init_world");
    dt_zero z;
    float grads[10] = {0};
    DTU_EXPECT(errs, zero_init(&z, 1, &dp, buf_coll_host(), dt_backend_cpu(), 10) == DT_OK,
               "zero_init");
    dtu_capture cap;
    char msg[512];
    dtu_capture_begin(&cap);
    dt_status past_end = zero_reduce_range(&z, grads, 4, 7);
    dt_status past_start = zero_reduce_range(&z, grads, 11, 0);
    dtu_capture_end(&cap, msg, sizeof msg);
    DTU_EXPECT(errs, past_end == DT_ERR_INPUT, "[4, 11) of 10: %d", past_end);
    DTU_EXPECT(errs, past_start == DT_ERR_INPUT, "[11, 11) of 10: %d", past_start);
    DTU_EXPECT(errs, strstr(msg, "zero_reduce_range") && strstr(msg, "[4, 11)"), "message: %s",
               msg);
    DTU_EXPECT(errs, zero_reduce_range(&z, grads, 10, 0) == DT_OK, "the empty range at the end");
    DTU_EXPECT(errs, dp.calls[DT_COLL_REDUCE_SCATTER] == 0, "a refused range moved data");
    zero_free(&z);
    comm_free(&dp);
    dtu_assert_all(errs);
}

int main(int argc, char **argv) {
    if (world_init(&world, &argc, &argv) != DT_OK) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buckets_match_whole_buffer),
        cmocka_unit_test(test_range_outside_buffer),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    int verdict = dist_test_verdict(rc == 0 ? 0 : 1);
    world_finalize();
    return verdict;
}
