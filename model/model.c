#include "model/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/alloc.h"

/* Widths of the attention tensors of one layer, per token row. */
typedef struct attn_dims {
    int H, Hkv, d;
    int q_heads, k_heads; /* heads of width d in q and k */
    int dv;               /* width of a v head */
    int q, k, v;          /* row widths of q, k, v */
    int A;                /* attention output width (out_proj's in_features) */
    int lse_heads;        /* rows of lse per (b, t) */
} attn_dims;

/* Widths of this rank's share: H and Hkv are its local heads and kv groups. */
static attn_dims dims_of(const dt_model_config *c, const dt_tp_shape *tp) {
    attn_dims a;
    a.H = tp->n_heads;
    a.Hkv = tp->n_kv_heads;
    a.d = config_head_dim(c);
    switch (c->arch) {
    case DT_ARCH_DIFF:
        a.q_heads = 2 * a.H;
        a.k_heads = 2 * a.Hkv;
        a.dv = 2 * a.d;
        a.A = 2 * a.H * a.d;
        a.lse_heads = 2 * a.H;
        break;
    case DT_ARCH_DIFF_V2:
        a.q_heads = 2 * a.H;
        a.k_heads = a.Hkv;
        a.dv = a.d;
        a.A = a.H * a.d;
        a.lse_heads = 2 * a.H;
        break;
    default:
        a.q_heads = a.H;
        a.k_heads = a.Hkv;
        a.dv = a.d;
        a.A = a.H * a.d;
        a.lse_heads = a.H;
        break;
    }
    a.q = a.q_heads * a.d;
    a.k = a.k_heads * a.d;
    a.v = a.Hkv * a.dv;
    return a;
}

/* Carves named buffers out of one allocation: with base == NULL only counts (bytes). Each buffer
 * is rounded up to 64 bytes so every one stays 64-byte aligned. Operand buffers (backend.h) hold
 * elements of operand_bytes, every other buffer floats. */
typedef struct carver {
    char *base;
    size_t used;
    size_t operand_bytes;
} carver;

static size_t carved_bytes(size_t bytes) { return (bytes + 63) & ~(size_t)63; }

static void *carve_bytes(carver *c, size_t bytes) {
    void *p = c->base ? c->base + c->used : NULL;
    c->used += carved_bytes(bytes);
    return p;
}

static float *carve(carver *c, size_t n) { return carve_bytes(c, n * sizeof(float)); }

/* The int32s of a staged micro-batch (host staging buffers, model.h): the inputs, the localised
 * targets and their count. */
static size_t staged_ints(const dt_model *m) { return 2 * (size_t)m->B * m->T + 1; }

static dt_operand *carve_operand(carver *c, size_t n) {
    return carve_bytes(c, n * c->operand_bytes);
}

/* Carves one layer's activations other than x_in. */
static void carve_layer(dt_layer_acts *x, carver *c, const dt_model *m) {
    const dt_model_config *cfg = &m->cfg;
    attn_dims a = dims_of(cfg, &m->tp);
    size_t N = (size_t)m->B * m->T, D = cfg->d_model, F = m->tp.ffn_dim;
    int diff = cfg->arch == DT_ARCH_DIFF, v2 = cfg->arch == DT_ARCH_DIFF_V2;
    x->attn_rstd = carve(c, N);
    x->attn_in = carve_operand(c, N * D);
    x->q = carve_operand(c, N * a.q);
    x->k = carve_operand(c, N * a.k);
    x->v = carve_operand(c, N * a.v);
    x->attn_out = carve_operand(c, N * a.A);
    x->o1 = diff ? carve(c, N * a.A) : NULL;
    x->o2 = diff ? carve(c, N * a.A) : NULL;
    x->attn_lse = carve(c, N * a.lse_heads);
    x->sub_rstd = diff ? carve(c, N * a.H) : NULL;
    x->attn_pre = diff && cfg->subln == DT_SUBLN_SCALAR ? carve_operand(c, N * a.A) : NULL;
    x->lambda = diff ? carve(c, 1) : NULL;
    x->heads = v2 ? carve_operand(c, N * a.q) : NULL;
    x->lam_logit = v2 ? carve(c, N * a.H) : NULL;
    x->y = carve(c, N * D);
    x->ffn_rstd = carve(c, N);
    x->ffn_in = carve_operand(c, N * D);
    x->gate_up = carve_operand(c, N * 2 * F);
    x->hidden = carve_operand(c, N * F);
}

static void carve_acts(dt_model *m, carver *c) {
    const dt_model_config *cfg = &m->cfg;
    attn_dims a = dims_of(cfg, &m->tp);
    size_t N = (size_t)m->B * m->T, D = cfg->d_model, F = m->tp.ffn_dim, V = m->tp.vocab_size;
    int v2 = cfg->arch == DT_ARCH_DIFF_V2;
    for (int l = 0; l < cfg->n_layers; l++) {
        m->acts[l].x_in = carve(c, N * D);
        if (!m->recompute) carve_layer(&m->acts[l], c, m);
    }
    if (m->recompute && cfg->n_layers > 0) {
        /* one shared set: every layer's pointers but x_in alias it */
        dt_layer_acts shared;
        memset(&shared, 0, sizeof shared);
        carve_layer(&shared, c, m);
        for (int l = 0; l < cfg->n_layers; l++) {
            float *x_in = m->acts[l].x_in;
            m->acts[l] = shared;
            m->acts[l].x_in = x_in;
        }
    }
    m->x_final = carve(c, N * D);
    m->final_rstd = carve(c, N);
    m->final_norm = carve_operand(c, N * D);
    m->logits = carve(c, (size_t)m->logits_chunk * V);
    m->losses = carve(c, N);
    m->lse = carve(c, N);
    m->rowmax = carve(c, N);
    m->gmax = carve(c, N);
    m->xsums = carve(c, 2 * N);
    m->dres = carve(c, N * D);
    /* an fp32 operand is a float buffer: only a narrower operand needs a copy of dres */
    m->dres_op = c->operand_bytes < sizeof(float) ? carve_operand(c, N * D) : NULL;
    m->dnormed = carve(c, N * D);
    m->dwide = carve(c, N * (F > (size_t)a.A ? F : (size_t)a.A));
    /* the FFN's backward and the attention's never overlap: dq_rot and dk_rot take the space of
     * dgate_up, dk_rot at dq_rot's end rounded up to the carver's alignment */
    size_t dq_rot_bytes = carved_bytes(N * a.q * c->operand_bytes);
    size_t dgate_up_bytes = N * 2 * F * c->operand_bytes;
    size_t rot_bytes = dq_rot_bytes + N * a.k * c->operand_bytes;
    m->dgate_up = carve_bytes(c, dgate_up_bytes > rot_bytes ? dgate_up_bytes : rot_bytes);
    m->dq_rot = m->dgate_up;
    m->dk_rot = c->base ? (dt_operand *)((char *)m->dgate_up + dq_rot_bytes) : NULL;
    m->dq = carve(c, N * a.q);
    m->dk = carve(c, N * a.k);
    m->dv = carve_operand(c, N * a.v);
    m->dheads = v2 ? carve(c, N * a.q) : NULL;
    m->dlam = carve(c, v2 ? N * a.H : 1);
    m->inputs = carve_bytes(c, staged_ints(m) * sizeof(int32_t)); /* one upload: model.h */
    m->targets = m->inputs + N;
    m->target_count = m->inputs + 2 * N;
}

/* Rows of logits the classifier materialises at once: bounds its buffer to 1 GiB of fp32 (the
 * full (N, V) logits of a large vocabulary would take several). Each chunk's backward adds its
 * share into the whole (V, D) output-weight gradient, so a chunk must not be small either: at
 * 16 MiB (41 rows of a 100288 vocabulary) the 830M model's step re-read and re-wrote that
 * 616 MB gradient 400 times on a GPU; at 1 GiB it does so 7 times. */
static size_t logits_chunk_floats = (size_t)1 << 28;

void model_set_logits_chunk_limit(size_t floats) {
    logits_chunk_floats = floats ? floats : (size_t)1 << 28;
}

static int logits_chunk_rows(const dt_tp_shape *tp, int B, int T) {
    size_t rows = logits_chunk_floats / (size_t)tp->vocab_size;
    int chunk = rows > (size_t)B * T ? B * T : (int)rows;
    return chunk < 1 ? 1 : (chunk > B * T ? B * T : chunk);
}

size_t model_activation_bytes(const dt_model_config *cfg, const dt_tp_shape *tp, int B, int T,
                              int recompute, size_t operand_bytes) {
    dt_model m;
    memset(&m, 0, sizeof m);
    m.cfg = *cfg;
    m.tp = *tp;
    m.B = B;
    m.T = T;
    m.recompute = recompute != 0;
    m.logits_chunk = logits_chunk_rows(tp, B, T);
    m.acts = dt_calloc((size_t)cfg->n_layers, sizeof *m.acts);
    if (!m.acts) return 0;
    carver counter = {NULL, 0, operand_bytes};
    carve_acts(&m, &counter);
    dt_free(m.acts);
    return counter.used;
}

dt_status model_init(dt_model *m, const dt_model_config *cfg, const dt_backend *be, uint64_t seed,
                     int B, int T) {
    return model_init_tp(m, cfg, be, seed, B, T, NULL);
}

dt_status model_init_tp(dt_model *m, const dt_model_config *cfg, const dt_backend *be,
                        uint64_t seed, int B, int T, const dt_tp_comm *comm) {
    return model_init_opts(m, cfg, be, seed, B, T, comm, 0);
}

/* m->product_w, product_n: the matrices weights_prepare rounds for the products */
static dt_status list_product_weights(dt_model *m) {
    const dt_param_layout *L = &m->layout;
    m->product_w = dt_calloc((size_t)L->n_tensors + 1, sizeof *m->product_w);
    m->product_n = dt_calloc((size_t)L->n_tensors + 1, sizeof *m->product_n);
    if (!m->product_w || !m->product_n) {
        dt_error("out of memory listing %d weight tensors", L->n_tensors);
        return DT_ERR_RUNTIME;
    }
    m->n_product_weights = 0;
    size_t offset, numel;
    for (int i = 0; param_product_matrix_next(L, &m->cfg, &i, &offset, &numel);) {
        m->product_w[m->n_product_weights] = m->params_mem + offset;
        m->product_n[m->n_product_weights++] = numel;
    }
    return DT_OK;
}

dt_status model_init_opts(dt_model *m, const dt_model_config *cfg, const dt_backend *be,
                          uint64_t seed, int B, int T, const dt_tp_comm *comm, int recompute) {
    dt_status st = DT_OK;
    float *host = NULL;
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->be = be;
    m->comm = comm && comm->size > 1 ? comm : NULL;
    m->B = B;
    m->T = T;
    m->d = config_head_dim(cfg);
    m->recompute = recompute != 0;

    DT_TRY_GOTO(st, param_layout_init_tp(&m->layout, cfg, comm ? comm->rank : 0,
                                         comm ? comm->size : 1), fail);
    m->tp = tp_shape_of(cfg, m->layout.tp_rank, m->layout.tp_size);
    m->logits_chunk = logits_chunk_rows(&m->tp, B, T);

    size_t P = m->layout.total;
    m->params_mem = be->alloc(P * sizeof(float));
    m->grads_mem = be->alloc(P * sizeof(float));
    m->acts = dt_calloc((size_t)cfg->n_layers, sizeof *m->acts);
    host = dt_malloc(P * sizeof(float));
    for (int i = 0; i < 2; i++)
        m->staging[i] = be->host_alloc(staged_ints(m) * sizeof(int32_t));
    if (!m->params_mem || !m->grads_mem || !m->acts || !host || !m->staging[0] ||
        !m->staging[1]) {
        dt_error("out of memory for %zu parameters and their gradients", P);
        st = DT_ERR_RUNTIME;
        goto fail;
    }
    DT_TRY_GOTO(st, params_bind(&m->params, &m->layout, cfg, m->params_mem), fail);
    DT_TRY_GOTO(st, params_bind(&m->grads, &m->layout, cfg, m->grads_mem), fail);
    params_init_host(host, &m->layout, cfg, seed);
    be->copy_from_host(m->params_mem, host, P * sizeof(float));
    DT_TRY_GOTO(st, list_product_weights(m), fail);

    carver counter = {NULL, 0, be->operand_bytes};
    carve_acts(m, &counter);
    m->acts_bytes = counter.used;
    m->acts_mem = be->alloc(counter.used);
    if (!m->acts_mem) {
        dt_error("out of memory for activations (%zu bytes for micro-batch %d x %d)",
                 counter.used, B, T);
        st = DT_ERR_RUNTIME;
        goto fail;
    }
    carver c = {m->acts_mem, 0, be->operand_bytes};
    carve_acts(m, &c);
    if (cfg->arch == DT_ARCH_DIFF && !cfg->lambda_learnable) {
        /* a frozen lambda is the same constant in every layer, and nothing else writes the
         * activation that holds it: uploaded once here rather than by every forward (with
         * recompute the layers share one slot, written again with the same value) */
        float lam = (float)cfg->lambda_const;
        for (int l = 0; l < cfg->n_layers; l++)
            be->copy_from_host(m->acts[l].lambda, &lam, sizeof lam);
    }
    dt_free(host);
    return DT_OK;
fail:
    dt_free(host);
    model_free(m);
    return st;
}

void model_free(dt_model *m) {
    if (m->be) {
        if (m->params_mem) m->be->free(m->params_mem);
        if (m->grads_mem) m->be->free(m->grads_mem);
        if (m->acts_mem) m->be->free(m->acts_mem);
    }
    params_unbind(&m->params);
    params_unbind(&m->grads);
    dt_free(m->product_w);
    dt_free(m->product_n);
    dt_free(m->acts);
    if (m->be) {
        for (int i = 0; i < 2; i++) m->be->host_free(m->staging[i]);
        if (m->slots) m->be->host_free(m->slots);
    }
    param_layout_free(&m->layout);
    memset(m, 0, sizeof *m);
}

void model_zero_grad(dt_model *m) {
    m->be->memset_zero(m->grads_mem, m->layout.total * sizeof(float));
}

/* ---- tensor-parallel reductions (no-ops on one rank) ---- */

static void tp_sum(dt_model *m, float *buf, size_t n) {
    if (m->comm) m->comm->allreduce_sum(m->comm->ctx, buf, n);
}

static void tp_max(dt_model *m, float *buf, size_t n) {
    if (m->comm) m->comm->allreduce_max(m->comm->ctx, buf, n);
}

/* out = x + allreduce(out), then normed, rstd = RMSNorm(out) * weight: a row-parallel
 * projection's partial sums completed over the TP group, the residual added once, and the norm
 * that reads the new residual stream fused with that add (one pass over it fewer). */
static void residual_norm_from_partial(dt_model *m, float *out, const float *x,
                                       dt_operand *normed, float *rstd, const float *weight) {
    const dt_model_config *c = &m->cfg;
    int N = m->B * m->T, D = c->d_model;
    tp_sum(m, out, (size_t)N * D);
    m->be->residual_rmsnorm_forward(out, normed, rstd, out, x, weight, N, D, (float)c->norm_eps);
}

/* ---- forward ---- */

/* Layer l's attention block from x_in to y, and the FFN norm of y (ffn_in, ffn_rstd). With
 * normed_in the attention norm (attn_in, attn_rstd) is already there: the previous layer's
 * residual add computed it (ffn_block_forward). */
static void attention_block_forward(dt_model *m, int l, int normed_in) {
    const dt_backend *be = m->be;
    const dt_model_config *c = &m->cfg;
    const dt_layer_params *w = &m->params.layers[l];
    dt_layer_acts *x = &m->acts[l];
    attn_dims a = dims_of(c, &m->tp);
    int B = m->B, T = m->T, N = B * T, D = c->d_model;
    float theta = (float)c->rope_theta;

    if (!normed_in)
        be->rmsnorm_forward(x->attn_in, x->attn_rstd, x->x_in, w->attention_norm, N, D,
                            (float)c->norm_eps);
    be->matmul_forward_operand(x->q, x->attn_in, w->q_proj, N, D, a.q);
    be->matmul_forward_operand(x->k, x->attn_in, w->k_proj, N, D, a.k);
    be->matmul_forward_operand(x->v, x->attn_in, w->v_proj, N, D, a.v);
    be->rope_forward(x->q, x->q, B, T, a.q_heads, a.d, theta, 0);
    be->rope_forward(x->k, x->k, B, T, a.k_heads, a.d, theta, 0);
    switch (c->arch) {
    case DT_ARCH_DIFF: {
        float li = (float)config_lambda_init(c, l);
        if (c->lambda_learnable) /* else a constant, written by model_init_opts */
            be->difflambda_forward(x->lambda, w->lambda_q1, w->lambda_k1, w->lambda_q2,
                                   w->lambda_k2, li, a.d);
        /* subln scalar: the kernel runs without a gain (out = (1 - lambda_init) O, kept in
         * attn_pre for the backward) and head_scale applies s_h per DIFF head */
        dt_operand *pre = c->subln == DT_SUBLN_SCALAR ? x->attn_pre : x->attn_out;
        be->diffattn_forward(pre, x->o1, x->o2, x->attn_lse, x->sub_rstd, x->q, x->k, x->v,
                             x->lambda, w->subln, li, (float)c->norm_eps, B, T, a.H, a.Hkv, a.d);
        if (c->subln == DT_SUBLN_SCALAR)
            be->head_scale_forward(x->attn_out, x->attn_pre, w->subln_scale, N, a.H, 2 * a.d);
        break;
    }
    case DT_ARCH_DIFF_V2:
        be->attention_forward(x->heads, x->attn_lse, x->q, x->k, x->v, B, T, a.q_heads, a.Hkv,
                              a.d, a.dv);
        be->matmul_forward(x->lam_logit, x->attn_in, w->lambda_proj, N, D, a.H, 0);
        be->diffv2_combine_forward(x->attn_out, x->heads, x->lam_logit, N, a.H, a.d);
        break;
    case DT_ARCH_TRANSFORMER:
        be->attention_forward(x->attn_out, x->attn_lse, x->q, x->k, x->v, B, T, a.q_heads, a.Hkv,
                              a.d, a.dv);
        break;
    }
    /* y = x + attn_out @ out_proj^T (out_proj is split by input columns over TP), and its norm */
    be->matmul_forward(x->y, x->attn_out, w->out_proj, N, a.A, D, 0);
    residual_norm_from_partial(m, x->y, x->x_in, x->ffn_in, x->ffn_rstd, w->ffn_norm);
}

/* The FFN from its norm's output (attention_block_forward made it) up to its hidden activation:
 * everything the FFN's backward reads. */
static void ffn_hidden_forward(dt_model *m, int l) {
    const dt_backend *be = m->be;
    const dt_model_config *c = &m->cfg;
    const dt_layer_params *w = &m->params.layers[l];
    dt_layer_acts *x = &m->acts[l];
    int N = m->B * m->T, D = c->d_model, F = m->tp.ffn_dim;
    /* w_gate and w_up are one (2F, D) matrix (param_product_matrix_next): one product writes
     * each row's gate and up side by side */
    be->matmul_forward_operand(x->gate_up, x->ffn_in, w->w_gate, N, D, 2 * F);
    be->swiglu_forward(x->hidden, x->gate_up, dt_operand_at(m->be, x->gate_up, F), N, F,
                       2 * F);
}

/* Layer l's FFN block: x_out = y + ffn(y), and the norm that reads x_out next: the next
 * layer's attention norm, or the final norm after the last layer. */
static void ffn_block_forward(dt_model *m, int l) {
    const dt_layer_acts *x = &m->acts[l];
    int N = m->B * m->T, D = m->cfg.d_model, F = m->tp.ffn_dim;
    ffn_hidden_forward(m, l);
    if (l + 1 < m->cfg.n_layers) {
        dt_layer_acts *next = &m->acts[l + 1];
        m->be->matmul_forward(next->x_in, x->hidden, m->params.layers[l].w_down, N, F, D, 0);
        residual_norm_from_partial(m, next->x_in, x->y, next->attn_in, next->attn_rstd,
                                   m->params.layers[l + 1].attention_norm);
    } else {
        m->be->matmul_forward(m->x_final, x->hidden, m->params.layers[l].w_down, N, F, D, 0);
        residual_norm_from_partial(m, m->x_final, x->y, m->final_norm, m->final_rstd,
                                   m->params.norm);
    }
}

/* Activation recomputation: layer l's forward again, from its kept input x_in, into the shared
 * activation set. The same calls on the same inputs as in model_forward, so the same bits (the
 * backends' ops are deterministic at a fixed thread count), and the same all-reduce of the
 * attention's out_proj partial sums on every TP rank. The FFN's down projection (and its
 * all-reduce) is left out: its output is the next layer's input, already kept. */
static void layer_recompute(dt_model *m, int l) {
    attention_block_forward(m, l, 0);
    ffn_hidden_forward(m, l);
}

/* Fills the staging buffer `in` (staged_ints) with the inputs and (when given) the targets as
 * the vocabulary slice sees them: its local index, V_local when the target is in another rank's
 * slice, -1 ignored; then their count. Returns the number of targets >= 0. */
static int stage_into(dt_model *m, int32_t *in, const int32_t *inputs, const int32_t *targets) {
    int N = m->B * m->T, v0 = m->tp.vocab_offset, nv = m->tp.vocab_size, count = 0;
    int32_t *local = in + N;
    m->be->host_wait(in); /* the upload that last read this buffer is done */
    memcpy(in, inputs, (size_t)N * sizeof(int32_t));
    if (targets)
        for (int i = 0; i < N; i++) {
            int32_t t = targets[i];
            count += t >= 0;
            local[i] = t < 0 ? -1 : (t >= v0 && t < v0 + nv ? t - v0 : nv);
        }
    in[2 * N] = count;
    return count;
}

/* Queues the upload of a staged buffer: the inputs, and with targets the targets and their
 * count. Returns that count (the host's copy of it). */
static int upload_staged(dt_model *m, const int32_t *in, int with_targets) {
    size_t N = (size_t)m->B * m->T;
    size_t n = with_targets ? staged_ints(m) : N;
    m->be->copy_from_host_async(m->inputs, in, n * sizeof(int32_t));
    return with_targets ? in[2 * N] : 0;
}

static int32_t *slot_of(const dt_model *m, int k) {
    if (k < 0 || k >= m->n_slots) {
        dt_error("model: staging slot %d of %d", k, m->n_slots);
        abort();
    }
    return m->slots + (size_t)k * staged_ints(m);
}

dt_status model_reserve_slots(dt_model *m, int count) {
    if (count <= m->n_slots) return DT_OK;
    size_t per = staged_ints(m);
    int32_t *p = m->be->host_alloc((size_t)count * per * sizeof(int32_t));
    if (!p) {
        dt_error("out of host memory for %d staged micro-batches of %zu token ids", count, per);
        return DT_ERR_RUNTIME;
    }
    if (m->slots) m->be->host_free(m->slots); /* waits for their last eager upload */
    m->slots = p;
    m->n_slots = count;
    return DT_OK;
}

int model_stage(dt_model *m, int k, const int32_t *inputs, const int32_t *targets) {
    return stage_into(m, slot_of(m, k), inputs, targets);
}

/* The next of the two staging buffers, filled */
static const int32_t *stage_next(dt_model *m, const int32_t *inputs, const int32_t *targets) {
    int32_t *in = m->staging[m->staging_next];
    m->staging_next ^= 1;
    stage_into(m, in, inputs, targets);
    return in;
}

/* Vocab-parallel cross-entropy of rows [r0, r0 + n): no rank holds the full-vocabulary logits.
 * One pass over the logits gives each row's maximum and sum of exponentials on this slice; over
 * a TP group the maxima are reduced (MAX), each slice's sums moved to the global maximum, then
 * reduced (SUM). */
static void classifier_forward(dt_model *m, int r0, int n) {
    const dt_backend *be = m->be;
    int D = m->cfg.d_model, V = m->tp.vocab_size;
    const dt_operand *xn = dt_operand_at(be, m->final_norm, (size_t)r0 * D);
    float *rowmax = m->rowmax + r0, *sums = m->xsums + 2 * (size_t)r0, *gmax = rowmax;
    be->matmul_forward(m->logits, xn, m->params.output, n, D, V, 0);
    be->xent_vp_stats(rowmax, sums, m->logits, m->targets + r0, n, V);
    if (m->comm) {
        gmax = m->gmax + r0;
        be->copy(gmax, rowmax, (size_t)n * sizeof(float));
        tp_max(m, gmax, (size_t)n);
        be->xent_vp_rescale(sums, rowmax, gmax, n);
        tp_sum(m, sums, 2 * (size_t)n);
    }
    be->xent_vp_finish(m->losses + r0, m->lse + r0, gmax, sums, m->targets + r0, n);
}

/* The classifier's backward of rows [r0, r0 + n): dlogits = dloss_scale / the micro-batch's count
 * of targets (on the backend: m->target_count) times (softmax - onehot), as operands
 * over the logits' own rows (in bf16 the front half of each: the rows keep the logits' stride of
 * V floats), then the rows of dnormed (overwritten; their sum over the TP group comes later) and
 * the output weight's gradient (accumulated). logits_ready: m->logits holds those rows' logits
 * (the training forward's chunk, just computed), else they are recomputed from final_norm. */
static void classifier_backward(dt_model *m, int r0, int n, float dloss_scale,
                                int logits_ready) {
    const dt_backend *be = m->be;
    int D = m->cfg.d_model, V = m->tp.vocab_size;
    const dt_operand *xn = dt_operand_at(be, m->final_norm, (size_t)r0 * D);
    dt_operand *dlogits = (dt_operand *)m->logits;
    const int ldd = (int)((size_t)V * sizeof(float) / be->operand_bytes);
    if (!logits_ready) be->matmul_forward(m->logits, xn, m->params.output, n, D, V, 0);
    be->xent_backward(dlogits, ldd, m->logits, m->lse + r0, m->targets + r0, dloss_scale,
                      m->target_count, n, V);
    be->matmul_backward_operand(m->dnormed + (size_t)r0 * D, m->grads.output, dlogits, ldd, xn,
                                m->params.output, n, D, V, 0);
}

/* The forward from the uploaded inputs to the final norm, then with targets the per-row losses:
 * everything both forwards queue on the backend. With dloss_scale (the training forward), each
 * chunk of logits also gets its backward at once (classifier_backward), so the logits are
 * computed once per step rather than again by model_backward. */
static void forward_queue(dt_model *m, const int32_t *staged, int targets,
                          const float *dloss_scale) {
    const dt_backend *be = m->be;
    const dt_model_config *c = &m->cfg;
    int N = m->B * m->T, D = c->d_model;

    m->n_targets = upload_staged(m, staged, targets);
    /* the weights as the products read them (bf16 copies on the GPU), from their values now */
    be->weights_prepare(m->product_w, m->product_n, m->n_product_weights);
    float *x0 = c->n_layers > 0 ? m->acts[0].x_in : m->x_final;
    /* vocab-parallel embedding: each rank fills the rows of its slice, the sum completes them */
    be->embedding_forward(x0, m->inputs, m->params.tok_embeddings, N, D, m->tp.vocab_offset,
                          m->tp.vocab_size);
    tp_sum(m, x0, (size_t)N * D);
    for (int l = 0; l < c->n_layers; l++) {
        attention_block_forward(m, l, l > 0); /* layer 0's norm reads the embedding */
        ffn_block_forward(m, l);
    }
    if (c->n_layers == 0)
        be->rmsnorm_forward(m->final_norm, m->final_rstd, m->x_final, m->params.norm, N, D,
                            (float)c->norm_eps);
    m->classifier_done = 0;
    if (!targets) return;
    for (int r0 = 0; r0 < N; r0 += m->logits_chunk) {
        int n = N - r0 < m->logits_chunk ? N - r0 : m->logits_chunk;
        classifier_forward(m, r0, n);
        if (dloss_scale && m->n_targets > 0) classifier_backward(m, r0, n, *dloss_scale, 1);
    }
    if (dloss_scale) {
        m->classifier_done = 1;
        m->classifier_dloss_scale = *dloss_scale;
    }
}

float model_forward(dt_model *m, const int32_t *inputs, const int32_t *targets) {
    int N = m->B * m->T;
    forward_queue(m, stage_next(m, inputs, targets), targets != NULL, NULL);
    m->last_loss = 0;
    if (!targets) return 0;
    /* the mean is taken on the host in double, in row order, so it does not depend on threads */
    float *losses = dt_malloc((size_t)N * sizeof(float));
    if (!losses) return NAN;
    m->be->copy_to_host(losses, m->losses, (size_t)N * sizeof(float));
    double sum = 0;
    for (int i = 0; i < N; i++) sum += losses[i];
    dt_free(losses);
    m->last_loss = m->n_targets ? (float)(sum / m->n_targets) : 0.0f;
    return m->last_loss;
}

/* The training forward of a staged buffer (with targets or not), its mean loss added to
 * *loss_acc on the backend. */
static void forward_train(dt_model *m, const int32_t *staged, int targets, double *loss_acc,
                          float dloss_scale) {
    forward_queue(m, staged, targets, &dloss_scale);
    m->last_loss = NAN;
    if (targets) m->be->loss_accumulate(loss_acc, m->losses, m->B * m->T, m->target_count);
}

void model_forward_train(dt_model *m, const int32_t *inputs, const int32_t *targets,
                         double *loss_acc, float dloss_scale) {
    forward_train(m, stage_next(m, inputs, targets), targets != NULL, loss_acc, dloss_scale);
}

void model_forward_train_slot(dt_model *m, int k, double *loss_acc, float dloss_scale) {
    forward_train(m, slot_of(m, k), 1, loss_acc, dloss_scale);
}

/* ---- greedy predictions ---- */

/* One row's logits at a time: the rows asked for are a few scattered positions (answer digits),
 * so materialising whole chunks would waste the work. The per-row maxima are reduced in batches
 * of up to logits_chunk rows through the classifier's scratch, which holds at least that many. */
dt_status model_argmax_rows(dt_model *m, int32_t *out, const int32_t *rows, int n) {
    const dt_backend *be = m->be;
    int N = m->B * m->T, D = m->cfg.d_model, V = m->tp.vocab_size, v0 = m->tp.vocab_offset;
    for (int i = 0; i < n; i++) {
        if (rows[i] < 0 || rows[i] >= N) {
            dt_error("model_argmax_rows: rows[%d] is %d, expected a row of the last forward in "
                     "[0, %d) (micro-batch %d x %d)", i, (int)rows[i], N, m->B, m->T);
            return DT_ERR_INPUT;
        }
    }
    int chunk = m->logits_chunk;
    float *host = dt_malloc(((size_t)V + 2 * (size_t)chunk) * sizeof(float));
    if (!host) {
        dt_error("model_argmax_rows: out of memory for %d logits", V);
        return DT_ERR_RUNTIME;
    }
    float *best = host + V, *key = best + chunk; /* (chunk) each */
    for (int r0 = 0; r0 < n; r0 += chunk) {
        int k = n - r0 < chunk ? n - r0 : chunk;
        for (int j = 0; j < k; j++) {
            const dt_operand *xn = dt_operand_at(be, m->final_norm, (size_t)rows[r0 + j] * D);
            be->matmul_forward(m->logits, xn, m->params.output, 1, D, V, 0);
            be->copy_to_host(host, m->logits, (size_t)V * sizeof(float));
            /* strict > keeps the first of equal maxima; NaNs never win */
            int arg = -1;
            float mx = -INFINITY;
            for (int v = 0; v < V; v++)
                if (host[v] > mx || (arg < 0 && host[v] == mx)) {
                    mx = host[v];
                    arg = v;
                }
            best[j] = mx;
            out[r0 + j] = arg < 0 ? -1 : v0 + arg;
        }
        if (!m->comm) continue;
        /* the values travel unchanged (no arithmetic), so equality with the maximum is exact */
        be->copy_from_host(m->logits, best, (size_t)k * sizeof(float));
        tp_max(m, m->logits, (size_t)k);
        be->copy_to_host(key, m->logits, (size_t)k * sizeof(float));
        for (int j = 0; j < k; j++)
            key[j] = out[r0 + j] >= 0 && best[j] == key[j] ? -(float)out[r0 + j] : -INFINITY;
        be->copy_from_host(m->logits, key, (size_t)k * sizeof(float));
        tp_max(m, m->logits, (size_t)k);
        be->copy_to_host(key, m->logits, (size_t)k * sizeof(float));
        for (int j = 0; j < k; j++) out[r0 + j] = isinf(key[j]) ? -1 : (int32_t)-key[j];
    }
    dt_free(host);
    return DT_OK;
}

/* ---- backward ---- */

/* dres as the operand that the w_down and out_proj backward products read. In bf16 mode that is
 * dres_op, the rounding the norms' backwards store beside each accumulation of dres (so no
 * product rounds dres itself); in fp32 mode an operand is an fp32 buffer, so dres IS its own
 * operand and no copy exists (dres_op NULL: the norms' backwards are given none to write). */
static const dt_operand *dres_operand(const dt_model *m) {
    return m->dres_op ? m->dres_op : (const dt_operand *)m->dres;
}

static void ffn_block_backward(dt_model *m, int l) {
    const dt_backend *be = m->be;
    const dt_model_config *c = &m->cfg;
    const dt_layer_params *w = &m->params.layers[l];
    const dt_layer_params *g = &m->grads.layers[l];
    dt_layer_acts *x = &m->acts[l];
    int N = m->B * m->T, D = c->d_model, F = m->tp.ffn_dim;
    /* dres holds the gradient of this layer's output x_out = y + ffn(y), whole on every rank */
    be->matmul_backward_operand(m->dwide, g->w_down, dres_operand(m), D, x->hidden, w->w_down, N,
                                F, D, 0);
    be->swiglu_backward(m->dgate_up, dt_operand_at(m->be, m->dgate_up, F), m->dwide, x->gate_up,
                        dt_operand_at(m->be, x->gate_up, F), N, F, 2 * F);
    /* dgate_up is an operand: in bf16 mode stored rounded once by the SwiGLU backward and read
     * by the products as it is (no fp32 write, no rounding copy); one product for the gate and
     * up weights (their gradients are adjacent as they are), whose dinp sums over both */
    be->matmul_backward_operand(m->dnormed, g->w_gate, m->dgate_up, 2 * F, x->ffn_in, w->w_gate,
                                N, D, 2 * F, 0);
    /* each rank's share of the FFN contributes part of the norm output's gradient; once it is
     * summed, the norm's backward (and its weight gradient) is the same on every rank */
    tp_sum(m, m->dnormed, (size_t)N * D);
    /* dres becomes dy: the residual path plus the norm path */
    be->rmsnorm_backward(m->dres, m->dres_op, g->ffn_norm, m->dnormed, x->y, w->ffn_norm,
                         x->ffn_rstd, N, D);
}

static void attention_block_backward(dt_model *m, int l) {
    const dt_backend *be = m->be;
    const dt_model_config *c = &m->cfg;
    const dt_layer_params *w = &m->params.layers[l];
    const dt_layer_params *g = &m->grads.layers[l];
    dt_layer_acts *x = &m->acts[l];
    attn_dims a = dims_of(c, &m->tp);
    int B = m->B, T = m->T, N = B * T, D = c->d_model;
    /* RoPE's backward is the attention backward's (dt_rope_grads): m->dq, m->dk its scratch */
    const dt_rope_grads rope = {m->dq_rot, m->dk_rot, (float)c->rope_theta};
    int dinp_accumulated = 0;

    be->matmul_backward_operand(m->dwide, g->out_proj, dres_operand(m), D, x->attn_out,
                                w->out_proj, N, a.A, D, 0);
    switch (c->arch) {
    case DT_ARCH_DIFF: {
        float li = (float)config_lambda_init(c, l);
        /* dlambda and dgamma cover this rank's heads only: model_reduce_tp_grads sums them */
        be->memset_zero(m->dlam, sizeof(float));
        if (c->subln == DT_SUBLN_SCALAR) /* in place: dwide becomes d(attn_pre) */
            be->head_scale_backward(m->dwide, g->subln_scale, m->dwide, x->attn_pre,
                                    w->subln_scale, N, a.H, 2 * a.d);
        be->diffattn_backward(m->dq, m->dk, m->dv, g->subln, m->dlam, m->dwide, x->q, x->k, x->v,
                              x->o1, x->o2, x->attn_lse, x->sub_rstd, x->lambda, w->subln, li, B,
                              T, a.H, a.Hkv, a.d, &rope);
        if (c->lambda_learnable) /* a frozen lambda's gradient in dlam is dropped */
            be->difflambda_backward(g->lambda_q1, g->lambda_k1, g->lambda_q2, g->lambda_k2,
                                    m->dlam, w->lambda_q1, w->lambda_k1, w->lambda_q2,
                                    w->lambda_k2, a.d);
        break;
    }
    case DT_ARCH_DIFF_V2:
        be->diffv2_combine_backward(m->dheads, m->dlam, m->dwide, x->heads, x->lam_logit, N, a.H,
                                    a.d);
        be->matmul_backward(m->dnormed, g->lambda_proj, m->dlam, x->attn_in, w->lambda_proj, N, D,
                            a.H, 0);
        dinp_accumulated = 1;
        be->attention_backward(m->dq, m->dk, m->dv, m->dheads, x->q, x->k, x->v, x->heads,
                               x->attn_lse, B, T, a.q_heads, a.Hkv, a.d, a.dv, &rope);
        break;
    case DT_ARCH_TRANSFORMER:
        be->attention_backward(m->dq, m->dk, m->dv, m->dwide, x->q, x->k, x->v, x->attn_out,
                               x->attn_lse, B, T, a.q_heads, a.Hkv, a.d, a.dv, &rope);
        break;
    }
    /* the products' output gradients are operands, stored once by their producers (dv, and dq
     * and dk rotated back through RoPE, by the attention's backward; in bf16 mode rounded as
     * stored) and read by the products as they are: no rounding copies */
    be->matmul_backward_operand(m->dnormed, g->q_proj, m->dq_rot, a.q, x->attn_in, w->q_proj, N,
                                D, a.q, dinp_accumulated);
    be->matmul_backward_operand(m->dnormed, g->k_proj, m->dk_rot, a.k, x->attn_in, w->k_proj, N,
                                D, a.k, 1);
    be->matmul_backward_operand(m->dnormed, g->v_proj, m->dv, a.v, x->attn_in, w->v_proj, N, D,
                                a.v, 1);
    tp_sum(m, m->dnormed, (size_t)N * D);
    be->rmsnorm_backward(m->dres, m->dres_op, g->attention_norm, m->dnormed, x->x_in,
                         w->attention_norm, x->attn_rstd, N, D);
}

/* ---- gradient ranges ---- */

/* Start of the gradients of layer l in the flat buffer; l == n_layers: the final norm, which
 * follows the last layer. Each layer's tensors are contiguous, from its attention_norm on. */
static size_t layer_grads_first(const dt_model *m, int l) {
    const float *p = l < m->cfg.n_layers ? m->grads.layers[l].attention_norm : m->grads.norm;
    return (size_t)(p - m->grads_mem);
}

static void grads_ready(dt_model *m, size_t first, size_t end) {
    if (m->grad_ready) m->grad_ready(m->grad_ready_ctx, first, end - first);
}

/* Layer l's range: its tensors, up to the next layer's (or the final norm). */
static void layer_grads_ready(dt_model *m, int l) {
    grads_ready(m, layer_grads_first(m, l), layer_grads_first(m, l + 1));
}

static void head_grads_ready(dt_model *m) {
    grads_ready(m, layer_grads_first(m, m->cfg.n_layers), m->layout.total);
}

static void embedding_grads_ready(dt_model *m) { grads_ready(m, 0, layer_grads_first(m, 0)); }

void model_set_grad_ready_hook(dt_model *m, dt_grad_ready_fn fn, void *ctx) {
    m->grad_ready = fn;
    m->grad_ready_ctx = ctx;
}

void model_backward(dt_model *m, float dloss_scale) {
    const dt_backend *be = m->be;
    const dt_model_config *c = &m->cfg;
    int N = m->B * m->T, D = c->d_model;
    const int classifier_done = m->classifier_done;
    m->classifier_done = 0;
    if (classifier_done && dloss_scale != m->classifier_dloss_scale) {
        /* the training forward already added the classifier's gradients at its scale */
        dt_error("model_backward: dloss_scale %g, but model_forward_train was given %g",
                 (double)dloss_scale, (double)m->classifier_dloss_scale);
        abort();
    }
    if (m->n_targets == 0) {
        /* no targets: the loss is a constant 0 and the gradients are already complete; the hook
         * still hears of every range, since other data-parallel ranks may have targets and wait
         * for this rank's share of the reduction */
        head_grads_ready(m);
        for (int l = c->n_layers - 1; l >= 0; l--) layer_grads_ready(m, l);
        embedding_grads_ready(m);
        return;
    }

    /* classifier: after model_forward, logits are recomputed chunk by chunk rather than kept
     * for all rows; model_forward_train did this part already */
    for (int r0 = 0; !classifier_done && r0 < N; r0 += m->logits_chunk)
        classifier_backward(m, r0, N - r0 < m->logits_chunk ? N - r0 : m->logits_chunk,
                            dloss_scale, 0);
    tp_sum(m, m->dnormed, (size_t)N * D); /* each vocabulary slice's share of the gradient */
    be->memset_zero(m->dres, (size_t)N * D * sizeof(float));
    be->rmsnorm_backward(m->dres, m->dres_op, m->grads.norm, m->dnormed, m->x_final,
                         m->params.norm, m->final_rstd, N, D);
    head_grads_ready(m);
    for (int l = c->n_layers - 1; l >= 0; l--) {
        /* the shared set still holds the last layer from the forward */
        if (m->recompute && l + 1 < c->n_layers) layer_recompute(m, l);
        ffn_block_backward(m, l);
        attention_block_backward(m, l);
        layer_grads_ready(m, l);
    }
    be->embedding_backward(m->grads.tok_embeddings, m->dres, m->inputs, N, D, m->tp.vocab_offset,
                           m->tp.vocab_size);
    embedding_grads_ready(m);
}

void model_reduce_tp_grads_range(dt_model *m, size_t first, size_t count) {
    if (!m->comm) return;
    for (int i = 0; i < m->layout.n_tensors; i++) {
        const dt_tensor_spec *t = &m->layout.tensors[i];
        if (t->tp_partial && t->offset >= first && t->offset + t->numel <= first + count)
            tp_sum(m, m->grads_mem + t->offset, t->numel);
    }
}

void model_reduce_tp_grads(dt_model *m) { model_reduce_tp_grads_range(m, 0, m->layout.total); }

void model_params_to_host(const dt_model *m, float *host) {
    m->be->copy_to_host(host, m->params_mem, m->layout.total * sizeof(float));
}

void model_params_from_host(dt_model *m, const float *host) {
    m->be->copy_from_host(m->params_mem, host, m->layout.total * sizeof(float));
}

void model_grads_to_host(const dt_model *m, float *host) {
    m->be->copy_to_host(host, m->grads_mem, m->layout.total * sizeof(float));
}

double model_flops_per_token(const dt_model_config *cfg, int seq_len) {
    /* 6 FLOPs per parameter used in a matrix product (2 forward, 4 backward), plus the
     * attention products counted without the causal discount (the PaLM / Megatron convention,
     * so MFU figures compare with theirs). Embedding lookups are free; the LM head is not. */
    dt_tp_shape whole = tp_shape_of(cfg, 0, 1);
    attn_dims a = dims_of(cfg, &whole);
    double D = cfg->d_model, F = cfg->ffn_dim, V = cfg->vocab_size;
    double per_layer = D * (a.q + a.k + a.v) + (double)a.A * D + 3.0 * D * F;
    if (cfg->arch == DT_ARCH_DIFF_V2) per_layer += D * a.H;
    double matmul_params = cfg->n_layers * per_layer + V * D;
    /* scores: q_heads * d per key; values: q_heads * dv per key (diff: 2 branches of width 2d) */
    double attn = (double)cfg->n_layers * 2.0 * seq_len * ((double)a.q + (double)a.q_heads * a.dv);
    return 6.0 * matmul_params + 3.0 * attn;
}
