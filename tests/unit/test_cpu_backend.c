/* dt_backend_cpu(): every member of the backend struct is filled, and with the CPU functions (the
 * ops on dt_operand buffers through casts: operands are fp32 on the CPU). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "model/backend.h"
#include "model/cpu/cpu_ops.h"

static void test_backend_cpu_complete(void **state) {
    (void)state;
    const dt_backend *be = dt_backend_cpu();
    assert_non_null(be);
    assert_non_null(be->name);
    assert_string_equal(be->name, "cpu");
    assert_true(dt_backend_cpu() == be); /* one static instance */
    assert_int_equal(be->operand_bytes, sizeof(float)); /* operands are fp32 */

#define CHECK_MEMBER(member, fn)                                                                   \
    do {                                                                                           \
        assert_non_null(be->member);                                                               \
        assert_true(be->member == fn);                                                             \
    } while (0)
    CHECK_MEMBER(alloc, cpu_alloc);
    CHECK_MEMBER(free, cpu_free);
    CHECK_MEMBER(memset_zero, cpu_memset_zero);
    CHECK_MEMBER(copy_to_host, cpu_copy_to_host);
    CHECK_MEMBER(copy_from_host, cpu_copy_from_host);
    CHECK_MEMBER(copy, cpu_copy);
    CHECK_MEMBER(synchronize, cpu_synchronize);
    CHECK_MEMBER(host_alloc, cpu_host_alloc);
    CHECK_MEMBER(host_free, cpu_host_free);
    CHECK_MEMBER(copy_from_host_async, cpu_copy_from_host_async);
    CHECK_MEMBER(host_wait, cpu_host_wait);
    assert_non_null(be->matmul_forward); /* through casts */
    assert_non_null(be->matmul_backward); /* through casts */
    assert_non_null(be->matmul_backward_operand); /* through casts */
    assert_non_null(be->matmul_forward_operand); /* through casts */
    assert_non_null(be->weights_prepare); /* static: a no-op */
    CHECK_MEMBER(add, cpu_add);
    CHECK_MEMBER(scale, cpu_scale);
    CHECK_MEMBER(sumsq, cpu_sumsq);
    CHECK_MEMBER(sumsq_accumulate, cpu_sumsq_accumulate);
    CHECK_MEMBER(loss_accumulate, cpu_loss_accumulate);
    CHECK_MEMBER(clip_scale, cpu_clip_scale);
    CHECK_MEMBER(embedding_forward, cpu_embedding_forward);
    CHECK_MEMBER(embedding_backward, cpu_embedding_backward);
    assert_non_null(be->rmsnorm_forward); /* through casts */
    assert_non_null(be->residual_rmsnorm_forward); /* through casts */
    assert_non_null(be->rmsnorm_backward); /* through casts */
    assert_non_null(be->rope_forward); /* through casts */
    assert_non_null(be->rope_backward); /* through casts */
    assert_non_null(be->swiglu_forward); /* through casts */
    assert_non_null(be->swiglu_backward); /* through casts */
    CHECK_MEMBER(xent_forward, cpu_xent_forward);
    assert_non_null(be->xent_backward); /* through casts */
    assert_non_null(be->attention_forward); /* through casts */
    assert_non_null(be->attention_backward); /* through casts */
    assert_non_null(be->diffattn_forward); /* through casts */
    assert_non_null(be->diffattn_backward); /* through casts */
    CHECK_MEMBER(difflambda_forward, cpu_difflambda_forward);
    CHECK_MEMBER(difflambda_backward, cpu_difflambda_backward);
    assert_non_null(be->head_scale_forward); /* through casts */
    assert_non_null(be->head_scale_backward); /* through casts */
    assert_non_null(be->diffv2_combine_forward); /* through casts */
    assert_non_null(be->diffv2_combine_backward); /* through casts */
    CHECK_MEMBER(xent_vp_stats, cpu_xent_vp_stats);
    CHECK_MEMBER(xent_vp_rescale, cpu_xent_vp_rescale);
    CHECK_MEMBER(xent_vp_finish, cpu_xent_vp_finish);
    CHECK_MEMBER(adamw_update, cpu_adamw_update);
#undef CHECK_MEMBER
    /* no graphs on the CPU: the trainer runs its steps as issued */
    assert_null(be->graph_begin);
    assert_null(be->graph_end);
    assert_null(be->graph_launch);
    assert_null(be->graph_free);
}

/* A member added to dt_backend but forgotten above would go unchecked; this counts the struct's
 * pointer-sized slots (name, operand_bytes + 51 functions) so that the test fails when the struct
 * grows. */
enum { DT_BACKEND_SLOTS = 53, DT_BACKEND_GRAPH_SLOTS = 4 };
static void test_backend_cpu_member_count(void **state) {
    (void)state;
    assert_int_equal(sizeof(dt_backend), DT_BACKEND_SLOTS * sizeof(void *));
    /* and no slot is NULL, whatever its name, but the four of graphs (checked above) */
    const dt_backend *be = dt_backend_cpu();
    void *slots[DT_BACKEND_SLOTS];
    memcpy(slots, be, sizeof slots);
    int nulls = 0;
    for (int i = 0; i < DT_BACKEND_SLOTS; i++) nulls += slots[i] == NULL;
    assert_int_equal(nulls, DT_BACKEND_GRAPH_SLOTS);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backend_cpu_complete),
        cmocka_unit_test(test_backend_cpu_member_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
