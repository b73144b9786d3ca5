#include "model/params.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "util/alloc.h"
#include "util/rng.h"

/* Shapes of one layer's attention projections (rows x cols of each Linear). */
typedef struct attn_shapes {
    int64_t q_rows, k_rows, v_rows, out_cols;
} attn_shapes;

static attn_shapes attention_shapes(const dt_model_config *m) {
    int d = config_head_dim(m);
    attn_shapes s;
    switch (m->arch) {
    case DT_ARCH_DIFF:
        s.q_rows = 2LL * m->n_heads * d;
        s.k_rows = 2LL * m->n_kv_heads * d;
        s.v_rows = 2LL * m->n_kv_heads * d; /* H_kv heads of width 2d */
        s.out_cols = 2LL * m->n_heads * d;
        break;
    case DT_ARCH_DIFF_V2:
        s.q_rows = 2LL * m->n_heads * d;
        s.k_rows = (int64_t)m->n_kv_heads * d;
        s.v_rows = (int64_t)m->n_kv_heads * d;
        s.out_cols = (int64_t)m->n_heads * d;
        break;
    default:
        s.q_rows = (int64_t)m->n_heads * d;
        s.k_rows = (int64_t)m->n_kv_heads * d;
        s.v_rows = (int64_t)m->n_kv_heads * d;
        s.out_cols = (int64_t)m->n_heads * d;
        break;
    }
    return s;
}

/* Appends one tensor to the table (or only counts it when t is NULL). */
static void add_tensor(dt_param_layout *L, dt_tensor_spec *t, const char *name, int ndim,
                       int64_t s0, int64_t s1, dt_tensor_kind kind) {
    size_t numel = (size_t)s0 * (size_t)(ndim == 2 ? s1 : 1);
    if (t) {
        dt_tensor_spec *e = &t[L->n_tensors];
        memset(e, 0, sizeof *e);
        snprintf(e->name, sizeof e->name, "%s", name);
        e->ndim = ndim;
        e->shape[0] = s0;
        e->shape[1] = ndim == 2 ? s1 : 1;
        e->numel = numel;
        e->offset = L->total;
        e->kind = kind;
        e->decay = kind == DT_TENSOR_EMBEDDING || kind == DT_TENSOR_LINEAR ||
                   kind == DT_TENSOR_LINEAR_OUT;
    }
    L->n_tensors++;
    L->total += numel;
}

/* One pass over the model's tensors in layout order; with t == NULL it only counts. */
static void enumerate(dt_param_layout *L, dt_tensor_spec *t, const dt_model_config *m) {
    int64_t D = m->d_model, F = m->ffn_dim, V = m->vocab_size;
    int d = config_head_dim(m);
    attn_shapes a = attention_shapes(m);
    char name[DT_TENSOR_NAME_MAX];
    L->n_tensors = 0;
    L->total = 0;
    add_tensor(L, t, "tok_embeddings.weight", 2, V, D, DT_TENSOR_EMBEDDING);
    for (int i = 0; i < m->n_layers; i++) {
#define LAYER_TENSOR(suffix, ndim, s0, s1, kind)                                                   \
    do {                                                                                           \
        snprintf(name, sizeof name, "layers.%d.%s", i, suffix);                                    \
        add_tensor(L, t, name, ndim, s0, s1, kind);                                                \
    } while (0)
        LAYER_TENSOR("attention_norm.weight", 1, D, 1, DT_TENSOR_NORM);
        LAYER_TENSOR("attn.q_proj.weight", 2, a.q_rows, D, DT_TENSOR_LINEAR);
        LAYER_TENSOR("attn.k_proj.weight", 2, a.k_rows, D, DT_TENSOR_LINEAR);
        LAYER_TENSOR("attn.v_proj.weight", 2, a.v_rows, D, DT_TENSOR_LINEAR);
        LAYER_TENSOR("attn.out_proj.weight", 2, D, a.out_cols, DT_TENSOR_LINEAR_OUT);
        if (m->arch == DT_ARCH_DIFF) {
            LAYER_TENSOR("attn.lambda_q1", 1, d, 1, DT_TENSOR_LAMBDA);
            LAYER_TENSOR("attn.lambda_k1", 1, d, 1, DT_TENSOR_LAMBDA);
            LAYER_TENSOR("attn.lambda_q2", 1, d, 1, DT_TENSOR_LAMBDA);
            LAYER_TENSOR("attn.lambda_k2", 1, d, 1, DT_TENSOR_LAMBDA);
            if (m->subln) LAYER_TENSOR("attn.subln.weight", 1, 2LL * d, 1, DT_TENSOR_NORM);
        }
        if (m->arch == DT_ARCH_DIFF_V2)
            LAYER_TENSOR("attn.lambda_proj.weight", 2, m->n_heads, D, DT_TENSOR_LINEAR);
        LAYER_TENSOR("ffn_norm.weight", 1, D, 1, DT_TENSOR_NORM);
        LAYER_TENSOR("ffn.w_gate.weight", 2, F, D, DT_TENSOR_LINEAR);
        LAYER_TENSOR("ffn.w_up.weight", 2, F, D, DT_TENSOR_LINEAR);
        LAYER_TENSOR("ffn.w_down.weight", 2, D, F, DT_TENSOR_LINEAR_OUT);
#undef LAYER_TENSOR
    }
    add_tensor(L, t, "norm.weight", 1, D, 1, DT_TENSOR_NORM);
    if (!m->tie_embeddings) add_tensor(L, t, "output.weight", 2, V, D, DT_TENSOR_EMBEDDING);
}

dt_status param_layout_init(dt_param_layout *layout, const dt_model_config *m) {
    memset(layout, 0, sizeof *layout);
    enumerate(layout, NULL, m);
    layout->tensors = dt_calloc((size_t)layout->n_tensors, sizeof *layout->tensors);
    if (!layout->tensors) {
        dt_error("out of memory for the parameter table (%d tensors)", layout->n_tensors);
        return DT_ERR_RUNTIME;
    }
    enumerate(layout, layout->tensors, m);
    return DT_OK;
}

void param_layout_free(dt_param_layout *layout) {
    dt_free(layout->tensors);
    memset(layout, 0, sizeof *layout);
}

const dt_tensor_spec *param_layout_find(const dt_param_layout *layout, const char *name) {
    for (int i = 0; i < layout->n_tensors; i++)
        if (strcmp(layout->tensors[i].name, name) == 0) return &layout->tensors[i];
    return NULL;
}

static float *find_ptr(const dt_param_layout *L, float *base, const char *name) {
    const dt_tensor_spec *t = param_layout_find(L, name);
    return t ? base + t->offset : NULL;
}

dt_status params_bind(dt_params *p, const dt_param_layout *layout, const dt_model_config *m,
                      float *base) {
    memset(p, 0, sizeof *p);
    p->layers = dt_calloc((size_t)m->n_layers, sizeof *p->layers);
    if (!p->layers) {
        dt_error("out of memory binding %d layers", m->n_layers);
        return DT_ERR_RUNTIME;
    }
    p->n_layers = m->n_layers;
    p->tok_embeddings = find_ptr(layout, base, "tok_embeddings.weight");
    p->norm = find_ptr(layout, base, "norm.weight");
    p->output = m->tie_embeddings ? p->tok_embeddings : find_ptr(layout, base, "output.weight");
    char name[DT_TENSOR_NAME_MAX];
    for (int i = 0; i < m->n_layers; i++) {
        dt_layer_params *l = &p->layers[i];
#define BIND(field, suffix)                                                                        \
    do {                                                                                           \
        snprintf(name, sizeof name, "layers.%d.%s", i, suffix);                                    \
        l->field = find_ptr(layout, base, name);                                                   \
    } while (0)
        BIND(attention_norm, "attention_norm.weight");
        BIND(q_proj, "attn.q_proj.weight");
        BIND(k_proj, "attn.k_proj.weight");
        BIND(v_proj, "attn.v_proj.weight");
        BIND(out_proj, "attn.out_proj.weight");
        BIND(lambda_q1, "attn.lambda_q1");
        BIND(lambda_k1, "attn.lambda_k1");
        BIND(lambda_q2, "attn.lambda_q2");
        BIND(lambda_k2, "attn.lambda_k2");
        BIND(subln, "attn.subln.weight");
        BIND(lambda_proj, "attn.lambda_proj.weight");
        BIND(ffn_norm, "ffn_norm.weight");
        BIND(w_gate, "ffn.w_gate.weight");
        BIND(w_up, "ffn.w_up.weight");
        BIND(w_down, "ffn.w_down.weight");
#undef BIND
    }
    return DT_OK;
}

void params_unbind(dt_params *p) {
    dt_free(p->layers);
    memset(p, 0, sizeof *p);
}

void params_init_host(float *host, const dt_param_layout *layout, const dt_model_config *m,
                      uint64_t seed) {
    /* GPT-2 / Megatron scheme: N(0, std) for embeddings and projections, the projections
     * that write into the residual stream scaled by 1/sqrt(2 n_layers), ones for every gain,
     * and N(0, 0.1^2) for the lambda vectors as the paper's reference code does. */
    double out_std = m->init_std / sqrt(2.0 * m->n_layers);
    for (int i = 0; i < layout->n_tensors; i++) {
        const dt_tensor_spec *t = &layout->tensors[i];
        float *x = host + t->offset;
        double std = 0;
        switch (t->kind) {
        case DT_TENSOR_NORM:
            for (size_t j = 0; j < t->numel; j++) x[j] = 1.0f;
            continue;
        case DT_TENSOR_EMBEDDING:
        case DT_TENSOR_LINEAR: std = m->init_std; break;
        case DT_TENSOR_LINEAR_OUT: std = out_std; break;
        case DT_TENSOR_LAMBDA: std = 0.1; break;
        }
        uint64_t key = rng_key(seed, t->name);
#pragma omp parallel for schedule(static)
        for (size_t j = 0; j < t->numel; j++) x[j] = (float)(std * rng_normal(key, j));
    }
}
