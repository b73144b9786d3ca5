/* The key table and the defaults. Table order is print order and validation order. */
#include <stdio.h>
#include <string.h>

#include "launch/config_impl.h"

static const char *const arch_names[] = {"diff", "diff_v2", "transformer", NULL};
static const char *const decay_names[] = {"linear", "cosine", "constant", NULL};
static const char *const precision_names[] = {"fp32", "bf16", NULL};
static const char *const device_names[] = {"auto", "cpu", "cuda", NULL};
static const char *const scheduler_names[] = {"local", "mpirun", "slurm", NULL};
/* CFG_LAMBDA: the word meaning "not a constant"; CFG_BOOL: words for the values 2, 3, ... */
static const char *const schedule_word[] = {"schedule", NULL};
static const char *const learnable_word[] = {"learnable", NULL};
static const char *const subln_words[] = {"scalar", NULL};

/* The enum fields are written through an int pointer; that is only sound if they are int-sized. */
_Static_assert(sizeof(dt_arch) == sizeof(int), "dt_arch must be int-sized");
_Static_assert(sizeof(dt_decay) == sizeof(int), "dt_decay must be int-sized");
_Static_assert(sizeof(dt_precision) == sizeof(int), "dt_precision must be int-sized");
_Static_assert(sizeof(dt_device) == sizeof(int), "dt_device must be int-sized");
_Static_assert(sizeof(dt_scheduler) == sizeof(int), "dt_scheduler must be int-sized");

#define F(f) offsetof(dt_config, f), sizeof(((dt_config *)0)->f)
#define K(path, kind, f) {path, kind, F(f), 0, NULL}
#define KE(path, f, names) {path, CFG_ENUM, F(f), 0, names}
#define K2(path, kind, f, f2) {path, kind, F(f), offsetof(dt_config, f2), NULL}
#define K2W(path, kind, f, f2, words) {path, kind, F(f), offsetof(dt_config, f2), words}

const cfg_key cfg_keys[] = {
    KE("model.arch", model.arch, arch_names),
    K("model.vocab_size", CFG_INT, model.vocab_size),
    K("model.d_model", CFG_INT, model.d_model),
    K("model.n_layers", CFG_INT, model.n_layers),
    K("model.n_heads", CFG_INT, model.n_heads),
    K("model.n_kv_heads", CFG_INT, model.n_kv_heads),
    K("model.ffn_dim", CFG_INT, model.ffn_dim),
    K("model.max_seq_len", CFG_INT, model.max_seq_len),
    K("model.rope_theta", CFG_NUM, model.rope_theta),
    K("model.tie_embeddings", CFG_BOOL, model.tie_embeddings),
    K("model.norm_eps", CFG_NUM, model.norm_eps),
    K2W("model.lambda_init", CFG_LAMBDA, model.lambda_init_schedule, model.lambda_init,
        schedule_word),
    K2W("model.lambda", CFG_LAMBDA, model.lambda_learnable, model.lambda_const, learnable_word),
    {"model.subln", CFG_BOOL, F(model.subln), 0, subln_words},
    K("model.init_std", CFG_NUM, model.init_std),

    K("parallel.tp", CFG_INT, parallel.tp),
    K("parallel.dp", CFG_DP, parallel.dp),
    K("parallel.zero", CFG_INT, parallel.zero),
    K("parallel.overlap_grad_reduce", CFG_BOOL, parallel.overlap_grad_reduce),

    K("train.seq_len", CFG_INT, train.seq_len),
    K("train.micro_batch", CFG_INT, train.micro_batch),
    K("train.global_batch", CFG_INT, train.global_batch),
    K("train.steps", CFG_INT, train.steps),
    K("train.seed", CFG_U64, train.seed),
    KE("train.precision", train.precision, precision_names),
    KE("train.device", train.device, device_names),
    K("train.recompute", CFG_BOOL, train.recompute),
    K("train.val_every", CFG_INT, train.val_every),
    K("train.val_batches", CFG_INT, train.val_batches),
    K("train.threads", CFG_INT, train.threads),

    K("optim.lr", CFG_NUM, optim.lr),
    K("optim.min_lr", CFG_NUM, optim.min_lr),
    K("optim.warmup_steps", CFG_INT, optim.warmup_steps),
    KE("optim.decay", optim.decay, decay_names),
    K2("optim.betas", CFG_BETAS, optim.beta1, optim.beta2),
    K("optim.eps", CFG_NUM, optim.eps),
    K("optim.weight_decay", CFG_NUM, optim.weight_decay),
    K("optim.grad_clip", CFG_NUM, optim.grad_clip),

    K2("data.train", CFG_PATHS, data.n_train, data.train),
    K2("data.val", CFG_PATHS, data.n_val, data.val),

    K("checkpoint.dir", CFG_STR, checkpoint.dir),
    K("checkpoint.every", CFG_INT, checkpoint.every),
    K("checkpoint.keep_last", CFG_INT, checkpoint.keep_last),
    K("checkpoint.resume", CFG_STR, checkpoint.resume),
    K("checkpoint.init_from", CFG_STR, checkpoint.init_from),

    K("log.every", CFG_INT, log.every),
    K("log.metrics", CFG_STR, log.metrics),

    KE("launch.scheduler", launch.scheduler, scheduler_names),
    K("launch.nodes", CFG_INT, launch.nodes),
    K("launch.procs_per_node", CFG_INT, launch.procs_per_node),
    K("launch.hostfile", CFG_STR, launch.hostfile),
    K("launch.slurm.partition", CFG_STR, launch.slurm_partition),
    K("launch.slurm.account", CFG_STR, launch.slurm_account),
    K("launch.slurm.time", CFG_STR, launch.slurm_time),
    K("launch.slurm.job_name", CFG_STR, launch.slurm_job_name),
    K("launch.slurm.output", CFG_STR, launch.slurm_output),
    K("launch.slurm.gpus_per_node", CFG_INT, launch.slurm_gpus_per_node),
    K("launch.slurm.cpus_per_task", CFG_INT, launch.slurm_cpus_per_task),
};
const int cfg_n_keys = (int)(sizeof cfg_keys / sizeof cfg_keys[0]);
_Static_assert(sizeof cfg_keys / sizeof cfg_keys[0] <= CFG_MAX_KEYS, "raise CFG_MAX_KEYS");

static const char *const cfg_sections[] = {"model", "parallel",   "train", "optim",  "data",
                                           "checkpoint", "log", "launch", "launch.slurm"};
#define N_SECTIONS ((int)(sizeof cfg_sections / sizeof cfg_sections[0]))

/* strncpy zero-fills the rest of the buffer, so two loads of the same text give byte-identical
 * structs (the round-trip test compares them with memcmp). */
static void set_str(char *dst, size_t size, const char *src) {
    strncpy(dst, src, size - 1);
    dst[size - 1] = '\0';
}

void config_defaults(dt_config *cfg) {
    memset(cfg, 0, sizeof *cfg);

    dt_model_config *m = &cfg->model;
    m->arch = DT_ARCH_DIFF;
    m->vocab_size = 257; /* 256 bytes + end-of-text */
    m->d_model = 128;
    m->n_layers = 2;
    m->n_heads = 2;
    m->n_kv_heads = 2; /* the loader re-resolves it to n_heads unless the file sets it */
    m->ffn_dim = 352;  /* ~8/3 * 128 rounded up to a multiple of 32 */
    m->max_seq_len = 256;
    m->rope_theta = 10000.0;
    m->tie_embeddings = 0;
    m->norm_eps = 1e-5;
    m->lambda_init_schedule = 1;
    m->lambda_init = 0.0; /* canonical value while the schedule is used */
    m->lambda_learnable = 1;
    m->lambda_const = 0.0; /* canonical value while lambda is learned */
    m->subln = DT_SUBLN_ON;
    m->init_std = 0.02;

    cfg->parallel.tp = 1;
    cfg->parallel.dp = 0; /* auto */
    cfg->parallel.zero = 0;
    cfg->parallel.overlap_grad_reduce = 1;

    dt_train_config *t = &cfg->train;
    t->seq_len = 128;
    t->micro_batch = 4;
    t->global_batch = 4;
    t->steps = 100;
    t->seed = 1337;
    t->precision = DT_PRECISION_FP32;
    t->device = DT_DEVICE_AUTO;
    t->recompute = 0;
    t->val_every = 0;
    t->val_batches = 4;
    t->threads = 0;

    dt_optim_config *o = &cfg->optim;
    o->lr = 3e-4;
    o->min_lr = 3e-5;
    o->warmup_steps = 10;
    o->decay = DT_DECAY_COSINE;
    o->beta1 = 0.9;
    o->beta2 = 0.95;
    o->eps = 1e-8;
    o->weight_decay = 0.1;
    o->grad_clip = 1.0;

    cfg->checkpoint.every = 0;
    cfg->checkpoint.keep_last = 3;
    set_str(cfg->checkpoint.resume, sizeof cfg->checkpoint.resume, "auto");

    cfg->log.every = 1;

    dt_launch_config *l = &cfg->launch;
    l->scheduler = DT_SCHED_LOCAL;
    l->nodes = 1;
    l->procs_per_node = 1;
    set_str(l->slurm_job_name, sizeof l->slurm_job_name, "difftrain");
    l->slurm_gpus_per_node = 0; /* 0: not requested */
    l->slurm_cpus_per_task = 0;
}

int cfg_key_find(const char *path) {
    for (int i = 0; i < cfg_n_keys; i++)
        if (strcmp(cfg_keys[i].path, path) == 0) return i;
    return -1;
}

int cfg_is_section(const char *path) {
    for (int i = 0; i < N_SECTIONS; i++)
        if (strcmp(cfg_sections[i], path) == 0) return 1;
    return 0;
}

static int min3(int a, int b, int c) { return a < b ? (a < c ? a : c) : (b < c ? b : c); }

/* Edit distance with adjacent transpositions ("modle" -> "model" is 1), capped at 64 characters
 * per string (longer names are never close). */
static int edit_distance(const char *a, const char *b) {
    int la = (int)strlen(a), lb = (int)strlen(b);
    if (la > 64 || lb > 64) return 1000;
    static int d[65][65];
    for (int i = 0; i <= la; i++) d[i][0] = i;
    for (int j = 0; j <= lb; j++) d[0][j] = j;
    for (int i = 1; i <= la; i++) {
        for (int j = 1; j <= lb; j++) {
            d[i][j] = min3(d[i - 1][j] + 1, d[i][j - 1] + 1,
                           d[i - 1][j - 1] + (a[i - 1] != b[j - 1]));
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < d[i][j])
                d[i][j] = d[i - 2][j - 2] + 1;
        }
    }
    return d[la][lb];
}

static const char *last_component(const char *path) {
    const char *dot = strrchr(path, '.');
    return dot ? dot + 1 : path;
}

const char *cfg_suggest(const char *path) {
    const char *best = NULL;
    int best_d = 1000;
    /* A typo within the right section: small edit distance on the whole path. */
    for (int i = 0; i < cfg_n_keys + N_SECTIONS; i++) {
        const char *cand = i < cfg_n_keys ? cfg_keys[i].path : cfg_sections[i - cfg_n_keys];
        int d = edit_distance(path, cand);
        if (d < best_d) best_d = d, best = cand;
    }
    int limit = (int)strlen(last_component(path)) / 3;
    if (limit < 1) limit = 1;
    if (limit > 3) limit = 3;
    if (best && best_d <= limit) return best;
    /* The right name in the wrong section ("model.lr"): suggest the one key with that name. */
    const char *leaf = last_component(path), *found = NULL;
    for (int i = 0; i < cfg_n_keys; i++) {
        if (strcmp(last_component(cfg_keys[i].path), leaf) != 0) continue;
        if (found) return NULL; /* ambiguous ("every") */
        found = cfg_keys[i].path;
    }
    return found;
}

void cfg_key_expect(const cfg_key *k, char *buf, size_t n) {
    switch (k->kind) {
    case CFG_INT: snprintf(buf, n, "an integer"); break;
    case CFG_U64: snprintf(buf, n, "a non-negative integer"); break;
    case CFG_NUM: snprintf(buf, n, "a number"); break;
    case CFG_BOOL: {
        size_t used = (size_t)snprintf(buf, n, "true%s false", k->names ? "," : " or");
        for (int i = 0; k->names && k->names[i] && used < n; i++)
            used += (size_t)snprintf(buf + used, n - used, "%s %s", k->names[i + 1] ? "," : " or",
                                     k->names[i]);
        break;
    }
    case CFG_STR: snprintf(buf, n, "a string"); break;
    case CFG_PATHS: snprintf(buf, n, "a path or a list of paths"); break;
    case CFG_BETAS: snprintf(buf, n, "a list of two numbers [beta1, beta2]"); break;
    case CFG_LAMBDA: snprintf(buf, n, "%s or a number", k->names[0]); break;
    case CFG_DP: snprintf(buf, n, "auto or an integer >= 1"); break;
    case CFG_ENUM: {
        size_t used = (size_t)snprintf(buf, n, "one of ");
        for (int i = 0; k->names[i] && used < n; i++)
            used += (size_t)snprintf(buf + used, n - used, "%s%s", i ? ", " : "", k->names[i]);
        break;
    }
    }
}
