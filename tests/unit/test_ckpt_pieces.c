/* The checkpoint's piece arithmetic (ckpt/ckpt_index.h), against naive element-by-element
 * references: the pieces of every tensor tile its global shape exactly once for every saving
 * layout (tp 1, 2, 4 x dp 1..4) with the writer rules (DP rank i % dp, replicated tensors by TP
 * rank 0 only); block intersections equal the element-wise count; and every rank of every
 * loading layout finds its slice covered exactly by the saved pieces. Integer arithmetic: exact. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ckpt/ckpt_index.h"
#include "model/params.h"

/* tests/configs/parallel/diff.yaml's model: GQA, unequal vocab slices over tp 2 and 4 */
static dt_model_config model_cfg(void) {
    dt_config c;
    config_defaults(&c);
    c.model.vocab_size = 257;
    c.model.d_model = 64;
    c.model.n_layers = 2;
    c.model.n_heads = 8;
    c.model.n_kv_heads = 4;
    c.model.ffn_dim = 100;
    c.model.max_seq_len = 32;
    c.train.seq_len = 32;
    assert_int_equal(config_validate(&c), DT_OK);
    return c.model;
}

/* counts[r * cols + c] += 1 over a block */
static void paint(int *counts, int64_t cols, const int64_t off[2], const int64_t shape[2]) {
    for (int64_t r = off[0]; r < off[0] + shape[0]; r++)
        for (int64_t c = off[1]; c < off[1] + shape[1]; c++) counts[r * cols + c]++;
}

static void test_pieces_tile_every_tensor(void **state) {
    (void)state;
    dt_model_config m = model_cfg();
    const int tps[] = {1, 2, 4};
    for (int a = 0; a < 3; a++)
        for (int dp = 1; dp <= 4; dp++) {
            int tp = tps[a];
            dt_ckpt_index idx;
            assert_int_equal(ckpt_index_build(&idx, &m, tp, dp, 1), DT_OK);
            dt_param_layout L;
            assert_int_equal(param_layout_init(&L, &m), DT_OK);
            assert_int_equal(idx.n_entries, 3 * L.n_tensors);
            assert_int_equal(idx.n_shards, tp * dp);
            for (int j = 0; j < idx.n_entries; j++) {
                const dt_ckpt_entry *e = &idx.entries[j];
                const dt_tensor_spec *t = &L.tensors[j % L.n_tensors];
                assert_string_equal(strchr(e->path, '/') ? strrchr(e->path, '/') + 1 : "", t->name);
                assert_int_equal(e->global_shape[0], t->shape[0]); /* tp 1 = global */
                assert_int_equal(e->global_shape[1], t->shape[1]);
                int64_t cols = e->global_shape[1], n = e->global_shape[0] * cols;
                int *counts = calloc((size_t)n, sizeof *counts);
                assert_non_null(counts);
                assert_int_equal(e->n_pieces, t->split == DT_SPLIT_NONE ? 1 : tp);
                for (int i = 0; i < e->n_pieces; i++) {
                    const dt_ckpt_piece *p = &e->pieces[i];
                    assert_true(p->shard >= 0 && p->shard < tp * dp);
                    assert_int_equal(p->shard / tp, (j % L.n_tensors) % dp); /* DP writer */
                    assert_int_equal(p->shard % tp, i);                      /* TP rank i */
                    paint(counts, cols, p->off, p->shape);
                }
                for (int64_t k = 0; k < n; k++) assert_int_equal(counts[k], 1);
                char why[256];
                assert_true(ckpt_entry_tiles(e, why, sizeof why));
                free(counts);
            }
            param_layout_free(&L);
            ckpt_index_free(&idx);
        }
}

static void test_tiling_check_catches_gaps_and_overlaps(void **state) {
    (void)state;
    dt_model_config m = model_cfg();
    dt_ckpt_index idx;
    assert_int_equal(ckpt_index_build(&idx, &m, 2, 1, 0), DT_OK);
    const dt_ckpt_entry *q = ckpt_index_find(&idx, "model/layers.0.attn.q_proj.weight");
    assert_non_null(q);
    assert_int_equal(q->n_pieces, 2);
    dt_ckpt_entry e = *q;
    char why[256];
    e.n_pieces = 1; /* a gap */
    assert_false(ckpt_entry_tiles(&e, why, sizeof why));
    assert_non_null(strstr(why, "cover"));
    dt_ckpt_piece two[2] = {q->pieces[0], q->pieces[0]}; /* an overlap */
    e.n_pieces = 2;
    e.pieces = two;
    assert_false(ckpt_entry_tiles(&e, why, sizeof why));
    assert_non_null(strstr(why, "overlap"));
    two[1] = q->pieces[1];
    two[1].off[0] += 1; /* out of bounds */
    assert_false(ckpt_entry_tiles(&e, why, sizeof why));
    assert_null(ckpt_index_find(&idx, "optim/m/norm.weight")); /* built without optimizer */
    ckpt_index_free(&idx);
}

static void test_intersection_against_element_count(void **state) {
    (void)state;
    unsigned seed = 7;
    for (int trial = 0; trial < 2000; trial++) {
        int64_t ao[2], as[2], bo[2], bs[2], oo[2], os[2];
        for (int d = 0; d < 2; d++) {
            ao[d] = rand_r(&seed) % 10;
            as[d] = rand_r(&seed) % 6;
            bo[d] = rand_r(&seed) % 10;
            bs[d] = rand_r(&seed) % 6;
        }
        int64_t n = ckpt_block_intersect(ao, as, bo, bs, oo, os), ref = 0;
        for (int64_t r = 0; r < 20; r++)
            for (int64_t c = 0; c < 20; c++) {
                int in_a = r >= ao[0] && r < ao[0] + as[0] && c >= ao[1] && c < ao[1] + as[1];
                int in_b = r >= bo[0] && r < bo[0] + bs[0] && c >= bo[1] && c < bo[1] + bs[1];
                if (in_a && in_b) {
                    ref++; /* and it lies inside the reported block */
                    assert_true(r >= oo[0] && r < oo[0] + os[0] && c >= oo[1] && c < oo[1] + os[1]);
                }
            }
        assert_int_equal(n, ref);
        assert_int_equal(os[0] * os[1], ref);
    }
}

/* A rank of the loading layout reads its slice from the saving layout's pieces. */
static void test_every_load_layout_is_covered(void **state) {
    (void)state;
    dt_model_config m = model_cfg();
    const int tps[] = {1, 2, 4};
    for (int a = 0; a < 3; a++) {
        dt_ckpt_index idx;
        assert_int_equal(ckpt_index_build(&idx, &m, tps[a], 2, 0), DT_OK);
        for (int b = 0; b < 3; b++)
            for (int r = 0; r < tps[b]; r++) {
                dt_param_layout L;
                assert_int_equal(param_layout_init_tp(&L, &m, r, tps[b]), DT_OK);
                for (int i = 0; i < L.n_tensors; i++) {
                    char key[CKPT_PATH_MAX];
                    snprintf(key, sizeof key, "model/%s", L.tensors[i].name);
                    const dt_ckpt_entry *e = ckpt_index_find(&idx, key);
                    assert_non_null(e);
                    int64_t off[2], shape[2], io[2], is[2], cols = e->global_shape[1];
                    ckpt_tensor_block(&L.tensors[i], off, shape);
                    int *counts = calloc((size_t)(e->global_shape[0] * cols), sizeof *counts);
                    int64_t got = 0;
                    for (int p = 0; p < e->n_pieces; p++)
                        if (ckpt_block_intersect(off, shape, e->pieces[p].off, e->pieces[p].shape,
                                                 io, is) > 0) {
                            paint(counts, cols, io, is);
                            got += is[0] * is[1];
                        }
                    assert_int_equal(got, shape[0] * shape[1]);
                    for (int64_t y = 0; y < e->global_shape[0]; y++)
                        for (int64_t x = 0; x < cols; x++) {
                            int inside = y >= off[0] && y < off[0] + shape[0] && x >= off[1] &&
                                         x < off[1] + shape[1];
                            assert_int_equal(counts[y * cols + x], inside);
                        }
                    free(counts);
                }
                param_layout_free(&L);
            }
        ckpt_index_free(&idx);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pieces_tile_every_tensor),
        cmocka_unit_test(test_tiling_check_catches_gaps_and_overlaps),
        cmocka_unit_test(test_intersection_against_element_count),
        cmocka_unit_test(test_every_load_layout_is_covered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
