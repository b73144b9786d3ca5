/* Malformed configs: each must fail with DT_ERR_INPUT and one message that names the position
 * ("NAME:LINE:COL:", the override, or "NAME:" for a defaulted key) and the key path. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "launch/config.h"
#include "testutil.h"

typedef struct bad_case {
    const char *doc;
    const char *override; /* NULL: none */
    const char *where;    /* expected prefix of the message */
    const char *key;      /* key path that must follow it */
    const char *says;     /* a phrase of the "expected ..., got ..." part */
} bad_case;

static const bad_case cases[] = {
    /* unknown keys and sections */
    {"model:\n  d_model: 64\n  d_modle: 64\n", NULL, "t.yaml:3:3: ", "model.d_modle",
     "did you mean model.d_model"},
    {"modle:\n  d_model: 64\n", NULL, "t.yaml:1:1: ", "modle", "did you mean model"},
    {"model:\n  lr: 1\n", NULL, "t.yaml:2:3: ", "model.lr", "did you mean optim.lr"},
    {"launch:\n  slurm:\n    gpus: 4\n", NULL, "t.yaml:3:5: ", "launch.slurm.gpus", "unknown"},
    /* wrong types */
    {"optim:\n  lr: abc\n", NULL, "t.yaml:2:7: ", "optim.lr", "expected a number, got 'abc'"},
    {"optim:\n  lr: '3e-4'\n", NULL, "t.yaml:2:7: ", "optim.lr", "got the string '3e-4'"},
    {"model:\n  n_layers: [1, 2]\n", NULL, "t.yaml:2:13: ", "model.n_layers", "got a list"},
    {"model:\n  n_layers:\n    a: 1\n", NULL, "t.yaml:3:5: ", "model.n_layers", "got a mapping"},
    {"model:\n  n_layers: 2.5\n", NULL, "t.yaml:2:13: ", "model.n_layers",
     "expected an integer, got '2.5'"},
    {"model:\n  tie_embeddings: yes\n", NULL, "t.yaml:2:19: ", "model.tie_embeddings",
     "true or false"},
    {"model:\n  n_layers:\n", NULL, "t.yaml:2:12: ", "model.n_layers", "got nothing"},
    {"model:\n  d_model: 64\n  d_model: 64\n", NULL, "t.yaml:3:3: ", "model.d_model",
     "duplicate (first at line 2)"},
    {"train: [1, 2]\n", NULL, "t.yaml:1:8: ", "train", "expected a mapping"},
    {"- 1\n", NULL, "t.yaml:1:1: ", "(top level)", "expected a mapping of sections"},
    {"model:\n  ffn_dim: *x\n", NULL, "t.yaml:2:12: ", "model.ffn_dim", "got an alias"},
    {"optim:\n  betas: [0.9, [0.9]]\n", NULL, "t.yaml:2:16: ", "optim.betas[1]",
     "got a list inside the list"},
    {"optim:\n  betas: [0.9, x]\n", NULL, "t.yaml:2:16: ", "optim.betas[1]", "got 'x'"},
    {"model:\n  arch: mamba\n", NULL, "t.yaml:2:9: ", "model.arch",
     "one of diff, diff_v2, transformer"},
    {"optim:\n  decay: step\n", NULL, "t.yaml:2:10: ", "optim.decay", "linear, cosine, constant"},
    {"train:\n  seed: -5\n", NULL, "t.yaml:2:9: ", "train.seed", "non-negative integer"},
    {"parallel:\n  dp: many\n", NULL, "t.yaml:2:7: ", "parallel.dp", "auto or an integer"},
    {"model:\n  lambda_init: [0.5]\n", NULL, "t.yaml:2:16: ", "model.lambda_init",
     "schedule or a number, got a list"},
    /* syntax errors: position of the problem, key being read */
    {"optim:\n  betas: [0.9, 0.95\n  eps: 1e-8\n", NULL, "t.yaml:3:6: ", "optim.betas",
     "syntax error"},
    {"model:\n  d_model: 64\n n_layers: 2\n", NULL, "t.yaml:3:2: ", "(top level)",
     "did not find expected key"},
    {"a: 1\n---\nb: 2\n", NULL, "t.yaml:1:1: ", "a", "unknown"},
    /* out of range */
    {"model:\n  n_layers: 0\n", NULL, "t.yaml:2:13: ", "model.n_layers", ">= 1, got 0"},
    {"optim:\n  lr: 0\n  min_lr: 0\n", NULL, "t.yaml:2:7: ", "optim.lr", "> 0, got 0"},
    {"optim:\n  betas: [1.0, 0.9]\n", NULL, "t.yaml:2:10: ", "optim.betas", "in [0, 1), got 1"},
    {"optim:\n  grad_clip: -1\n", NULL, "t.yaml:2:14: ", "optim.grad_clip", ">= 0, got -1"},
    {"parallel:\n  zero: 3\n", NULL, "t.yaml:2:9: ", "parallel.zero", "0, 1 or 2"},
    {"model:\n  norm_eps: 0\n", NULL, "t.yaml:2:13: ", "model.norm_eps", "> 0"},
    {"model:\n  lambda_init: 1\n", NULL, "t.yaml:2:16: ", "model.lambda_init", "[0, 1)"},
    {"model:\n  lambda_init: -0.1\n", NULL, "t.yaml:2:16: ", "model.lambda_init", "[0, 1)"},
    {"log:\n  every: 0\n", NULL, "t.yaml:2:10: ", "log.every", ">= 1"},
    /* inconsistent sizes: reported at a key that was set (override > file > default) */
    {"model:\n  d_model: 100\n", NULL, "t.yaml:2:12: ", "model.d_model", "2*n_heads"},
    {"model:\n  n_heads: 3\n", NULL, "t.yaml:2:12: ", "model.n_heads", "2*n_heads"},
    {"model:\n  d_model: 120\n  n_heads: 4\n", NULL, "t.yaml:2:12: ", "model.d_model",
     "even head dim"},
    {"model:\n  arch: transformer\n  d_model: 96\n  n_heads: 32\n", NULL, "t.yaml:3:12: ",
     "model.d_model", "even head dim"},
    {"model:\n  d_model: 256\n  n_heads: 4\n  n_kv_heads: 3\n", NULL, "t.yaml:4:15: ",
     "model.n_kv_heads", "divide n_heads"},
    {"model:\n  n_kv_heads: 4\n", NULL, "t.yaml:2:15: ", "model.n_kv_heads", "divide n_heads"},
    {"train:\n  seq_len: 257\n", NULL, "t.yaml:2:12: ", "train.seq_len", "max_seq_len"},
    {"train:\n  micro_batch: 3\n", NULL, "t.yaml:2:16: ", "train.micro_batch",
     "global_batch divisible by micro_batch"},
    {"parallel:\n  dp: 2\n", NULL, "t.yaml:2:7: ", "parallel.dp", "micro_batch*dp"},
    {"parallel:\n  tp: 2\nmodel:\n  n_heads: 1\n  d_model: 64\n", NULL, "t.yaml:2:7: ",
     "parallel.tp", "tp to divide n_kv_heads"},
    {"optim:\n  min_lr: 1e-3\n", NULL, "t.yaml:2:11: ", "optim.min_lr", "min_lr <= lr"},
    {"checkpoint:\n  every: 5\n", NULL, "t.yaml:2:10: ", "checkpoint.every", "checkpoint.dir"},
    {"launch:\n  nodes: 2\n", NULL, "t.yaml:2:10: ", "launch.nodes", "scheduler local"},
    /* overrides: the message names the override instead of a position */
    {"", "optim.lr=abc", "override 'optim.lr=abc': ", "optim.lr",
     "expected a number, got 'abc'"},
    {"", "optim.betas=[0.9,0.99", "override 'optim.betas=[0.9,0.99': ", "optim.betas",
     "syntax error"},
    {"", "optim.betas=[0.9,0.99,0.999]", "override 'optim.betas=[0.9,0.99,0.999]': ",
     "optim.betas", "got a list of 3"},
    {"", "model.d_modl=64", "override 'model.d_modl=64': ", "model.d_modl",
     "did you mean model.d_model"},
    {"", "model=64", "override 'model=64': ", "model", "got a section"},
    {"", "optim.lr", "override 'optim.lr': ", "", "key.path=value"},
    {"model:\n  d_model: 128\n", "model.n_heads=3", "override 'model.n_heads=3': ",
     "model.n_heads", "2*n_heads"},
    {"train:\n  seq_len: 128\n", "model.max_seq_len=64", "override 'model.max_seq_len=64': ",
     "model.max_seq_len", "seq_len <= model.max_seq_len"},
    {"", "data.train=[a, [b]]", "override 'data.train=[a, [b]]': ", "data.train[1]",
     "inside the list"},
    {"", "model.subln=1", "override 'model.subln=1': ", "model.subln",
     "expected true, false or scalar, got '1'"},
    /* the ablation switches (model.subln: scalar, model.lambda: a frozen constant) */
    {"model:\n  subln: maybe\n", NULL, "t.yaml:2:10: ", "model.subln",
     "expected true, false or scalar, got 'maybe'"},
    {"model:\n  subln: 'scalar'\n", NULL, "t.yaml:2:10: ", "model.subln", "true, false or scalar"},
    {"model:\n  lambda: fast\n", NULL, "t.yaml:2:11: ", "model.lambda",
     "expected learnable or a number, got 'fast'"},
    {"model:\n  lambda: .nan\n", NULL, "t.yaml:2:11: ", "model.lambda", "learnable or a number"},
    {"", "model.lambda=[1]", "override 'model.lambda=[1]': ", "model.lambda",
     "learnable or a number, got a list"},
    {"model:\n  arch: diff_v2\n  lambda: 0.5\n", NULL, "t.yaml:3:11: ", "model.lambda",
     "expected learnable for arch diff_v2"},
};

static void check_message(const char *msg, const char *where, const char *key, const char *says,
                          size_t i) {
    char prefix[512];
    snprintf(prefix, sizeof prefix, "%s%s%s", where, key, key[0] ? ": " : "");
    if (strncmp(msg, prefix, strlen(prefix)) != 0 || !strstr(msg, says))
        fail_msg("case %zu: message\n  %s\nexpected to start with\n  %s\nand to contain\n  %s", i,
                 msg, prefix, says);
}

static void test_bad_table(void **state) {
    (void)state;
    dt_config *c = calloc(1, sizeof *c);
    assert_true(sizeof cases / sizeof cases[0] >= 12);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *ov = (char *)cases[i].override;
        dt_status st = config_load_string(c, "t.yaml", cases[i].doc, ov ? 1 : 0, ov ? &ov : NULL);
        if (st != DT_ERR_INPUT)
            fail_msg("case %zu (%s%s): status %d, expected %d", i, cases[i].doc,
                     ov ? ov : "", st, DT_ERR_INPUT);
        check_message(config_last_error(), cases[i].where, cases[i].key, cases[i].says, i);
    }
    free(c);
}

/* A struct built in code has no positions: config_validate names the source alone. */
static void test_validate_defaulted(void **state) {
    (void)state;
    dt_config c;
    config_defaults(&c);
    c.model.d_model = 100;
    assert_int_equal(config_validate(&c), DT_ERR_INPUT);
    check_message(config_last_error(), "config: ", "model.d_model", "2*n_heads", 0);
    snprintf(c.source, sizeof c.source, "run.yaml");
    c.model.d_model = 128;
    c.optim.eps = 0;
    assert_int_equal(config_validate(&c), DT_ERR_INPUT);
    check_message(config_last_error(), "run.yaml: ", "optim.eps", "> 0", 0);
    /* NaN must fail range checks rather than slip through comparisons. */
    c.optim.eps = 1e-8;
    c.optim.lr = NAN;
    assert_int_equal(config_validate(&c), DT_ERR_INPUT);
    check_message(config_last_error(), "run.yaml: ", "optim.lr", "> 0", 0);
    /* An out-of-range enum set in code. */
    c.optim.lr = 1e-3;
    c.train.precision = (dt_precision)7;
    assert_int_equal(config_validate(&c), DT_ERR_INPUT);
    check_message(config_last_error(), "run.yaml: ", "train.precision", "fp32, bf16", 0);
}

/* The message goes to stderr as exactly one line, with dt_error's prefix. */
static void test_stderr_line(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    assert_non_null(dir);
    char path[4096];
    snprintf(path, sizeof path, "%s/stderr.txt", dir);
    fflush(stderr);
    int saved = dup(fileno(stderr));
    assert_true(saved >= 0);
    assert_non_null(freopen(path, "w", stderr));
    dt_config c;
    dt_status st = config_load_string(&c, "s.yaml", "optim:\n  lr: x\n", 0, NULL);
    fflush(stderr);
    assert_true(dup2(saved, fileno(stderr)) >= 0);
    close(saved);
    clearerr(stderr);
    assert_int_equal(st, DT_ERR_INPUT);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char buf[4096] = "";
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    assert_string_equal(buf,
                        "difftrain: error: s.yaml:2:7: optim.lr: expected a number, got 'x'\n");
    tu_rmdir(dir);
    free(dir);
}

/* Loading a file that is not there is a usage error naming the file. */
static void test_missing_file(void **state) {
    (void)state;
    dt_config c;
    assert_int_equal(config_load(&c, "/nonexistent/dir/x.yaml", 0, NULL), DT_ERR_INPUT);
    assert_non_null(strstr(config_last_error(), "/nonexistent/dir/x.yaml: "));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_table),
        cmocka_unit_test(test_validate_defaulted),
        cmocka_unit_test(test_stderr_line),
        cmocka_unit_test(test_missing_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
