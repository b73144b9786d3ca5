/* TEMP (CUDA branch only, dropped at merge): float buffers passed as dt_operand until this file is updated */
#pragma GCC diagnostic ignored "-Wincompatible-pointer-types"
#include "model/infer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/alloc.h"

/* Widths of one layer's attention tensors per token (single rank: every head), as model.c
 * derives them from the architecture. */
typedef struct infer_dims {
    int H, Hkv, d;
    int q_heads, k_heads; /* heads of width d in q and k */
    int dv;               /* width of a v head */
    int A;                /* attention output width (out_proj's in_features) */
} infer_dims;

static infer_dims infer_dims_of(const dt_model_config *c) {
    infer_dims a;
    a.H = c->n_heads;
    a.Hkv = c->n_kv_heads;
    a.d = config_head_dim(c);
    a.q_heads = c->arch == DT_ARCH_TRANSFORMER ? a.H : 2 * a.H;
    a.k_heads = c->arch == DT_ARCH_DIFF ? 2 * a.Hkv : a.Hkv;
    a.dv = c->arch == DT_ARCH_DIFF ? 2 * a.d : a.d;
    a.A = c->arch == DT_ARCH_DIFF ? 2 * a.H * a.d : a.H * a.d;
    return a;
}

/* ---- row kernels (one token), fp32 storage with double accumulation ---- */

/* out (O) = w (O, I) @ x (I) */
static void row_matvec(float *out, const float *x, const float *w, int I, int O) {
    for (int o = 0; o < O; o++) {
        const float *wr = w + (size_t)o * I;
        double acc = 0;
        for (int i = 0; i < I; i++) acc += (double)wr[i] * x[i];
        out[o] = (float)acc;
    }
}

/* out (C) = x / sqrt(mean(x^2) + eps) * weight (weight NULL: no gain) */
static void row_rmsnorm(float *out, const float *x, const float *weight, int C, double eps) {
    double ss = 0;
    for (int i = 0; i < C; i++) ss += (double)x[i] * x[i];
    double rs = 1.0 / sqrt(ss / C + eps);
    for (int i = 0; i < C; i++) out[i] = (float)(x[i] * rs * (weight ? weight[i] : 1.0f));
}

/* RoPE of n_heads heads of width d at absolute position pos, GPT-J interleaved pairs (SPEC 2). */
static void row_rope(float *x, int n_heads, int d, double theta, int pos) {
    for (int i = 0; i < d / 2; i++) {
        double ang = pos * pow(theta, -2.0 * i / d), c = cos(ang), s = sin(ang);
        for (int h = 0; h < n_heads; h++) {
            float *p = x + (size_t)h * d + 2 * i;
            double x0 = p[0], x1 = p[1];
            p[0] = (float)(x0 * c - x1 * s);
            p[1] = (float)(x1 * c + x0 * s);
        }
    }
}

/* out (dv) = softmax_t(q . k_t / sqrt(d)) v_t over the n cached positions t, for one query
 * head: k_t = kc + t*kstride (d floats), v_t = vc + t*vstride (dv floats). scores (n) is
 * scratch. The cache holds only past and present positions: causal as is. */
static void row_attend(double *out, const float *q, const float *kc, size_t kstride,
                       const float *vc, size_t vstride, int n, int d, int dv, double *scores) {
    double scale = 1.0 / sqrt((double)d), mx = -INFINITY, sum = 0;
    for (int t = 0; t < n; t++) {
        const float *k = kc + (size_t)t * kstride;
        double s = 0;
        for (int e = 0; e < d; e++) s += (double)q[e] * k[e];
        scores[t] = s * scale;
        if (scores[t] > mx) mx = scores[t];
    }
    for (int e = 0; e < dv; e++) out[e] = 0;
    for (int t = 0; t < n; t++) {
        double p = exp(scores[t] - mx);
        const float *v = vc + (size_t)t * vstride;
        sum += p;
        for (int e = 0; e < dv; e++) out[e] += p * v[e];
    }
    for (int e = 0; e < dv; e++) out[e] /= sum;
}

/* ---- state ---- */

dt_status infer_init(dt_infer *s, const dt_model *m, int max_len) {
    memset(s, 0, sizeof *s);
    const dt_model_config *c = &m->cfg;
    if (m->layout.tp_size != 1) {
        dt_error("generation needs the whole model on one rank (tensor-parallel size %d)",
                 m->layout.tp_size);
        return DT_ERR_INPUT;
    }
    if (max_len < 1 || max_len > c->max_seq_len) {
        dt_error("generation context %d: expected 1 to model.max_seq_len %d", max_len,
                 c->max_seq_len);
        return DT_ERR_INPUT;
    }
    s->cfg = *c;
    s->max_len = max_len;
    infer_dims a = infer_dims_of(c);
    size_t L = (size_t)c->n_layers, D = c->d_model, F = c->ffn_dim;
    size_t kw = (size_t)a.k_heads * a.d, vw = (size_t)a.Hkv * a.dv;
    size_t qw = (size_t)a.q_heads * a.d;
    size_t n_scratch = 2 * D + qw + (size_t)a.A + qw + (size_t)a.H + 2 * F;
    s->host_params = dt_malloc(m->layout.total * sizeof(float));
    s->kcache = dt_malloc(L * max_len * kw * sizeof(float) + 1);
    s->vcache = dt_malloc(L * max_len * vw * sizeof(float) + 1);
    s->scratch = dt_malloc(n_scratch * sizeof(float));
    s->dbuf = dt_malloc((2 * (size_t)a.dv + (size_t)max_len) * sizeof(double));
    if (!s->host_params || !s->kcache || !s->vcache || !s->scratch || !s->dbuf) {
        dt_error("out of memory for the generation cache (%d positions, %zu parameters)",
                 max_len, m->layout.total);
        infer_free(s);
        return DT_ERR_RUNTIME;
    }
    model_params_to_host(m, s->host_params);
    dt_status st = params_bind(&s->p, &m->layout, c, s->host_params);
    if (st != DT_OK) {
        infer_free(s);
        return st;
    }
    float *f = s->scratch;
    s->x = f, f += D;
    s->xn = f, f += D;
    s->q = f, f += qw;
    s->attn = f, f += a.A;
    s->heads = f, f += qw;
    s->lam = f, f += a.H;
    s->gate = f, f += F;
    s->up = f;
    return DT_OK;
}

void infer_free(dt_infer *s) {
    params_unbind(&s->p);
    dt_free(s->host_params);
    dt_free(s->kcache);
    dt_free(s->vcache);
    dt_free(s->scratch);
    dt_free(s->dbuf);
    memset(s, 0, sizeof *s);
}

void infer_reset(dt_infer *s) { s->len = 0; }

/* The attention block of layer l for the token at position pos (its k and v already cached):
 * s->attn (A) = the attention output before out_proj. */
static void infer_attention(dt_infer *s, int l, int pos) {
    const dt_model_config *c = &s->cfg;
    const dt_layer_params *w = &s->p.layers[l];
    infer_dims a = infer_dims_of(c);
    int d = a.d, n = pos + 1;
    size_t kw = (size_t)a.k_heads * d, vw = (size_t)a.Hkv * a.dv;
    const float *kc = s->kcache + (size_t)l * s->max_len * kw;
    const float *vc = s->vcache + (size_t)l * s->max_len * vw;
    /* double scratch: two head outputs of width dv, then the scores of max_len positions */
    double *o1 = s->dbuf, *o2 = s->dbuf + a.dv, *scores = s->dbuf + 2 * a.dv;
    switch (c->arch) {
    case DT_ARCH_DIFF: {
        /* DIFF head h: q-heads 2h, 2h+1; kv group g: k-heads 2g, 2g+1, v-head g (width 2d) */
        double li = config_lambda_init(c, l), a1 = 0, a2 = 0;
        for (int e = 0; c->lambda_learnable && e < d; e++) {
            a1 += (double)w->lambda_q1[e] * w->lambda_k1[e];
            a2 += (double)w->lambda_q2[e] * w->lambda_k2[e];
        }
        /* the model keeps lambda as one fp32 number: round it the same way (a frozen lambda
         * is the constant of model.lambda, in every layer) */
        double lam = c->lambda_learnable ? (float)(exp(a1) - exp(a2) + li)
                                         : (float)c->lambda_const;
        int n_rep = a.H / a.Hkv, d2 = 2 * d;
        for (int h = 0; h < a.H; h++) {
            int g = h / n_rep;
            row_attend(o1, s->q + (size_t)(2 * h) * d, kc + (size_t)(2 * g) * d, kw,
                       vc + (size_t)g * d2, vw, n, d, d2, scores);
            row_attend(o2, s->q + (size_t)(2 * h + 1) * d, kc + (size_t)(2 * g + 1) * d, kw,
                       vc + (size_t)g * d2, vw, n, d, d2, scores);
            double ss = 0;
            for (int e = 0; e < d2; e++) {
                o1[e] -= lam * o2[e];
                ss += o1[e] * o1[e];
            }
            double rs = w->subln ? 1.0 / sqrt(ss / d2 + c->norm_eps) : 1.0;
            /* subln scalar: one learned gain per DIFF head instead of the RMSNorm */
            double sh = w->subln_scale ? w->subln_scale[h] : 1.0;
            float *y = s->attn + (size_t)h * d2;
            for (int e = 0; e < d2; e++)
                y[e] = (float)((1.0 - li) * o1[e] * rs * sh * (w->subln ? w->subln[e] : 1.0f));
        }
        break;
    }
    case DT_ARCH_DIFF_V2: {
        /* 2H query heads over Hkv kv heads of width d; out_h = attn_2h - sigmoid(l_h) attn_2h+1 */
        int n_rep = a.q_heads / a.Hkv;
        for (int j = 0; j < a.q_heads; j++) {
            int g = j / n_rep;
            row_attend(o1, s->q + (size_t)j * d, kc + (size_t)g * d, kw, vc + (size_t)g * d, vw,
                       n, d, d, scores);
            for (int e = 0; e < d; e++) s->heads[(size_t)j * d + e] = (float)o1[e];
        }
        row_matvec(s->lam, s->xn, w->lambda_proj, c->d_model, a.H);
        for (int h = 0; h < a.H; h++) {
            double lam = 1.0 / (1.0 + exp(-(double)s->lam[h]));
            for (int e = 0; e < d; e++)
                s->attn[(size_t)h * d + e] =
                    (float)(s->heads[(size_t)(2 * h) * d + e] -
                            lam * s->heads[(size_t)(2 * h + 1) * d + e]);
        }
        break;
    }
    case DT_ARCH_TRANSFORMER: {
        int n_rep = a.q_heads / a.Hkv;
        for (int j = 0; j < a.q_heads; j++) {
            int g = j / n_rep;
            row_attend(o1, s->q + (size_t)j * d, kc + (size_t)g * d, kw, vc + (size_t)g * d, vw,
                       n, d, d, scores);
            for (int e = 0; e < d; e++) s->attn[(size_t)j * d + e] = (float)o1[e];
        }
        break;
    }
    }
}

dt_status infer_step(dt_infer *s, float *logits, int32_t token) {
    const dt_model_config *c = &s->cfg;
    if (token < 0 || token >= c->vocab_size) {
        dt_error("generation: token id %d is outside the vocabulary [0, %d)", (int)token,
                 c->vocab_size);
        return DT_ERR_INPUT;
    }
    if (s->len >= s->max_len) {
        dt_error("generation: the context of %d positions is full", s->max_len);
        return DT_ERR_INPUT;
    }
    infer_dims a = infer_dims_of(c);
    int D = c->d_model, F = c->ffn_dim, pos = s->len;
    size_t kw = (size_t)a.k_heads * a.d, vw = (size_t)a.Hkv * a.dv;
    memcpy(s->x, s->p.tok_embeddings + (size_t)token * D, (size_t)D * sizeof(float));
    for (int l = 0; l < c->n_layers; l++) {
        const dt_layer_params *w = &s->p.layers[l];
        /* attention: q, k, v of this position, k rotated and both appended to the cache */
        float *kdst = s->kcache + ((size_t)l * s->max_len + pos) * kw;
        float *vdst = s->vcache + ((size_t)l * s->max_len + pos) * vw;
        row_rmsnorm(s->xn, s->x, w->attention_norm, D, c->norm_eps);
        row_matvec(s->q, s->xn, w->q_proj, D, a.q_heads * a.d);
        row_matvec(kdst, s->xn, w->k_proj, D, (int)kw);
        row_matvec(vdst, s->xn, w->v_proj, D, (int)vw);
        row_rope(s->q, a.q_heads, a.d, c->rope_theta, pos);
        row_rope(kdst, a.k_heads, a.d, c->rope_theta, pos);
        infer_attention(s, l, pos);
        /* y = x + attn @ out_proj^T, kept in x (xn is free again: it holds the product) */
        row_matvec(s->xn, s->attn, w->out_proj, a.A, D);
        for (int i = 0; i < D; i++) s->x[i] += s->xn[i];
        /* ffn: x = y + w_down (silu(w_gate xn) * w_up xn) */
        row_rmsnorm(s->xn, s->x, w->ffn_norm, D, c->norm_eps);
        row_matvec(s->gate, s->xn, w->w_gate, D, F);
        row_matvec(s->up, s->xn, w->w_up, D, F);
        for (int i = 0; i < F; i++) {
            double g = s->gate[i];
            s->gate[i] = (float)(g / (1.0 + exp(-g)) * s->up[i]);
        }
        row_matvec(s->xn, s->gate, w->w_down, F, D);
        for (int i = 0; i < D; i++) s->x[i] += s->xn[i];
    }
    row_rmsnorm(s->xn, s->x, s->p.norm, D, c->norm_eps);
    row_matvec(logits, s->xn, s->p.output, D, c->vocab_size);
    s->len++;
    return DT_OK;
}

/* ---- the reference without a cache ---- */

dt_status infer_forward_logits(float *logits, dt_model *m, const int32_t *tokens, int n) {
    const dt_backend *be = m->be;
    int D = m->cfg.d_model, V = m->cfg.vocab_size, T = m->T;
    if (m->layout.tp_size != 1 || m->B != 1 || n < 1 || n > T) {
        dt_error("generation without a cache: %d tokens need a single-rank model with B = 1 and "
                 "T >= %d (got tp %d, B %d, T %d)", n, n, m->layout.tp_size, m->B, T);
        return DT_ERR_INPUT;
    }
    for (int i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= V) {
            dt_error("generation: token %d is %d, outside the vocabulary [0, %d)", i,
                     (int)tokens[i], V);
            return DT_ERR_INPUT;
        }
    }
    int32_t *row = dt_calloc((size_t)T, sizeof(int32_t)); /* padding: token 0 after position n-1 */
    if (!row) {
        dt_error("out of memory for %d token ids", T);
        return DT_ERR_RUNTIME;
    }
    memcpy(row, tokens, (size_t)n * sizeof(int32_t));
    model_forward(m, row, NULL);
    dt_free(row);
    /* the model's own LM head on the last real row; m->logits holds at least one row of V */
    be->matmul_forward(m->logits, m->final_norm + (size_t)(n - 1) * D, m->params.output, 1, D, V,
                       0);
    be->copy_to_host(logits, m->logits, (size_t)V * sizeof(float));
    return DT_OK;
}

/* ---- sampling ---- */

static const float *sample_logits; /* qsort has no context argument: set around the sort */

/* Larger logit first, then lower id. */
static int sample_cmp(const void *pa, const void *pb) {
    int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    float la = sample_logits[a], lb = sample_logits[b];
    if (la != lb) return la > lb ? -1 : 1;
    return (a > b) - (a < b);
}

int32_t infer_sample(const float *logits, int V, double temperature, int top_k, rng_stream *rng) {
    int32_t best = 0;
    for (int32_t i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i; /* strict: the lowest id wins a tie */
    if (temperature <= 0 || top_k == 1) return best;
    int32_t *idx = NULL;
    int n = V;
    if (top_k > 0 && top_k < V) {
        idx = dt_malloc((size_t)V * sizeof(int32_t));
        if (idx) {
            for (int32_t i = 0; i < V; i++) idx[i] = i;
            sample_logits = logits;
            qsort(idx, (size_t)V, sizeof *idx, sample_cmp);
            sample_logits = NULL;
            n = top_k;
        }
        /* out of memory: the greedy token rather than a silently wider draw */
        if (!idx) return best;
    }
    /* softmax(logits / T) over the candidates, shifted by the maximum, drawn by inversion */
    double mx = logits[best], total = 0;
    for (int j = 0; j < n; j++) total += exp((logits[idx ? idx[j] : j] - mx) / temperature);
    double u = rng_stream_uniform(rng) * total, cum = 0;
    int32_t pick = idx ? idx[n - 1] : n - 1; /* rounding leaves u past the last sum: the last */
    for (int j = 0; j < n; j++) {
        int32_t t = idx ? idx[j] : j;
        cum += exp((logits[t] - mx) / temperature);
        if (u < cum) {
            pick = t;
            break;
        }
    }
    dt_free(idx);
    return pick;
}

/* ---- the generation loop ---- */

dt_status infer_generate(int32_t *out, int *n_out, dt_model *m, const int32_t *prompt,
                         int n_prompt, const dt_gen_opts *o) {
    int V = m->cfg.vocab_size, ctx = m->T;
    *n_out = 0;
    if (n_prompt < 1 || n_prompt > ctx) {
        dt_error("generation: the prompt has %d tokens: expected 1 to the context of %d", n_prompt,
                 ctx);
        return DT_ERR_INPUT;
    }
    dt_status st = DT_OK;
    dt_infer s;
    memset(&s, 0, sizeof s);
    float *logits = dt_malloc((size_t)V * sizeof(float));
    int32_t *seq = dt_malloc((size_t)ctx * sizeof(int32_t));
    if (!logits || !seq) {
        dt_error("out of memory for generation (context %d, vocabulary %d)", ctx, V);
        st = DT_ERR_RUNTIME;
        goto done;
    }
    memcpy(seq, prompt, (size_t)n_prompt * sizeof(int32_t));
    if (o->use_cache) {
        DT_TRY_GOTO(st, infer_init(&s, m, ctx), done);
        for (int i = 0; i < n_prompt; i++) DT_TRY_GOTO(st, infer_step(&s, logits, seq[i]), done);
    } else {
        DT_TRY_GOTO(st, infer_forward_logits(logits, m, seq, n_prompt), done);
    }
    rng_stream rng;
    rng_stream_init(&rng, o->seed, "generate");
    for (int n = n_prompt; *n_out < o->max_new && n < ctx; n++) {
        int32_t t = infer_sample(logits, V, o->temperature, o->top_k, &rng);
        if (o->stop_token >= 0 && t == o->stop_token) break;
        out[(*n_out)++] = t;
        seq[n] = t;
        /* the logits after the last token are needed only when another one follows */
        if (*n_out == o->max_new || n + 1 >= ctx) break;
        if (o->use_cache) DT_TRY_GOTO(st, infer_step(&s, logits, t), done);
        else DT_TRY_GOTO(st, infer_forward_logits(logits, m, seq, n + 1), done);
    }
done:
    if (o->use_cache) infer_free(&s);
    dt_free(logits);
    dt_free(seq);
    return st;
}
