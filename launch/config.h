/* The run configuration: one struct, filled from YAML (libyaml) with strict validation.
 *
 * Every key of DESIGN.md's config section has a field here. Loading reports the first problem
 * as "FILE:LINE:COL: KEY.PATH: what was expected, got what" and returns DT_ERR_INPUT (exit 2).
 * Overrides ("optim.lr=3e-4") are applied after the file and validated the same way; their
 * errors name the override instead of a file position. */
#ifndef DT_CONFIG_H
#define DT_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "util/status.h"

typedef enum dt_arch { DT_ARCH_DIFF = 0, DT_ARCH_DIFF_V2, DT_ARCH_TRANSFORMER } dt_arch;
typedef enum dt_decay { DT_DECAY_LINEAR = 0, DT_DECAY_COSINE, DT_DECAY_CONSTANT } dt_decay;
typedef enum dt_precision { DT_PRECISION_FP32 = 0, DT_PRECISION_BF16 } dt_precision;
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
    int subln;
    double init_std; /* std of the normal init of linear weights and embeddings */
} dt_model_config;

typedef struct dt_parallel_config {
    int tp;
    int dp; /* 0 means "auto" = world / tp */
    int zero;
} dt_parallel_config;

typedef struct dt_train_config {
    int seq_len;
    int micro_batch;  /* sequences per micro-batch per data-parallel rank */
    int global_batch; /* sequences per optimizer step over all ranks */
    int steps;
    uint64_t seed;
    dt_precision precision;
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
    int every;
    int keep_last;
    char resume[DT_PATH_MAX];    /* "auto", "never" or a path */
    char init_from[DT_PATH_MAX]; /* "" = none */
} dt_checkpoint_config;

typedef struct dt_log_config {
    int every;
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
    int slurm_gpus_per_node;
    int slurm_cpus_per_task;
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

/* Fills every field with its default (documented in README's config table). */
void config_defaults(dt_config *cfg);
/* Loads a YAML file over the defaults, then applies n_overrides "key.path=value" strings, then
 * validates the whole (ranges and cross-key consistency such as d_model % (2*n_heads) for diff).
 * On error prints one message naming file:line:col (or the override) and the key path. */
dt_status config_load(dt_config *cfg, const char *path, int n_overrides, char **overrides);
/* Loads from YAML text held in memory (name is used in messages in place of a file name). */
dt_status config_load_string(dt_config *cfg, const char *name, const char *yaml, int n_overrides,
                             char **overrides);
/* Validates ranges and consistency (called by the loaders; exposed for tests). */
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
