/* Parameter layout: the table of named tensors (DESIGN "Parameter names and layouts"), their
 * shapes and offsets in one flat allocation, and named pointers bound into any buffer with that
 * layout (parameters, gradients, AdamW m and v all share it). */
#ifndef DT_PARAMS_H
#define DT_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include "launch/config.h"

#define DT_TENSOR_NAME_MAX 96

typedef enum dt_tensor_kind {
    DT_TENSOR_EMBEDDING = 0, /* tok_embeddings, output */
    DT_TENSOR_LINEAR,        /* projections; init N(0, std) */
    DT_TENSOR_LINEAR_OUT,    /* out_proj, w_down: init N(0, std / sqrt(2 n_layers)) */
    DT_TENSOR_NORM,          /* RMSNorm and subln gains (weight and per-head scale): init 1 */
    DT_TENSOR_LAMBDA,        /* lambda_q1..k2: init N(0, 0.1^2) (SPEC) */
} dt_tensor_kind;

/* How a tensor is laid out over the tensor-parallel group (DESIGN "Tensor parallelism"). */
typedef enum dt_tp_split {
    DT_SPLIT_NONE = 0, /* replicated: every rank holds the whole tensor */
    DT_SPLIT_ROWS,     /* rows [split_offset, split_offset + shape[0]) of the global tensor */
    DT_SPLIT_COLS,     /* columns [split_offset, split_offset + shape[1]) */
} dt_tp_split;

typedef struct dt_tensor_spec {
    char name[DT_TENSOR_NAME_MAX];
    int ndim;
    int64_t shape[2];        /* this rank's slice (the global shape when tp == 1) */
    int64_t global_shape[2]; /* the tensor's one global shape, independent of the layout */
    dt_tp_split split;
    int64_t split_offset; /* first global row (ROWS) or column (COLS) of the slice */
    /* Replicated over TP, but each rank's gradient covers only its own heads (the lambda
     * vectors and the subln gain): the gradients are summed over the TP group. */
    int tp_partial;
    size_t numel;  /* of the slice */
    size_t offset; /* in elements from the start of the flat buffer */
    dt_tensor_kind kind;
    int decay; /* AdamW weight decay applies (not on norms, gains, lambda vectors) */
} dt_tensor_spec;

typedef struct dt_param_layout {
    int n_tensors;
    dt_tensor_spec *tensors;
    size_t total; /* elements on this rank */
    int tp_rank, tp_size;
} dt_param_layout;

/* Sizes of one tensor-parallel rank's share of the model: whole DIFF heads (both branches) and
 * whole kv groups, an equal share of the FFN, and a balanced slice of the vocabulary (the first
 * vocab % tp ranks hold one row more: no padding is needed). */
typedef struct dt_tp_shape {
    int rank, size;
    int n_heads, n_kv_heads, ffn_dim; /* local */
    int vocab_offset, vocab_size;     /* local rows [vocab_offset, vocab_offset + vocab_size) */
} dt_tp_shape;

/* The share of rank `rank` of `size`; the config must be validated and divisible (heads, kv
 * heads and ffn_dim by size). */
dt_tp_shape tp_shape_of(const dt_model_config *m, int rank, int size);

/* Pointers into one flat buffer. Absent tensors are NULL. Shapes as in DESIGN. */
typedef struct dt_layer_params {
    float *attention_norm; /* (D) */
    float *q_proj;         /* (2H*d, D); transformer (H*d, D) */
    float *k_proj;         /* (2Hkv*d, D); diff_v2 and transformer (Hkv*d, D) */
    float *v_proj;         /* diff (Hkv*2d, D); diff_v2 and transformer (Hkv*d, D) */
    float *out_proj;       /* (D, 2H*d); diff_v2 (D, H*d) */
    float *lambda_q1, *lambda_k1, *lambda_q2, *lambda_k2; /* (d), diff with learnable lambda */
    float *subln;                                         /* (2d), diff with subln true */
    float *subln_scale;                                   /* (H), diff with subln scalar */
    float *lambda_proj;                                   /* (H, D), diff_v2 only */
    float *ffn_norm;                                      /* (D) */
    float *w_gate, *w_up;                                 /* (F, D) */
    float *w_down;                                        /* (D, F) */
} dt_layer_params;

typedef struct dt_params {
    float *tok_embeddings; /* (V, D) */
    dt_layer_params *layers;
    int n_layers;
    float *norm;   /* (D) */
    float *output; /* (V, D); equals tok_embeddings when tied */
} dt_params;

/* Builds the layout for a validated model config. Returns DT_ERR_RUNTIME on allocation failure. */
dt_status param_layout_init(dt_param_layout *layout, const dt_model_config *m);
/* The layout of tensor-parallel rank tp_rank of tp_size: the same tensors, in the same order,
 * holding this rank's slices (DT_ERR_INPUT naming the size when the model does not split). */
dt_status param_layout_init_tp(dt_param_layout *layout, const dt_model_config *m, int tp_rank,
                               int tp_size);
void param_layout_free(dt_param_layout *layout);
/* Finds a tensor by name; NULL when absent. */
const dt_tensor_spec *param_layout_find(const dt_param_layout *layout, const char *name);

/* Whether the matrix products read tensor t as their weight: the projections (LINEAR,
 * LINEAR_OUT) and the classifier's matrix (output.weight; tok_embeddings.weight when the
 * embeddings are tied). The matrices a backend with bf16 products keeps bf16 copies of
 * (dt_backend.weights_prepare). */
int param_is_product_weight(const dt_tensor_spec *t, const dt_model_config *m);
/* Bytes of the copy of one matrix of numel elements: its 2-byte elements rounded up to a multiple
 * of 256 bytes, each copy's offset in the CUDA backend's buffer of them (weight_copies.cu). */
static inline uint64_t param_product_copy_size(uint64_t numel) {
    return (2 * numel + 255) / 256 * 256;
}
/* The matrices as the products read them, in layout order: each product weight, except that a
 * layer's FFN gate and up weights (adjacent in every layout: each rank's rows of w_gate, then
 * its rows of w_up) are one (2F, D) matrix, which one product multiplies (model.c: the FFN
 * keeps gate and up side by side in each row). Iterates from *i = 0: each call that returns 1
 * gives the next matrix's parameter offset and element count and advances *i past its tensors;
 * 0 at the end. */
int param_product_matrix_next(const dt_param_layout *layout, const dt_model_config *m, int *i,
                              size_t *offset, size_t *numel);
/* Bytes of those copies on a layout (param_product_copy_size of each of those matrices). */
uint64_t param_product_copy_bytes(const dt_param_layout *layout, const dt_model_config *m);

/* Points the fields of p into base (a buffer of layout->total floats). p->layers is allocated
 * here (host memory) and released by params_unbind. */
dt_status params_bind(dt_params *p, const dt_param_layout *layout, const dt_model_config *m,
                      float *base);
void params_unbind(dt_params *p);

/* Fills a host buffer with the initial values (README "Initialisation"): each element is a pure
 * function of (seed, tensor name, element index in the GLOBAL tensor), so every rank's slice
 * holds exactly the values of the single-rank run. */
void params_init_host(float *host, const dt_param_layout *layout, const dt_model_config *m,
                      uint64_t seed);

#endif
