/* The model: parameters, gradients and activations in one allocation each (backend memory),
 * forward, backward and loss for the three architectures (diff, diff_v2, transformer).
 *
 * Usage:
 *   model_init(&m, &cfg.model, backend, seed, B, T);
 *   model_zero_grad(&m);
 *   for each micro-batch: model_forward(&m, inputs, targets); model_backward(&m, 1.0f / n_micro);
 *   (training: model_forward_train, which keeps the loss in backend memory; optim/step.h)
 *   model_reduce_tp_grads(&m);
 *   ... optimizer on m.params_mem / m.grads_mem ...
 * (or, to act on each layer's gradients as soon as the backward has them, a hook:
 * model_set_grad_ready_hook, model_reduce_tp_grads_range)
 *   model_free(&m);
 * model_init_opts(..., recompute = 1) trades compute for memory (activation recomputation). */
#ifndef DT_MODEL_H
#define DT_MODEL_H

#include <stdint.h>

#include "launch/config.h"
#include "model/backend.h"
#include "model/params.h"

/* The collectives the model needs inside its tensor-parallel group, on backend buffers. The
 * trainer fills them from dist/ (MPI on host memory, NCCL on device memory); a failure inside
 * one ends the job (the callee aborts), so the model never sees a half-done reduction. */
typedef struct dt_tp_comm {
    int rank, size;
    void *ctx;
    void (*allreduce_sum)(void *ctx, float *buf, size_t n);
    void (*allreduce_max)(void *ctx, float *buf, size_t n);
} dt_tp_comm;

/* Called by model_backward each time the gradients of a contiguous range of the flat buffer,
 * grads_mem[first, first + count), are complete: the backward writes them no more. The ranges
 * come in the order the backward finishes them, the order of the flat layout reversed: the final
 * norm with the LM head (untied), then layers n_layers-1 .. 0, then the embedding (which, tied,
 * also holds the LM head's gradient and so comes last); together they cover the buffer exactly
 * once, on every call of model_backward (a micro-batch without targets included). On a device
 * backend "complete" is in stream order: work the callee enqueues after the call sees the
 * gradients. What the callee does with them (the trainer starts their data-parallel reduction
 * while the backward goes on) is none of the model's business; it must not write outside the
 * range nor read the model's activations. */
typedef void (*dt_grad_ready_fn)(void *ctx, size_t first, size_t count);

/* Per-layer activations kept for the backward pass. All (B*T = N rows). Widths are this
 * tensor-parallel rank's: its heads, its share of the FFN.
 * With activation recomputation (model_init_opts, recompute = 1) only x_in is per layer: every
 * other pointer of every layer aliases ONE shared set, which holds the layer that ran last (after
 * model_forward: the last layer; during model_backward: the layer being differentiated).
 * dt_operand buffers hold the backend's operand elements (model/backend.h: bf16 on a GPU under
 * train.precision bf16), the rest fp32. */
typedef struct dt_layer_acts {
    float *x_in;          /* (N, D) residual stream entering the layer */
    float *attn_rstd;     /* (N) */
    dt_operand *attn_in;  /* (N, D) attention_norm output */
    dt_operand *q;        /* (N, Hq*d) after RoPE */
    dt_operand *k;        /* (N, Hk*d) after RoPE */
    dt_operand *v;        /* (N, Hkv*dv) */
    dt_operand *attn_out; /* (N, A) attention output before out_proj (A: its in_features) */
    float *o1, *o2;       /* diff: (N, H*2d) branch outputs */
    float *attn_lse;      /* (B, Hq or 2H, T) */
    float *sub_rstd;      /* diff: (N, H) */
    dt_operand *attn_pre; /* diff, subln scalar: (N, H*2d) (1 - lambda_init) O before s_h */
    float *lambda;        /* diff: (1) this layer's lambda */
    dt_operand *heads;    /* diff_v2: (N, 2H*d) standard attention output before the combine */
    float *lam_logit;     /* diff_v2: (N, H) */
    float *y;             /* (N, D) residual after attention */
    float *ffn_rstd;      /* (N) */
    dt_operand *ffn_in;   /* (N, D) ffn_norm output */
    dt_operand *gate_up;  /* (N, 2F) row n: gate (F), then up (F); one product writes both */
    dt_operand *hidden;   /* (N, F) silu(gate) * up */
} dt_layer_acts;

typedef struct dt_model {
    dt_model_config cfg; /* global sizes */
    const dt_backend *be;
    dt_tp_shape tp;          /* this rank's share of heads, FFN and vocabulary */
    const dt_tp_comm *comm;  /* NULL when tp == 1 */
    int B, T; /* micro-batch shape the activations are sized for */
    int d;    /* head dim */
    int recompute; /* 1: activation recomputation (see dt_layer_acts and model_init_opts) */

    dt_param_layout layout;
    float *params_mem; /* (layout.total) backend memory */
    float *grads_mem;  /* (layout.total) backend memory */
    dt_params params, grads;
    /* the matrices the products read (param_product_matrix_next: a layer's gate and up weights
     * as one), for be->weights_prepare: n_product_weights host pointers into params_mem and
     * their element counts */
    const float **product_w;
    size_t *product_n;
    int n_product_weights;

    char *acts_mem; /* one allocation, carved into the fields below */
    size_t acts_bytes;
    dt_layer_acts *acts; /* (n_layers) host array of pointers */
    float *x_final;      /* (N, D) residual after the last layer */
    float *final_rstd;   /* (N) */
    dt_operand *final_norm; /* (N, D) */
    float *logits;       /* (chunk, V_local) classifier scratch, reused for dlogits */
    float *losses;       /* (N) */
    float *lse;          /* (N) log-sum-exp over the whole vocabulary */
    float *rowmax;       /* (N) row maxima of this rank's vocabulary slice */
    float *gmax;         /* (N) row maxima over all slices (tensor parallelism) */
    float *xsums;        /* (N, 2) sum of exp and target logit (vocab-parallel reduction) */
    /* gradient scratch, reused by every layer */
    float *dres;      /* (N, D) gradient of the residual stream */
    /* (N, D) bf16 mode: dres as an operand, written by the norms' backwards as they accumulate
     * dres, read by the w_down and out_proj backward products; NULL in fp32 mode, where dres is
     * its own operand (model.c: dres_operand) */
    dt_operand *dres_op;
    float *dnormed;   /* (N, D) gradient of a norm's output (final, ffn or attention norm) */
    float *dwide;     /* (N, max(F, A)) gradient of hidden or of the attention output */
    /* (N, 2F) operand: SwiGLU's backward writes dgate and dup side by side in each row, as
     * gate_up holds gate and up, and the one gate-and-up product reads it; the attention's
     * backward (done before or after the FFN's) keeps dq_rot and dk_rot in the same space */
    dt_operand *dgate_up;
    float *dq;        /* (N, Hq*d) the attention's backward writes it, rope_backward reads it */
    float *dk;        /* (N, Hk*d) as dq */
    dt_operand *dv;   /* (N, Hkv*dv) operand: the attention's backward writes it, the v product
                         reads it */
    dt_operand *dq_rot; /* (N, Hq*d) operand: rope_backward's rotated dq, for the q product
                           (at the start of dgate_up's space) */
    dt_operand *dk_rot; /* (N, Hk*d) operand: the same of dk, for the k product (after dq_rot,
                           in dgate_up's space) */
    float *dheads;    /* diff_v2: (N, 2H*d) */
    float *dlam;      /* diff_v2: (N, H); diff: (1) dlambda of the current layer */
    int32_t *inputs;     /* (N) backend copy of the inputs */
    int32_t *targets;    /* (N) backend copy of the targets, LOCAL to the vocabulary slice:
                            index in the slice, V_local when elsewhere, -1 ignored */
    int32_t *target_count; /* (1) backend copy of the count of targets >= 0 (after targets:
                              the three are one upload of a staged micro-batch) */
    /* Host staging of the token ids (backend host_alloc, model/backend.h): buffers of 2N + 1
     * int32 = {inputs, localised targets, count of targets >= 0}. Two used in turn by
     * model_forward and model_forward_train, so the host fills the next micro-batch while the
     * previous one's upload may still be queued; and the slots of model_stage (one
     * allocation), which a trainer fills for a whole step before queueing it. */
    int32_t *staging[2];
    int staging_next; /* the buffer the next forward fills */
    int32_t *slots;   /* n_slots x (2N + 1), or NULL */
    int n_slots;
    int logits_chunk;    /* rows of logits materialised at once */

    float last_loss; /* mean loss of the last model_forward over non-ignored targets (NaN after
                        model_forward_train: its loss stays in backend memory) */
    int n_targets;   /* targets >= 0 in the last forward */
    int classifier_done;          /* the last forward was model_forward_train: */
    float classifier_dloss_scale; /* it ran the classifier's backward at this scale */

    dt_grad_ready_fn grad_ready; /* NULL: no hook (model_set_grad_ready_hook) */
    void *grad_ready_ctx;
} dt_model;

/* Allocates parameters (initialised from seed, README "Initialisation"), gradients (zero) and
 * activations for micro-batches of B sequences of T tokens. */
dt_status model_init(dt_model *m, const dt_model_config *cfg, const dt_backend *be, uint64_t seed,
                     int B, int T);
/* The same for tensor-parallel rank comm->rank of comm->size (comm NULL: a single rank): the
 * parameters are this rank's slices, initialised to the single-rank run's values. */
dt_status model_init_tp(dt_model *m, const dt_model_config *cfg, const dt_backend *be,
                        uint64_t seed, int B, int T, const dt_tp_comm *comm);
/* model_init_tp with options. recompute != 0 turns on activation recomputation (config key
 * train.recompute): the model keeps each layer's input x_in (N, D) and one layer's worth of the
 * other activations, and model_backward re-runs each layer's forward (attention block, FFN up to
 * the SwiGLU hidden, with the same tensor-parallel all-reduces) just before that layer's backward.
 * The last layer is not re-run: the forward leaves it in the shared set. The loss and the
 * gradients are bit-identical to recompute = 0 (the same ops on the same inputs in the same
 * order); the price is one more forward of layers 0 .. n_layers-2 per backward and, at tp > 1,
 * one more all-reduce of (N, D) per re-run layer (the attention's out_proj; the FFN's down
 * projection, whose output the backward never reads, is not re-run).
 * Limitation: after model_forward, m->acts[l] for l < n_layers - 1 holds only x_in; every other
 * field reads the last layer's values. Callers that read the per-layer q, k or lambda of several
 * layers (launch/cmd_analyze.c, model/attn_stats.c) must initialise with recompute = 0. */
dt_status model_init_opts(dt_model *m, const dt_model_config *cfg, const dt_backend *be,
                          uint64_t seed, int B, int T, const dt_tp_comm *comm, int recompute);
void model_free(dt_model *m);

/* Forward pass over (B, T) host token ids; targets may be NULL (no loss). Returns the mean
 * cross-entropy over targets >= 0 (or 0 when there are none / targets is NULL), which waits for
 * the backend to finish the forward. */
float model_forward(dt_model *m, const int32_t *inputs, const int32_t *targets);
/* The training forward: as model_forward with targets (not NULL), but the mean loss is added
 * into *loss_acc (one double in backend memory, backend op loss_accumulate: the same value
 * model_forward would return, as a double) instead of being returned, and nothing waits for
 * the backend: the token ids go up through the staging buffers, whose reuse waits only for
 * their own earlier upload. The caller reads *loss_acc once, after the last micro-batch.
 * It also runs the classifier's part of the backward of dloss_scale times the loss, chunk by
 * chunk as each chunk's logits are made (the output weight's gradient accumulates here), so
 * that the logits are computed once; model_backward(m, dloss_scale), with the same scale, must
 * follow and does the rest, with the same gradients, bit for bit, as after model_forward. */
void model_forward_train(dt_model *m, const int32_t *inputs, const int32_t *targets,
                         double *loss_acc, float dloss_scale);
/* model_forward_train in two halves, for a caller that stages a whole step's micro-batches
 * before queueing any (a step recorded as a graph reads each from its own slot at every
 * launch): model_reserve_slots makes count slots (again only when more are asked for; freed
 * by model_free), model_stage fills slot k on the host (after waiting for the slot's last
 * eager upload) and returns its count of targets >= 0, and model_forward_train_slot queues the
 * upload of slot k and the training forward of its tokens. Same ops, same bits as
 * model_forward_train. */
dt_status model_reserve_slots(dt_model *m, int count);
int model_stage(dt_model *m, int k, const int32_t *inputs, const int32_t *targets);
void model_forward_train_slot(dt_model *m, int k, double *loss_acc, float dloss_scale);
/* The greedy prediction at chosen rows of the last forward: out[i] = the (global) vocabulary id
 * of the largest logit of row rows[i] (a row b * T + t of the (B, T) micro-batch, whose logits
 * predict the token after position t), the smallest id among equal maxima. Call after
 * model_forward (with or without targets), on every tensor-parallel rank with the same rows: the
 * vocabulary is split, so each rank takes the maximum of its slice and two all-reduces (MAX of
 * the value, then MAX of minus the id among the ranks holding it) pick the winner. out[i] is -1
 * when no logit of the row is a number. Uses the classifier's scratch buffer (the last forward's
 * loss and the backward are unaffected). DT_ERR_INPUT for a row outside [0, B*T), before any
 * collective (every rank sees the same rows and fails alike). */
dt_status model_argmax_rows(dt_model *m, int32_t *out /* (n) */, const int32_t *rows /* (n) */,
                            int n);
/* Backward of (dloss_scale * mean loss of the last forward): accumulates into the gradients.
 * With recompute, it re-runs the forward of layers n_layers-2 .. 0 from their kept inputs (and
 * so all-reduces over the TP group: every rank of the group must call it, as for the forward). */
void model_backward(dt_model *m, float dloss_scale);
void model_zero_grad(dt_model *m);
/* Sums over the tensor-parallel group the gradients of the tensors that are replicated but see
 * only local heads (lambda vectors, subln gain). Once per optimizer step, after the last
 * micro-batch (the accumulated gradients would otherwise be summed more than once). No-op at
 * tp == 1. */
void model_reduce_tp_grads(dt_model *m);
/* The same for the tensors inside grads_mem[first, first + count) alone (a range of the
 * gradient-ready hook: it never splits a tensor). Called for every range of a backward, it does
 * what model_reduce_tp_grads does, range by range. */
void model_reduce_tp_grads_range(dt_model *m, size_t first, size_t count);
/* Installs the gradient-ready hook (fn NULL removes it); it stays until replaced. */
void model_set_grad_ready_hook(dt_model *m, dt_grad_ready_fn fn, void *ctx);

/* Copies parameters between host and the backend (layout.total floats). */
void model_params_to_host(const dt_model *m, float *host);
void model_params_from_host(dt_model *m, const float *host);
void model_grads_to_host(const dt_model *m, float *host);

/* Bytes of the activation allocation (forward activations kept for the backward, gradient
 * scratch and the classifier's buffer) that model_init_opts makes for a rank's share `tp` at
 * micro-batch B x T, with or without recompute, on a backend whose operands (backend.h) take
 * operand_bytes an element; 0 on allocation failure. The same carving code sizes the real
 * allocation. */
size_t model_activation_bytes(const dt_model_config *cfg, const dt_tp_shape *tp, int B, int T,
                              int recompute, size_t operand_bytes);

/* The classifier materialises at most this many floats of logits at once (default 2^28, 1 GiB;
 * 0 restores it), in chunks of whole rows (at least one). Process-wide, read by model_init* and
 * model_activation_bytes: tests lower it so that small models take the chunked paths. */
void model_set_logits_chunk_limit(size_t floats);

/* Multiply-accumulate FLOPs of one forward+backward per token (6N + attention), for MFU. */
double model_flops_per_token(const dt_model_config *cfg, int seq_len);

#endif
