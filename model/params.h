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
    DT_TENSOR_NORM,          /* RMSNorm and subln gains: init 1 */
    DT_TENSOR_LAMBDA,        /* lambda_q1..k2: init N(0, 0.1^2) (SPEC) */
} dt_tensor_kind;

typedef struct dt_tensor_spec {
    char name[DT_TENSOR_NAME_MAX];
    int ndim;
    int64_t shape[2];
    size_t numel;
    size_t offset; /* in elements from the start of the flat buffer */
    dt_tensor_kind kind;
    int decay; /* AdamW weight decay applies (not on norms, gains, lambda vectors) */
} dt_tensor_spec;

typedef struct dt_param_layout {
    int n_tensors;
    dt_tensor_spec *tensors;
    size_t total; /* elements */
} dt_param_layout;

/* Pointers into one flat buffer. Absent tensors are NULL. Shapes as in DESIGN. */
typedef struct dt_layer_params {
    float *attention_norm; /* (D) */
    float *q_proj;         /* (2H*d, D); transformer (H*d, D) */
    float *k_proj;         /* (2Hkv*d, D); diff_v2 and transformer (Hkv*d, D) */
    float *v_proj;         /* diff (Hkv*2d, D); diff_v2 and transformer (Hkv*d, D) */
    float *out_proj;       /* (D, 2H*d); diff_v2 (D, H*d) */
    float *lambda_q1, *lambda_k1, *lambda_q2, *lambda_k2; /* (d), diff only */
    float *subln;                                         /* (2d), diff with subln */
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
void param_layout_free(dt_param_layout *layout);
/* Finds a tensor by name; NULL when absent. */
const dt_tensor_spec *param_layout_find(const dt_param_layout *layout, const char *name);

/* Points the fields of p into base (a buffer of layout->total floats). p->layers is allocated
 * here (host memory) and released by params_unbind. */
dt_status params_bind(dt_params *p, const dt_param_layout *layout, const dt_model_config *m,
                      float *base);
void params_unbind(dt_params *p);

/* Fills a host buffer with the initial values (README "Initialisation"): each element is a pure
 * function of (seed, tensor name, element index), so any slice is reproducible on its own. */
void params_init_host(float *host, const dt_param_layout *layout, const dt_model_config *m,
                      uint64_t seed);

#endif
