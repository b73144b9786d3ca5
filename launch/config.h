/* The run configuration: one struct, filled from YAML (libyaml) with strict validation.
 *
 * Every key of DESIGN.md's config section has a field here. Loading reports the first problem
 * as "FILE:LINE:COL: KEY.PATH: what was expected, got what" and returns DT_ERR_INPUT (exit 2).
 * Overrides ("optim.lr=3e-4") are applied after the file and validated the same way; their
 * errors name the override instead of a file position. A range or cross-key problem points at
 * one key involved (the first set by an override, else by the file); when all of them were
 * defaulted the message starts "FILE: KEY.PATH:" with no line.
 *
 * Typing (file values and override values alike, the latter parsed as one YAML value):
 * quoted scalars are strings, never numbers or bools; numbers are decimal with optional
 * fraction and exponent (3e-4, 1.5e+2; no .inf/.nan/hex); integer keys take any number whose
 * value is an exact integer in range (42, 1e5, 4.0; not 2.5); bools are true/false only;
 * model.lambda_init is "schedule" or a number in [0, 1); model.lambda is "learnable" or a number
 * (a frozen lambda, diff only); model.subln is true, false or scalar; parallel.dp is "auto" or >= 1 (an
 * explicit 0 is refused); optim.betas is [b1, b2]; data.train/val are a string or a list of
 * strings; string keys take any scalar's text (null = ""); an empty section ("model:") and an
 * empty file leave the defaults. Aliases (*x) are refused. Unknown keys, duplicate keys and a
 * second YAML document are errors. */
#ifndef DT_CONFIG_H
#define DT_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "util/status.h"

typedef enum dt_arch { DT_ARCH_DIFF = 0, DT_ARCH_DIFF_V2, DT_ARCH_TRANSFORMER } dt_arch;
typedef enum dt_decay { DT_DECAY_LINEAR = 0, DT_DECAY_COSINE, DT_DECAY_CONSTANT } dt_decay;
typedef enum dt_precision { DT_PRECISION_FP32 = 0, DT_PRECISION_BF16 } dt_precision;
/* train.device: where the model runs. auto: the GPU when this build has CUDA and a device is
 * usable, else the CPU. */
typedef enum dt_device { DT_DEVICE_AUTO = 0, DT_DEVICE_CPU, DT_DEVICE_CUDA } dt_device;
/* model.subln: diff V1's per-head normalisation of O = o1 - lambda o2. */
typedef enum dt_subln {
    DT_SUBLN_OFF = 0, /* out = (1 - lambda_init) O */
    DT_SUBLN_ON = 1,  /* out = (1 - lambda_init) RMSNorm(O) * gamma, gamma (2d) shared by heads */
    DT_SUBLN_SCALAR,  /* out_h = (1 - lambda_init) s_h O_h, one learned gain s_h per DIFF head */
} dt_subln;
typedef enum dt_scheduler { DT_SCHED_LOCAL = 0, DT_SCHED_MPIRUN, DT_SCHED_SLURM } dt_scheduler;

#define DT_MAX_PATHS 64
#define DT_PATH_MAX 1024

typedef struct dt_model_config {
    dt_arch arch;
    int vocab_size;
    int d_model;
    int n_layers;
    int n_heads;    /* diff/diff_v2: DIFF heads H; transformer: attention heads */
    int n_kv_heads; /* 0 in the file means "= n_heads" (resolved at load) */
    int ffn_dim;
    int max_seq_len;
    double rope_theta;
    int tie_embeddings;
    double norm_eps;
    int lambda_init_schedule; /* 1: 0.8 - 0.6 exp(-0.3 l); 0: the constant below */
    double lambda_init;       /* the constant when lambda_init_schedule == 0 */
    int lambda_learnable; /* 1: lambda = exp(lq1.lk1) - exp(lq2.lk2) + lambda_init (learned) */
    double lambda_const;  /* 0: lambda frozen at this constant (diff only; no lambda vectors) */
    int subln;            /* dt_subln: off, per-head RMSNorm with a (2d) gain, or a scalar per head */
    double init_std; /* std of the normal init of linear weights and embeddings */
} dt_model_config;

typedef struct dt_parallel_config {
    int tp;
    int dp; /* 0 means "auto" = world / tp */
    int zero;
    /* 1: each layer's gradients are reduced over dp as soon as the backward has them, overlapping
     * the rest of the backward on the GPU; 0: the whole buffer after the backward */
    int overlap_grad_reduce;
} dt_parallel_config;

typedef struct dt_train_config {
    int seq_len;
    int micro_batch;  /* sequences per micro-batch per data-parallel rank */
    int global_batch; /* sequences per optimizer step over all ranks */
    int steps; /* >= 0 */
    uint64_t seed;
    dt_precision precision;
    dt_device device;
    int recompute; /* 1: keep only each layer's input; recompute the layer in the backward */
    int val_every;   /* steps between validations; 0 = never */
    int val_batches; /* micro-batches of validation data per validation */
    int threads;     /* OpenMP threads per rank; 0 = the runtime's default */
} dt_train_config;

typedef struct dt_optim_config {
    double lr, min_lr;
    int warmup_steps;
    dt_decay decay;
    double beta1, beta2;
    double eps;
    double weight_decay;
    double grad_clip; /* 0 = no clipping */
} dt_optim_config;

typedef struct dt_data_config {
    int n_train;
    char train[DT_MAX_PATHS][DT_PATH_MAX]; /* paths or globs, as written */
    int n_val;
    char val[DT_MAX_PATHS][DT_PATH_MAX];
} dt_data_config;

typedef struct dt_checkpoint_config {
    char dir[DT_PATH_MAX]; /* "" = no checkpoints */
    int every;     /* steps between checkpoints; 0 = none (every > 0 needs dir) */
    int keep_last; /* newest checkpoints kept; 0 = keep all */
    char resume[DT_PATH_MAX];    /* "auto", "never" or a path */
    char init_from[DT_PATH_MAX]; /* "" = none */
} dt_checkpoint_config;

typedef struct dt_log_config {
    int every;                 /* >= 1 */
    char metrics[DT_PATH_MAX]; /* JSON Lines file; "" = none */
} dt_log_config;

typedef struct dt_launch_config {
    dt_scheduler scheduler;
    int nodes;
    int procs_per_node;
    char hostfile[DT_PATH_MAX];
    char slurm_partition[128];
    char slurm_account[128];
    char slurm_time[64];
    char slurm_job_name[128];
    char slurm_output[DT_PATH_MAX];
    int slurm_gpus_per_node; /* 0 = not requested; strings "" = not passed to sbatch */
    int slurm_cpus_per_task; /* 0 = not requested */
} dt_launch_config;

typedef struct dt_config {
    char source[DT_PATH_MAX]; /* the file it was loaded from */
    dt_model_config model;
    dt_parallel_config parallel;
    dt_train_config train;
    dt_optim_config optim;
    dt_data_config data;
    dt_checkpoint_config checkpoint;
    dt_log_config log;
    dt_launch_config launch;
} dt_config;

/* Fills every field with its default (documented in README's config table): a 2-layer
 * d_model 128 DIFF model (2 heads, ffn 352, vocab 257, seq 128) that trains on a CPU. Zeroes the
 * whole struct first, so two equal configs are byte-equal (padding included). */
void config_defaults(dt_config *cfg);
/* Loads a YAML file over the defaults, then applies n_overrides "key.path=value" strings, then
 * validates the whole (ranges and cross-key consistency such as d_model % (2*n_heads) for diff).
 * On error prints one message naming file:line:col (or the override) and the key path, and
 * returns DT_ERR_INPUT (DT_ERR_RUNTIME only when out of memory); cfg is then unspecified.
 * n_kv_heads is set to n_heads unless the file or an override gives it (or gives 0). */
dt_status config_load(dt_config *cfg, const char *path, int n_overrides, char **overrides);
/* Loads from YAML text held in memory (name is used in messages in place of a file name). */
dt_status config_load_string(dt_config *cfg, const char *name, const char *yaml, int n_overrides,
                             char **overrides);
/* Validates ranges and consistency (called by the loaders; exposed for tests and for structs
 * built in code): sizes >= 1; diff/diff_v2: d_model % (2*n_heads) == 0 and D/(2H) even;
 * transformer: d_model % n_heads == 0 and D/H even; n_heads % n_kv_heads == 0; tp divides
 * n_kv_heads and ffn_dim; zero in 0..2; seq_len <= max_seq_len; global_batch divisible by
 * micro_batch (and by micro_batch*dp when dp is set); 0 < lr, 0 <= min_lr <= lr; betas, and
 * a constant lambda_init, in [0, 1); eps, norm_eps, rope_theta, init_std > 0; weight_decay,
 * grad_clip >= 0; checkpoint.every > 0 needs checkpoint.dir; scheduler local needs nodes 1.
 * Messages name cfg->source (or "config" when empty) without a line. */
dt_status config_validate(const dt_config *cfg);
/* Writes the resolved config as YAML that config_load_string reads back to the same struct. */
void config_print(const dt_config *cfg, FILE *out);

/* Derived sizes. */
int config_head_dim(const dt_model_config *m); /* d = D / (2H) for diff kinds, D / H otherwise */
double config_lambda_init(const dt_model_config *m, int layer); /* 0-based layer */
const char *config_arch_name(dt_arch a);

/* Training needs data.train (and data.val when train.val_every > 0); `plan` and `eval` do not,
 * so this is not part of config_validate: the train command calls it after config_load. */
dt_status config_require_data(const dt_config *cfg);
/* The last message a config function reported (without the "difftrain: error: " prefix), ""
 * when none yet; tests assert on it, callers may show it again. */
const char *config_last_error(void);

#endif
