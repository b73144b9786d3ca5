/* index.h5 round trip (ckpt/ckpt_index.h): an index built for tp=2 dp=2 with metadata and the
 * resolved config is written and read back field by field; the stored config loads back to the
 * same model config (ckpt_model_config_agrees), and a changed key is named; a file that is not
 * an index is refused naming the missing attribute. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <hdf5.h>

#include "ckpt/ckpt.h"
#include "ckpt/ckpt_index.h"
#include "launch/config.h"
#include "testutil.h"
#include "util/alloc.h"

static void test_round_trip(void **state) {
    (void)state;
    dt_config c;
    config_defaults(&c);
    c.model.n_heads = 4;
    c.model.n_kv_heads = 2;
    c.model.ffn_dim = 96;
    assert_int_equal(config_validate(&c), DT_OK);
    dt_ckpt_index w, r;
    assert_int_equal(ckpt_index_build(&w, &c.model, 2, 2, 1), DT_OK);
    w.meta = (dt_ckpt_meta){CKPT_FORMAT_VERSION, 7, 28, 28 * 128, 1337, 28, 7, 2, 2, 1, 4};
    size_t len = 0;
    FILE *mem = open_memstream(&w.config_yaml, &len);
    config_print(&c, mem);
    fclose(mem);
    char *dir = tu_tmpdir(), path[512];
    snprintf(path, sizeof path, "%s/index.h5", dir);
    assert_int_equal(ckpt_index_write(&w, path), DT_OK);
    assert_int_equal(ckpt_index_read(&r, path), DT_OK);
    assert_memory_equal(&r.meta, &w.meta, sizeof r.meta);
    assert_string_equal(r.config_yaml, w.config_yaml);
    assert_int_equal(r.n_shards, 4);
    assert_int_equal(r.n_entries, w.n_entries);
    for (int i = 0; i < w.n_entries; i++) {
        const dt_ckpt_entry *a = &w.entries[i], *b = &r.entries[i];
        assert_string_equal(a->path, b->path);
        assert_int_equal(a->ndim, b->ndim);
        assert_int_equal(a->global_shape[0], b->global_shape[0]);
        assert_int_equal(a->global_shape[1], b->global_shape[1]);
        assert_int_equal(a->n_pieces, b->n_pieces);
        assert_memory_equal(a->pieces, b->pieces, sizeof *a->pieces * (size_t)a->n_pieces);
    }
    dt_config back;
    assert_int_equal(config_load_string(&back, "stored", r.config_yaml, 0, NULL), DT_OK);
    char why[256];
    assert_true(ckpt_model_config_agrees(&back.model, &c.model, 0, why, sizeof why));
    c.model.d_model = 256;
    assert_false(ckpt_model_config_agrees(&back.model, &c.model, 0, why, sizeof why));
    assert_non_null(strstr(why, "model.d_model is 128 in the checkpoint and 256 now"));
    assert_true(ckpt_model_config_agrees(&back.model, &c.model, 1, why, sizeof why));
    c.model.arch = DT_ARCH_TRANSFORMER;
    assert_false(ckpt_model_config_agrees(&back.model, &c.model, 1, why, sizeof why));
    assert_non_null(strstr(why, "model.arch is diff in the checkpoint and transformer now"));
    ckpt_index_free(&w);
    ckpt_index_free(&r);

    /* an HDF5 file that is no index */
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(f >= 0);
    H5Fclose(f);
    assert_int_equal(ckpt_index_read(&r, path), DT_ERR_INPUT);
    tu_rmdir(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_round_trip)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
