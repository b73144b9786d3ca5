#include "model/params.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "util/alloc.h"
#include "util/rng.h"

dt_tp_shape tp_shape_of(const dt_model_config *m, int rank, int size) {
    dt_tp_shape t;
    t.rank = rank;
    t.size = size;
    t.n_heads = m->n_heads / size;
    t.n_kv_heads = m->n_kv_heads / size;
    t.ffn_dim = m->ffn_dim / size;
    int base = m->vocab_size / size, extra = m->vocab_size % size;
    t.vocab_size = base + (rank < extra);
    t.vocab_offset = rank * base + (rank < extra ? rank : extra);
    return t;
}

/* Rows of q/k/v and columns of out_proj per head, by architecture (d = head dim). */
typedef struct attn_widths {
    int64_t q_per_head;  /* rows of q_proj per (DIFF) head */
    int64_t kv_per_head; /* rows of k_proj per kv head (or kv group) */
    int64_t v_per_head;  /* rows of v_proj per kv head */
    int64_t out_per_head;
} attn_widths;

static attn_widths attention_widths(const dt_model_config *m) {
    int64_t d = config_head_dim(m);
    attn_widths w;
    switch (m->arch) {
    case DT_ARCH_DIFF: /* q-heads 2h, 2h+1; k-heads 2g, 2g+1; v-head g of width 2d */
        w = (attn_widths){2 * d, 2 * d, 2 * d, 2 * d};
        break;
    case DT_ARCH_DIFF_V2: /* 2 q-heads per DIFF head; kv heads and the output of width d */
        w = (attn_widths){2 * d, d, d, d};
        break;
    default:
        w = (attn_widths){d, d, d, d};
        break;
    }
    return w;
}

/* Appends one tensor (or only counts it when t is NULL). The global shape is (g0, g1); a split
 * tensor holds `count` rows or columns from `first`. */
typedef struct tensor_def {
    const char *name;
    int ndim;
    int64_t g0, g1;
    dt_tp_split split;
    int64_t first, count;
    dt_tensor_kind kind;
    int tp_partial;
} tensor_def;

static void add_tensor(dt_param_layout *L, dt_tensor_spec *t, tensor_def d) {
    int64_t s0 = d.split == DT_SPLIT_ROWS ? d.count : d.g0;
    int64_t s1 = d.ndim == 2 ? (d.split == DT_SPLIT_COLS ? d.count : d.g1) : 1;
    size_t numel = (size_t)s0 * (size_t)s1;
    if (t) {
        dt_tensor_spec *e = &t[L->n_tensors];
        memset(e, 0, sizeof *e);
        snprintf(e->name, sizeof e->name, "%s", d.name);
        e->ndim = d.ndim;
        e->shape[0] = s0;
        e->shape[1] = s1;
        e->global_shape[0] = d.g0;
        e->global_shape[1] = d.ndim == 2 ? d.g1 : 1;
        e->split = d.split;
        e->split_offset = d.split == DT_SPLIT_NONE ? 0 : d.first;
        e->tp_partial = d.tp_partial;
        e->numel = numel;
        e->offset = L->total;
        e->kind = d.kind;
        e->decay = d.kind == DT_TENSOR_EMBEDDING || d.kind == DT_TENSOR_LINEAR ||
                   d.kind == DT_TENSOR_LINEAR_OUT;
    }
    L->n_tensors++;
    L->total += numel;
}

/* One pass over the model's tensors in layout order; with t == NULL it only counts. */
static void enumerate(dt_param_layout *L, dt_tensor_spec *t, const dt_model_config *m) {
    int64_t D = m->d_model, F = m->ffn_dim, V = m->vocab_size, H = m->n_heads, Hkv = m->n_kv_heads;
    int64_t d = config_head_dim(m);
    dt_tp_shape tp = tp_shape_of(m, L->tp_rank, L->tp_size);
    attn_widths w = attention_widths(m);
    int64_t h0 = (int64_t)tp.rank * tp.n_heads, g0 = (int64_t)tp.rank * tp.n_kv_heads;
    int64_t f0 = (int64_t)tp.rank * tp.ffn_dim;
    char name[DT_TENSOR_NAME_MAX];
    L->n_tensors = 0;
    L->total = 0;
#define T2(nm, a, b, sp, first, count, kind) add_tensor(L, t, (tensor_def){nm, 2, a, b, sp, first, count, kind, 0})
#define T1(nm, a, kind, partial) add_tensor(L, t, (tensor_def){nm, 1, a, 1, DT_SPLIT_NONE, 0, 0, kind, partial})
    T2("tok_embeddings.weight", V, D, DT_SPLIT_ROWS, tp.vocab_offset, tp.vocab_size,
       DT_TENSOR_EMBEDDING);
    for (int i = 0; i < m->n_layers; i++) {
#define LNAME(suffix) (snprintf(name, sizeof name, "layers.%d.%s", i, suffix), name)
        T1(LNAME("attention_norm.weight"), D, DT_TENSOR_NORM, 0);
        T2(LNAME("attn.q_proj.weight"), H * w.q_per_head, D, DT_SPLIT_ROWS, h0 * w.q_per_head,
           tp.n_heads * w.q_per_head, DT_TENSOR_LINEAR);
        T2(LNAME("attn.k_proj.weight"), Hkv * w.kv_per_head, D, DT_SPLIT_ROWS, g0 * w.kv_per_head,
           tp.n_kv_heads * w.kv_per_head, DT_TENSOR_LINEAR);
        T2(LNAME("attn.v_proj.weight"), Hkv * w.v_per_head, D, DT_SPLIT_ROWS, g0 * w.v_per_head,
           tp.n_kv_heads * w.v_per_head, DT_TENSOR_LINEAR);
        T2(LNAME("attn.out_proj.weight"), D, H * w.out_per_head, DT_SPLIT_COLS,
           h0 * w.out_per_head, tp.n_heads * w.out_per_head, DT_TENSOR_LINEAR_OUT);
        if (m->arch == DT_ARCH_DIFF) {
            /* a frozen lambda (model.lambda: a number) has nothing to learn */
            if (m->lambda_learnable) {
                T1(LNAME("attn.lambda_q1"), d, DT_TENSOR_LAMBDA, 1);
                T1(LNAME("attn.lambda_k1"), d, DT_TENSOR_LAMBDA, 1);
                T1(LNAME("attn.lambda_q2"), d, DT_TENSOR_LAMBDA, 1);
                T1(LNAME("attn.lambda_k2"), d, DT_TENSOR_LAMBDA, 1);
            }
            if (m->subln == DT_SUBLN_ON)
                T1(LNAME("attn.subln.weight"), 2 * d, DT_TENSOR_NORM, 1);
            /* one gain per DIFF head: split by whole heads like q_proj's rows, so each rank's
             * gradient is complete (not tp_partial) */
            if (m->subln == DT_SUBLN_SCALAR)
                add_tensor(L, t, (tensor_def){LNAME("attn.subln.scale"), 1, H, 1, DT_SPLIT_ROWS,
                                              h0, tp.n_heads, DT_TENSOR_NORM, 0});
        }
        if (m->arch == DT_ARCH_DIFF_V2)
            T2(LNAME("attn.lambda_proj.weight"), H, D, DT_SPLIT_ROWS, h0, tp.n_heads,
               DT_TENSOR_LINEAR);
        T1(LNAME("ffn_norm.weight"), D, DT_TENSOR_NORM, 0);
        T2(LNAME("ffn.w_gate.weight"), F, D, DT_SPLIT_ROWS, f0, tp.ffn_dim, DT_TENSOR_LINEAR);
        T2(LNAME("ffn.w_up.weight"), F, D, DT_SPLIT_ROWS, f0, tp.ffn_dim, DT_TENSOR_LINEAR);
        T2(LNAME("ffn.w_down.weight"), D, F, DT_SPLIT_COLS, f0, tp.ffn_dim, DT_TENSOR_LINEAR_OUT);
#undef LNAME
    }
    T1("norm.weight", D, DT_TENSOR_NORM, 0);
    if (!m->tie_embeddings)
        T2("output.weight", V, D, DT_SPLIT_ROWS, tp.vocab_offset, tp.vocab_size,
           DT_TENSOR_EMBEDDING);
#undef T1
#undef T2
}

dt_status param_layout_init(dt_param_layout *layout, const dt_model_config *m) {
    return param_layout_init_tp(layout, m, 0, 1);
}

dt_status param_layout_init_tp(dt_param_layout *layout, const dt_model_config *m, int tp_rank,
                               int tp_size) {
    memset(layout, 0, sizeof *layout);
    const char *what = NULL;
    int size = 0;
    if (m->n_heads % tp_size) what = "model.n_heads", size = m->n_heads;
    else if (m->n_kv_heads % tp_size) what = "model.n_kv_heads", size = m->n_kv_heads;
    else if (m->ffn_dim % tp_size) what = "model.ffn_dim", size = m->ffn_dim;
    else if (m->vocab_size < tp_size) what = "model.vocab_size", size = m->vocab_size;
    if (what) {
        dt_error("%s (%d) does not split over parallel.tp = %d ranks: it must be a multiple of tp "
                 "(whole heads and kv groups live on one rank)", what, size, tp_size);
        return DT_ERR_INPUT;
    }
    layout->tp_rank = tp_rank;
    layout->tp_size = tp_size;
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

int param_is_product_weight(const dt_tensor_spec *t, const dt_model_config *m) {
    switch (t->kind) {
    case DT_TENSOR_LINEAR:
    case DT_TENSOR_LINEAR_OUT:
        return 1;
    case DT_TENSOR_EMBEDDING:
        return strcmp(t->name, "output.weight") == 0 || m->tie_embeddings;
    default:
        return 0;
    }
}

/* Whether tensors t, then u (the next in layout order), are a layer's gate and up weights,
 * adjacent in memory. */
static int gate_then_up(const dt_tensor_spec *t, const dt_tensor_spec *u) {
    static const char gate[] = "ffn.w_gate.weight", up[] = "ffn.w_up.weight";
    size_t lt = strlen(t->name), lu = strlen(u->name), lg = sizeof gate - 1, lp = sizeof up - 1;
    return lt > lg && lu > lp && strcmp(t->name + lt - lg, gate) == 0 &&
           strcmp(u->name + lu - lp, up) == 0 && lt - lg == lu - lp &&
           strncmp(t->name, u->name, lt - lg) == 0 && u->offset == t->offset + t->numel;
}

int param_product_matrix_next(const dt_param_layout *layout, const dt_model_config *m, int *i,
                              size_t *offset, size_t *numel) {
    for (; *i < layout->n_tensors; ++*i) {
        const dt_tensor_spec *t = &layout->tensors[*i];
        if (!param_is_product_weight(t, m)) continue;
        *offset = t->offset;
        *numel = t->numel;
        if (*i + 1 < layout->n_tensors && gate_then_up(t, &layout->tensors[*i + 1]))
            *numel += layout->tensors[++*i].numel;
        ++*i;
        return 1;
    }
    return 0;
}

uint64_t param_product_copy_bytes(const dt_param_layout *layout, const dt_model_config *m) {
    uint64_t bytes = 0;
    size_t offset, numel;
    for (int i = 0; param_product_matrix_next(layout, m, &i, &offset, &numel);)
        bytes += param_product_copy_size(numel);
    return bytes;
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
        BIND(subln_scale, "attn.subln.scale");
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
        int64_t rows = t->shape[0], cols = t->shape[1], gcols = t->global_shape[1];
        int64_t r0 = t->split == DT_SPLIT_ROWS ? t->split_offset : 0;
        int64_t c0 = t->split == DT_SPLIT_COLS ? t->split_offset : 0;
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++)
                x[r * cols + c] = (float)(std * rng_normal(key, (uint64_t)((r0 + r) * gcols + c0 + c)));
    }
}
