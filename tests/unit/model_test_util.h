/* Small model configs shared by the whole-model tests (header-only: static functions). */
#ifndef DT_MODEL_TEST_UTIL_H
#define DT_MODEL_TEST_UTIL_H

#include <stdint.h>
#include <string.h>

#include "launch/config.h"
#include "util/rng.h"

typedef struct model_case {
    const char *label;
    dt_arch arch;
    int n_heads, n_kv_heads;
    int tie;
    int subln;           /* dt_subln: off, on (RMSNorm + gain) or scalar (one gain per head) */
    double lambda_const; /* lambda_init: < 0: the per-layer schedule */
    int lambda_frozen;   /* 1: model.lambda is the number below (no lambda vectors) */
    double lambda;
} model_case;

/* Every architecture, GQA with n_rep 2, tied and untied embeddings, subln off / scalar, constant
 * lambda_init, frozen lambda (1.0: the plain difference; 0.3 with GQA and subln scalar). */
static const model_case model_cases[] = {
    {"diff", DT_ARCH_DIFF, 2, 2, 0, 1, -1, 0, 0},
    {"diff gqa n_rep=2 tied", DT_ARCH_DIFF, 2, 1, 1, 1, -1, 0, 0},
    {"diff no subln, lambda_init 0.5", DT_ARCH_DIFF, 2, 2, 0, 0, 0.5, 0, 0},
    {"diff lambda frozen 1.0", DT_ARCH_DIFF, 2, 2, 0, 1, -1, 1, 1.0},
    {"diff subln scalar", DT_ARCH_DIFF, 2, 2, 0, DT_SUBLN_SCALAR, -1, 0, 0},
    {"diff gqa subln scalar, lambda 0.3", DT_ARCH_DIFF, 2, 1, 1, DT_SUBLN_SCALAR, 0.5, 1, 0.3},
    {"diff_v2 gqa n_rep=2", DT_ARCH_DIFF_V2, 2, 1, 0, 1, -1, 0, 0},
    {"diff_v2 tied", DT_ARCH_DIFF_V2, 2, 2, 1, 1, -1, 0, 0},
    {"transformer gqa", DT_ARCH_TRANSFORMER, 4, 2, 0, 1, -1, 0, 0},
    {"transformer tied", DT_ARCH_TRANSFORMER, 4, 4, 1, 1, -1, 0, 0},
};
#define N_MODEL_CASES ((int)(sizeof model_cases / sizeof model_cases[0]))

/* A small model: vocab 37, d_model 16, 2 layers, head dim 4, ffn 24. */
static inline void model_case_config(dt_model_config *m, const model_case *c) {
    memset(m, 0, sizeof *m);
    m->arch = c->arch;
    m->vocab_size = 37;
    m->d_model = 16;
    m->n_layers = 2;
    m->n_heads = c->n_heads;
    m->n_kv_heads = c->n_kv_heads;
    m->ffn_dim = 24;
    m->max_seq_len = 64;
    m->rope_theta = 10000;
    m->tie_embeddings = c->tie;
    m->norm_eps = 1e-5;
    m->lambda_init_schedule = c->lambda_const < 0;
    m->lambda_init = c->lambda_const < 0 ? 0.8 : c->lambda_const;
    m->subln = c->subln;
    m->lambda_learnable = !c->lambda_frozen;
    m->lambda_const = c->lambda_frozen ? c->lambda : 0.0;
    m->init_std = 0.1; /* larger than usual so every path carries gradient worth checking */
}

/* Deterministic tokens in [0, vocab). */
static inline void model_case_tokens(int32_t *x, int n, int vocab, uint64_t seed) {
    uint64_t key = rng_key(seed, "tokens");
    for (int i = 0; i < n; i++) x[i] = (int32_t)(rng_uniform(key, (uint64_t)i) * vocab);
}

#endif
