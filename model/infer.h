/* Autoregressive generation from a model's parameters: an incremental decoder with a KV cache
 * (linear cost per new token), the full-forward reference it is checked against, and sampling.
 *
 * Usage:
 *   model_init(&m, &cfg.model, dt_backend_cpu(), seed, 1, T);   (then load the weights)
 *   infer_init(&s, &m, T);
 *   for each token: infer_step(&s, logits, token);   logits (V) predict the next token
 *   infer_free(&s);
 * or the whole loop: infer_generate(out, &n_out, &m, prompt, n_prompt, &opts).
 *
 * Single tensor-parallel rank only (the whole vocabulary and every head on one rank). */
#ifndef DT_INFER_H
#define DT_INFER_H

#include <stdint.h>

#include "model/model.h"
#include "util/rng.h"

/* The incremental decoder's state. It keeps a host copy of the parameters (bound to named
 * pointers with the model's layout) and, per layer, the RoPE-rotated k and the v of every past
 * position; a new token computes q, k, v for its own position only and attends over the cache,
 * so attention is causal by construction. Arithmetic is fp32 storage with double accumulation. */
typedef struct dt_infer {
    dt_model_config cfg;
    int max_len; /* positions the cache holds */
    int len;     /* positions filled so far: the next token gets position len */
    float *host_params; /* (layout.total) */
    dt_params p;
    float *kcache; /* (n_layers, max_len, Hk*d) rotated keys */
    float *vcache; /* (n_layers, max_len, Hkv*dv) values */
    float *scratch; /* one allocation carved into the row buffers below */
    float *x, *xn, *q, *attn, *heads, *lam, *gate, *up; /* one token's activations */
    double *dbuf;   /* (2 dv + max_len) head outputs and attention scores */
} dt_infer;

/* Copies m's parameters to the host and allocates a cache of max_len positions (1 <= max_len
 * <= model.max_seq_len). DT_ERR_INPUT when m is split over tensor-parallel ranks or max_len is
 * out of range; DT_ERR_RUNTIME when out of memory. */
dt_status infer_init(dt_infer *s, const dt_model *m, int max_len);
void infer_free(dt_infer *s);
/* Empties the cache (the next token gets position 0). */
void infer_reset(dt_infer *s);
/* Appends `token` at position s->len and writes logits (V) for the token after it.
 * DT_ERR_INPUT when the cache is full or the token is outside [0, vocab_size). */
dt_status infer_step(dt_infer *s, float *logits, int32_t token);

/* The reference without a cache: model_forward over tokens[0, n) (B = 1; m->T >= n, the rest of
 * the row padded with token 0, which causality keeps out of row n-1) and logits (V) of the last
 * position from the model's own final norm and LM head. m must be single-rank with B == 1. */
dt_status infer_forward_logits(float *logits, dt_model *m, const int32_t *tokens, int n);

/* The next token from logits (V): the argmax (lowest id on ties) when temperature == 0;
 * otherwise a draw, with one uniform from rng, from softmax(logits / temperature) restricted
 * to the top_k largest logits (ties broken by lower id; all V when top_k <= 0). */
int32_t infer_sample(const float *logits, int V, double temperature, int top_k, rng_stream *rng);

typedef struct dt_gen_opts {
    int max_new;        /* tokens to generate at most */
    double temperature; /* 0: greedy */
    int top_k;          /* <= 0: the whole vocabulary */
    uint64_t seed;      /* of the sampling stream */
    int use_cache;      /* 1: infer_step; 0: infer_forward_logits over the whole prefix */
    int32_t stop_token; /* generation ends after producing it (not written); < 0: none */
} dt_gen_opts;

/* Generates after prompt[0, n_prompt) until max_new tokens, the stop token, or m->T positions
 * in all (the context). out (max_new) receives the new tokens, *n_out their count. m: single
 * rank, B == 1, T = the context (prompt and continuation must fit: n_prompt <= m->T). */
dt_status infer_generate(int32_t *out, int *n_out, dt_model *m, const int32_t *prompt,
                         int n_prompt, const dt_gen_opts *o);

#endif
