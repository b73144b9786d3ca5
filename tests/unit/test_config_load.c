/* Config loading: defaults, a full document, overrides, number forms, derived sizes, and the
 * print -> load round trip (byte-identical structs). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "launch/config.h"
#include "launch/config_impl.h"
#include "testutil.h"
#include "util/rng.h"

/* Two structs are compared with memcmp: both are zeroed first so that padding agrees, and the
 * loader zero-fills the unused tail of every string buffer. This reports the first difference. */
static void assert_same_config(const dt_config *a, const dt_config *b, const char *what) {
    const unsigned char *pa = (const void *)a, *pb = (const void *)b;
    for (size_t i = 0; i < sizeof *a; i++) {
        if (pa[i] == pb[i]) continue;
        const char *key = "(padding or source)";
        for (int k = 0; k < cfg_n_keys; k++) {
            size_t lo = cfg_keys[k].off, hi = lo + cfg_keys[k].size;
            if (cfg_keys[k].kind == CFG_PATHS || cfg_keys[k].kind == CFG_BETAS ||
                cfg_keys[k].kind == CFG_LAMBDA)
                hi = cfg_keys[k].off2 + (cfg_keys[k].kind == CFG_PATHS
                                             ? sizeof(char[DT_MAX_PATHS][DT_PATH_MAX])
                                             : sizeof(double));
            if (i >= lo && i < hi) key = cfg_keys[k].path;
        }
        fail_msg("%s: configs differ at byte %zu (%s)", what, i, key);
    }
}

static char *print_to_string(const dt_config *cfg) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    config_print(cfg, f);
    fclose(f);
    return buf;
}

/* print, load the text back under the same name, compare bytes. */
static void assert_round_trip(const dt_config *cfg, const char *what) {
    char *text = print_to_string(cfg);
    dt_config *back = calloc(1, sizeof *back);
    assert_non_null(back);
    dt_status st = config_load_string(back, cfg->source, text, 0, NULL);
    if (st != DT_OK) fail_msg("%s: printed config does not load: %s\n%s", what,
                              config_last_error(), text);
    assert_same_config(cfg, back, what);
    char *again = print_to_string(back);
    assert_string_equal(text, again); /* print is a function of the struct alone */
    free(again);
    free(back);
    free(text);
}

static void test_defaults_valid(void **state) {
    (void)state;
    dt_config *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
    config_defaults(a);
    assert_int_equal(config_validate(a), DT_OK);
    /* The values the task fixed for the defaults. */
    assert_int_equal(a->model.arch, DT_ARCH_DIFF);
    assert_int_equal(a->model.vocab_size, 257);
    assert_int_equal(a->model.d_model, 128);
    assert_int_equal(a->model.n_kv_heads, a->model.n_heads);
    assert_int_equal(a->model.ffn_dim, 352);
    assert_int_equal(a->model.lambda_init_schedule, 1);
    assert_int_equal(a->parallel.dp, 0);
    assert_int_equal(a->train.seed, 1337);
    assert_int_equal(a->optim.decay, DT_DECAY_COSINE);
    assert_string_equal(a->checkpoint.resume, "auto");
    assert_int_equal(a->launch.scheduler, DT_SCHED_LOCAL);
    /* An empty document, and one of only comments, are the defaults. */
    assert_int_equal(config_load_string(b, "", "", 0, NULL), DT_OK);
    assert_same_config(a, b, "empty document");
    memset(b, 0, sizeof *b);
    assert_int_equal(config_load_string(b, "", "# nothing\n\nmodel:\n", 0, NULL), DT_OK);
    assert_same_config(a, b, "comments and an empty section");
    assert_round_trip(a, "defaults");
    free(a);
    free(b);
}

static const char *full_doc = "model:\n"
                              "  arch: transformer\n"
                              "  vocab_size: 1000\n"
                              "  d_model: 96\n"
                              "  n_layers: 3\n"
                              "  n_heads: 6\n"
                              "  n_kv_heads: 3\n"
                              "  ffn_dim: 264\n"
                              "  max_seq_len: 64\n"
                              "  rope_theta: 1.5e+2\n"
                              "  tie_embeddings: true\n"
                              "  norm_eps: 1e-6\n"
                              "  lambda_init: 0.5\n"
                              "  lambda: 1.0\n" /* ignored by the transformer, kept */
                              "  subln: scalar\n"
                              "  init_std: 0.01\n"
                              "parallel: {tp: 3, dp: 2, zero: 2, overlap_grad_reduce: false}\n"
                              "train:\n"
                              "  seq_len: 32\n"
                              "  micro_batch: 2\n"
                              "  global_batch: 2e1\n" /* exact integer in exponent form */
                              "  steps: 7\n"
                              "  seed: 18446744073709551615\n"
                              "  precision: bf16\n"
                              "  device: cuda\n"
                              "  recompute: true\n"
                              "  val_every: 5\n"
                              "  val_batches: 3\n"
                              "  threads: 2\n"
                              "optim:\n"
                              "  lr: 2e-4\n"
                              "  min_lr: 0\n"
                              "  warmup_steps: 0\n"
                              "  decay: linear\n"
                              "  betas: [0.8, 0.99]\n"
                              "  eps: 1E-10\n"
                              "  weight_decay: 0\n"
                              "  grad_clip: 0.5\n"
                              "data:\n"
                              "  train: ['a/*.bin', \"b c.bin\"]\n"
                              "  val: v.bin\n"
                              "checkpoint:\n"
                              "  dir: ck\n"
                              "  every: 4\n"
                              "  keep_last: 0\n"
                              "  resume: never\n"
                              "  init_from: base/step_00000010\n"
                              "log:\n"
                              "  every: 2\n"
                              "  metrics: \"m: 1.jsonl\"\n"
                              "launch:\n"
                              "  scheduler: slurm\n"
                              "  nodes: 2\n"
                              "  procs_per_node: 4\n"
                              "  hostfile: hosts\n"
                              "  slurm:\n"
                              "    partition: p\n"
                              "    account: acc\n"
                              "    time: '01:00:00'\n"
                              "    job_name: '123'\n"
                              "    output: out/%j.log\n"
                              "    gpus_per_node: 4\n"
                              "    cpus_per_task: 16\n";

static void test_full_document(void **state) {
    (void)state;
    dt_config *c = calloc(1, sizeof *c), *d = calloc(1, sizeof *d);
    assert_int_equal(config_load_string(c, "full.yaml", full_doc, 0, NULL), DT_OK);
    assert_int_equal(c->model.arch, DT_ARCH_TRANSFORMER);
    assert_int_equal(c->model.vocab_size, 1000);
    assert_int_equal(c->model.n_kv_heads, 3);
    assert_true(c->model.rope_theta == 150.0);
    assert_true(c->model.norm_eps == 1e-6);
    assert_int_equal(c->model.lambda_init_schedule, 0);
    assert_true(c->model.lambda_init == 0.5);
    assert_int_equal(c->model.lambda_learnable, 0);
    assert_true(c->model.lambda_const == 1.0);
    assert_int_equal(c->model.subln, DT_SUBLN_SCALAR);
    assert_int_equal(c->parallel.tp, 3);
    assert_int_equal(c->parallel.dp, 2);
    assert_int_equal(c->parallel.overlap_grad_reduce, 0);
    assert_int_equal(c->train.global_batch, 20);
    assert_true(c->train.seed == UINT64_MAX);
    assert_int_equal(c->train.precision, DT_PRECISION_BF16);
    assert_int_equal(c->train.device, DT_DEVICE_CUDA);
    assert_int_equal(c->train.recompute, 1);
    assert_true(c->optim.lr == 2e-4);
    assert_true(c->optim.beta1 == 0.8 && c->optim.beta2 == 0.99);
    assert_true(c->optim.eps == 1e-10);
    assert_int_equal(c->data.n_train, 2);
    assert_string_equal(c->data.train[0], "a/*.bin");
    assert_string_equal(c->data.train[1], "b c.bin");
    assert_int_equal(c->data.n_val, 1);
    assert_string_equal(c->data.val[0], "v.bin");
    assert_string_equal(c->checkpoint.init_from, "base/step_00000010");
    assert_string_equal(c->log.metrics, "m: 1.jsonl");
    assert_int_equal(c->launch.scheduler, DT_SCHED_SLURM);
    assert_string_equal(c->launch.slurm_time, "01:00:00");
    assert_string_equal(c->launch.slurm_job_name, "123");
    assert_int_equal(c->launch.slurm_cpus_per_task, 16);
    assert_string_equal(c->source, "full.yaml");

    /* Every key of the table must be set to a non-default value by this document, or the round
     * trip below would not prove that print writes that key. */
    config_defaults(d);
    for (int k = 0; k < cfg_n_keys; k++) {
        const cfg_key *key = &cfg_keys[k];
        int differs = memcmp((char *)c + key->off, (char *)d + key->off, key->size) != 0;
        if (key->kind == CFG_BETAS || key->kind == CFG_LAMBDA || key->kind == CFG_PATHS)
            differs |= memcmp((char *)c + key->off2, (char *)d + key->off2, sizeof(double)) != 0;
        if (!differs) fail_msg("full_doc leaves %s at its default", key->path);
    }
    assert_round_trip(c, "full document");
    free(c);
    free(d);
}

/* The ablation switches: model.subln true | false | scalar, model.lambda learnable | a number
 * (frozen; any finite value, 1.0 and negatives included), booleans still working, and the
 * printed form reading back. */
static void test_ablation_switches(void **state) {
    (void)state;
    dt_config *c = calloc(1, sizeof *c);
    assert_int_equal(config_load_string(c, "a.yaml", "", 0, NULL), DT_OK);
    assert_int_equal(c->model.subln, DT_SUBLN_ON);
    assert_int_equal(c->model.lambda_learnable, 1);
    static const struct {
        const char *doc;
        int subln, learnable;
        double lambda;
    } ok[] = {
        {"model: {subln: scalar}", DT_SUBLN_SCALAR, 1, 0.0},
        {"model: {subln: false, lambda: 1.0}", DT_SUBLN_OFF, 0, 1.0},
        {"model: {subln: True, lambda: -0.25}", DT_SUBLN_ON, 0, -0.25},
        {"model: {subln: scalar, lambda: 0}", DT_SUBLN_SCALAR, 0, 0.0},
        {"model: {lambda: learnable}", DT_SUBLN_ON, 1, 0.0},
        {"model: {arch: transformer, d_model: 64, n_heads: 4, lambda: 0.5}", DT_SUBLN_ON, 0,
         0.5},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        if (config_load_string(c, "a.yaml", ok[i].doc, 0, NULL) != DT_OK)
            fail_msg("%s: %s", ok[i].doc, config_last_error());
        assert_int_equal(c->model.subln, ok[i].subln);
        assert_int_equal(c->model.lambda_learnable, ok[i].learnable);
        assert_true(c->model.lambda_const == ok[i].lambda);
        assert_round_trip(c, ok[i].doc);
    }
    char *ov[] = {"model.lambda=0.75", "model.subln=scalar", "model.lambda=learnable"};
    assert_int_equal(config_load_string(c, "a.yaml", "", 2, ov), DT_OK);
    assert_int_equal(c->model.lambda_learnable, 0);
    assert_true(c->model.lambda_const == 0.75);
    assert_int_equal(c->model.subln, DT_SUBLN_SCALAR);
    assert_int_equal(config_load_string(c, "a.yaml", "model: {lambda: 2}", 1, ov + 2), DT_OK);
    assert_int_equal(c->model.lambda_learnable, 1);
    assert_true(c->model.lambda_const == 0.0); /* canonical, so equal configs are byte-equal */
    /* diff_v2 has no scalar lambda to freeze */
    assert_int_equal(config_load_string(c, "a.yaml", "model: {arch: diff_v2, lambda: 0.5}", 0,
                                        NULL),
                     DT_ERR_INPUT);
    assert_non_null(strstr(config_last_error(), "model.lambda"));
    free(c);
}

static void test_overrides(void **state) {
    (void)state;
    dt_config *c = calloc(1, sizeof *c);
    char *ov[] = {"optim.lr=1e-3",       "optim.betas=[0.9,0.99]", "model.n_heads=4",
                  "data.train=x.bin",    "data.val=[v1, 'v 2']",  "parallel.dp=auto",
                  "model.lambda_init=0", "checkpoint.dir=",       "train.seed=1e3",
                  "optim.lr=2e-3"}; /* the later of two overrides of a key wins */
    const char *doc = "model:\n  n_heads: 2\n  d_model: 128\nparallel:\n  dp: 1\n"
                      "checkpoint:\n  dir: somewhere\n";
    assert_int_equal(config_load_string(c, "o.yaml", doc, 10, ov), DT_OK);
    assert_true(c->optim.lr == 2e-3);
    assert_true(c->optim.beta1 == 0.9 && c->optim.beta2 == 0.99);
    assert_int_equal(c->model.n_heads, 4);
    /* n_kv_heads was never given, so it follows the final n_heads. */
    assert_int_equal(c->model.n_kv_heads, 4);
    assert_int_equal(c->data.n_train, 1);
    assert_string_equal(c->data.train[0], "x.bin");
    assert_int_equal(c->data.n_val, 2);
    assert_string_equal(c->data.val[1], "v 2");
    assert_int_equal(c->parallel.dp, 0);
    assert_int_equal(c->model.lambda_init_schedule, 0);
    assert_true(c->model.lambda_init == 0.0);
    assert_string_equal(c->checkpoint.dir, "");
    assert_true(c->train.seed == 1000);

    /* An explicit n_kv_heads stays; 0 means "= n_heads". */
    char *ov2[] = {"model.n_kv_heads=1", "model.n_heads=4"};
    assert_int_equal(config_load_string(c, "o.yaml", "", 2, ov2), DT_OK);
    assert_int_equal(c->model.n_kv_heads, 1);
    assert_int_equal(config_load_string(c, "o.yaml", "model: {n_heads: 4, n_kv_heads: 0}", 0,
                                        NULL),
                     DT_OK);
    assert_int_equal(c->model.n_kv_heads, 4);
    free(c);
}

static void test_number_forms(void **state) {
    (void)state;
    dt_config *c = calloc(1, sizeof *c);
    /* Each form against the value C's own literal gives (an independent parse). */
    struct {
        const char *text;
        double want;
    } nums[] = {{"3e-4", 3e-4},   {"1.5e+2", 1.5e+2}, {"1e5", 1e5},     {"+.5", 0.5},
                {"2.", 2.0},      {"0.1", 0.1},       {"-0.0", -0.0},   {"1E-3", 1e-3},
                {"12", 12.0},     {"0.30000000000000004", 0.30000000000000004}};
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        char ov[64];
        snprintf(ov, sizeof ov, "optim.grad_clip=%s", nums[i].text);
        char *p = ov;
        dt_status st = config_load_string(c, "n", "", 1, &p);
        if (st != DT_OK) fail_msg("%s: %s", nums[i].text, config_last_error());
        if (memcmp(&c->optim.grad_clip, &nums[i].want, sizeof(double)) != 0)
            fail_msg("%s parsed as %.17g", nums[i].text, c->optim.grad_clip);
    }
    /* Integer keys take exact integers in any number form, nothing else. */
    struct {
        const char *text;
        int ok, want;
    } ints[] = {{"7", 1, 7},   {"1e2", 1, 100}, {"4.0", 1, 4},  {"+3", 1, 3},
                {"2.5", 0, 0}, {"1e-1", 0, 0},  {"0x10", 0, 0}, {"'7'", 0, 0},
                {"7 ", 1, 7},  {"seven", 0, 0}, {"true", 0, 0}, {"2147483648", 0, 0}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        char ov[64];
        snprintf(ov, sizeof ov, "train.steps=%s", ints[i].text);
        char *p = ov;
        dt_status st = config_load_string(c, "n", "", 1, &p);
        if (ints[i].ok != (st == DT_OK))
            fail_msg("train.steps=%s: status %d (%s)", ints[i].text, st, config_last_error());
        if (ints[i].ok) assert_int_equal(c->train.steps, ints[i].want);
    }
    free(c);
}

/* Random doubles in every double field: print must use a form that reads back exactly. */
static void test_round_trip_random(void **state) {
    (void)state;
    dt_config *c = calloc(1, sizeof *c);
    uint64_t key = rng_key(7, "config-round-trip");
    for (int it = 0; it < 200; it++) {
        memset(c, 0, sizeof *c);
        config_defaults(c);
        snprintf(c->source, sizeof c->source, "random-%d", it);
        double u[10];
        for (int j = 0; j < 10; j++) u[j] = rng_uniform(key, (uint64_t)(it * 10 + j));
        c->model.rope_theta = 1 + 1e6 * u[0];
        c->model.norm_eps = 1e-12 + u[1] * 1e-3;
        c->model.lambda_init_schedule = it % 2;
        c->model.lambda_init = it % 2 ? 0.0 : u[2];
        c->model.init_std = u[3] + 1e-300;
        c->model.lambda_learnable = it % 3 == 0;
        c->model.lambda_const = it % 3 == 0 ? 0.0 : 4 * u[2] - 2; /* any finite number */
        c->model.subln = it % 3;
        c->optim.lr = pow(10.0, -8 * u[4]);
        c->optim.min_lr = c->optim.lr * u[5];
        c->optim.beta1 = u[6];
        c->optim.beta2 = u[7];
        c->optim.eps = 1e-300 * (1 + u[8]); /* near the bottom of the exponent range */
        c->optim.weight_decay = u[9] * 1e300;
        c->optim.grad_clip = (double)it;
        c->train.seed = rng_mix64((uint64_t)it);
        assert_int_equal(config_validate(c), DT_OK);
        assert_round_trip(c, "random doubles");
    }
    free(c);
}

static void test_derived(void **state) {
    (void)state;
    dt_model_config m;
    dt_config c;
    config_defaults(&c);
    m = c.model;
    m.d_model = 3072, m.n_heads = 12; /* the paper's 3B: d = 128 */
    assert_int_equal(config_head_dim(&m), 128);
    m.arch = DT_ARCH_DIFF_V2;
    assert_int_equal(config_head_dim(&m), 128);
    m.arch = DT_ARCH_TRANSFORMER, m.n_heads = 24; /* its baseline: twice the heads */
    assert_int_equal(config_head_dim(&m), 128);
    /* SPEC: 0.200, 0.356, 0.471, 0.556 for layers 0..3 (0-based), tending to 0.8; 5e-4 is
     * half a unit of the third decimal that SPEC rounds to. */
    const double spec[4] = {0.200, 0.356, 0.471, 0.556};
    m.lambda_init_schedule = 1;
    for (int l = 0; l < 4; l++)
        assert_true(tu_close(config_lambda_init(&m, l), spec[l], 5e-4, 0));
    assert_true(tu_close(config_lambda_init(&m, 100), 0.8, 1e-12, 0));
    m.lambda_init_schedule = 0, m.lambda_init = 0.5;
    assert_true(config_lambda_init(&m, 3) == 0.5);
    assert_string_equal(config_arch_name(DT_ARCH_DIFF), "diff");
    assert_string_equal(config_arch_name(DT_ARCH_DIFF_V2), "diff_v2");
    assert_string_equal(config_arch_name(DT_ARCH_TRANSFORMER), "transformer");
}

static void test_require_data(void **state) {
    (void)state;
    dt_config c;
    assert_int_equal(config_load_string(&c, "plan.yaml", "", 0, NULL), DT_OK);
    assert_int_equal(config_require_data(&c), DT_ERR_INPUT);
    assert_non_null(strstr(config_last_error(), "plan.yaml: data.train:"));
    char *ov[] = {"data.train=t.bin", "train.val_every=10"};
    assert_int_equal(config_load_string(&c, "plan.yaml", "", 2, ov), DT_OK);
    assert_int_equal(config_require_data(&c), DT_ERR_INPUT);
    assert_non_null(strstr(config_last_error(), "data.val"));
    assert_int_equal(config_load_string(&c, "plan.yaml", "", 1, ov), DT_OK);
    assert_int_equal(config_require_data(&c), DT_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_valid),  cmocka_unit_test(test_full_document),
        cmocka_unit_test(test_overrides),       cmocka_unit_test(test_number_forms),
        cmocka_unit_test(test_round_trip_random), cmocka_unit_test(test_derived),
        cmocka_unit_test(test_require_data),    cmocka_unit_test(test_ablation_switches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
