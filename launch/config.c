/* Validation (ranges and the relations between keys), error reporting and derived sizes.
 *
 * Validation runs once, after the file and every override have been applied, so a relation
 * such as "d_model divisible by 2*n_heads" is judged on final values. Each problem is reported
 * at the origin of one of the keys involved: the first one set by an override, else the first
 * one set in the file, else the file name alone (all of them defaulted). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "launch/config_impl.h"

static char last_error[2048];

const char *config_last_error(void) { return last_error; }

dt_status cfg_fail(const char *where, const char *key, const char *fmt, ...) {
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (key)
        snprintf(last_error, sizeof last_error, "%s: %s: %s", where, key, msg);
    else
        snprintf(last_error, sizeof last_error, "%s: %s", where, msg);
    dt_error("%s", last_error);
    return DT_ERR_INPUT;
}

void cfg_where(char *buf, size_t n, const char *name, const cfg_origin *o, char *const *overrides) {
    if (o && o->from == CFG_FROM_FILE)
        snprintf(buf, n, "%s:%d:%d", name, o->line, o->col);
    else if (o && o->from == CFG_FROM_OVERRIDE && overrides)
        snprintf(buf, n, "override '%s'", overrides[o->override]);
    else
        snprintf(buf, n, "%s", name);
}

/* ---- validation ---- */

typedef struct vctx {
    const dt_config *cfg;
    const cfg_origin *origins; /* NULL: all defaulted */
    char *const *overrides;
    const char *name;
} vctx;

static const cfg_origin *origin_of(const vctx *v, const char *key) {
    int i = cfg_key_find(key);
    return v->origins && i >= 0 ? &v->origins[i] : NULL;
}

static dt_status vreport(const vctx *v, const char *key, const char *fmt, va_list ap) {
    char where[DT_PATH_MAX + 64], msg[1024];
    cfg_where(where, sizeof where, v->name, origin_of(v, key), v->overrides);
    vsnprintf(msg, sizeof msg, fmt, ap);
    return cfg_fail(where, key, "%s", msg);
}

/* keys: space-separated key paths involved in the problem; the one reported is picked as the
 * file header describes. */
__attribute__((format(printf, 3, 4))) static dt_status vfail(const vctx *v, const char *keys,
                                                             const char *fmt, ...) {
    char list[256], *save = NULL, *pick[8] = {list};
    int n = 0;
    snprintf(list, sizeof list, "%s", keys);
    for (char *t = strtok_r(list, " ", &save); t && n < 8; t = strtok_r(NULL, " ", &save))
        pick[n++] = t;
    const char *chosen = pick[0];
    int best = 0;
    for (int i = 0; i < n; i++) {
        const cfg_origin *o = origin_of(v, pick[i]);
        int rank = !o ? 0 : o->from == CFG_FROM_OVERRIDE ? 2 : o->from == CFG_FROM_FILE ? 1 : 0;
        if (rank > best) best = rank, chosen = pick[i];
    }
    va_list ap;
    va_start(ap, fmt);
    dt_status st = vreport(v, chosen, fmt, ap);
    va_end(ap);
    return st;
}

static dt_status int_at_least(const vctx *v, const char *key, int x, int lo) {
    if (x >= lo) return DT_OK;
    return vfail(v, key, "expected an integer >= %d, got %d", lo, x);
}

static dt_status num_check(const vctx *v, const char *key, double x, double lo, int lo_open,
                           double hi, int hi_open) {
    int ok = lo_open ? x > lo : x >= lo;
    if (hi_open) ok = ok && x < hi;
    if (ok) return DT_OK;
    char got[64], range[96];
    cfg_format_double(got, sizeof got, x);
    if (hi_open)
        snprintf(range, sizeof range, "a number in %s%g, %g)", lo_open ? "(" : "[", lo, hi);
    else
        snprintf(range, sizeof range, "a number %s %g", lo_open ? ">" : ">=", lo);
    return vfail(v, key, "expected %s, got %s", range, got);
}

static dt_status enum_check(const vctx *v, const char *key, int x) {
    const cfg_key *k = &cfg_keys[cfg_key_find(key)];
    int n = 0;
    while (k->names[n]) n++;
    if (x >= 0 && x < n) return DT_OK;
    char expect[128];
    cfg_key_expect(k, expect, sizeof expect);
    return vfail(v, key, "expected %s, got the value %d", expect, x);
}

static dt_status validate_model(const vctx *v) {
    const dt_model_config *m = &v->cfg->model;
    DT_TRY(enum_check(v, "model.arch", (int)m->arch));
    DT_TRY(int_at_least(v, "model.vocab_size", m->vocab_size, 1));
    DT_TRY(int_at_least(v, "model.d_model", m->d_model, 1));
    DT_TRY(int_at_least(v, "model.n_layers", m->n_layers, 1));
    DT_TRY(int_at_least(v, "model.n_heads", m->n_heads, 1));
    DT_TRY(int_at_least(v, "model.n_kv_heads", m->n_kv_heads, 1));
    DT_TRY(int_at_least(v, "model.ffn_dim", m->ffn_dim, 1));
    DT_TRY(int_at_least(v, "model.max_seq_len", m->max_seq_len, 1));
    DT_TRY(num_check(v, "model.rope_theta", m->rope_theta, 0, 1, 0, 0));
    DT_TRY(num_check(v, "model.norm_eps", m->norm_eps, 0, 1, 0, 0));
    if (!m->lambda_init_schedule)
        DT_TRY(num_check(v, "model.lambda_init", m->lambda_init, 0, 0, 1, 1));
    DT_TRY(num_check(v, "model.init_std", m->init_std, 0, 1, 0, 0));
    if (m->subln < DT_SUBLN_OFF || m->subln > DT_SUBLN_SCALAR)
        return vfail(v, "model.subln", "expected true, false or scalar, got the value %d",
                     m->subln);
    if (m->lambda_learnable != 0 && m->lambda_learnable != 1)
        return vfail(v, "model.lambda", "expected learnable or a number, got the flag %d",
                     m->lambda_learnable);
    if (!m->lambda_learnable && !isfinite(m->lambda_const))
        return vfail(v, "model.lambda", "expected a finite number, got %g", m->lambda_const);
    /* Only diff V1 has a per-layer scalar lambda. diff_v2's lambda is a per-token sigmoid gate,
     * so a constant there would be a silent no-op: refused. The transformer baseline has no
     * lambda at all and ignores the key (as it ignores model.subln), so one ablation file can
     * switch between diff and its baseline by changing model.arch alone. */
    if (!m->lambda_learnable && m->arch == DT_ARCH_DIFF_V2)
        return vfail(v, "model.lambda model.arch",
                     "expected learnable for arch diff_v2 (its lambda is the per-token gate "
                     "lambda_proj; a constant lambda exists only for arch diff), got %g",
                     m->lambda_const);

    const char *arch = config_arch_name(m->arch);
    long long heads = m->arch == DT_ARCH_TRANSFORMER ? m->n_heads : 2LL * m->n_heads;
    const char *heads_expr = m->arch == DT_ARCH_TRANSFORMER ? "n_heads" : "2*n_heads";
    if (m->d_model % heads != 0)
        return vfail(v, "model.d_model model.n_heads model.arch",
                     "expected d_model divisible by %s for arch %s, got d_model = %d, "
                     "n_heads = %d",
                     heads_expr, arch, m->d_model, m->n_heads);
    if ((m->d_model / heads) % 2 != 0)
        return vfail(v, "model.d_model model.n_heads model.arch",
                     "expected an even head dim d_model/(%s) (RoPE rotates pairs), "
                     "got %d/%lld = %lld",
                     heads_expr, m->d_model, heads, m->d_model / heads);
    if (m->n_kv_heads > m->n_heads || m->n_heads % m->n_kv_heads != 0)
        return vfail(v, "model.n_kv_heads model.n_heads",
                     "expected n_kv_heads to divide n_heads, got n_kv_heads = %d, n_heads = %d",
                     m->n_kv_heads, m->n_heads);
    return DT_OK;
}

static dt_status validate_parallel(const vctx *v) {
    const dt_parallel_config *p = &v->cfg->parallel;
    const dt_model_config *m = &v->cfg->model;
    DT_TRY(int_at_least(v, "parallel.tp", p->tp, 1));
    if (p->dp < 0)
        return vfail(v, "parallel.dp", "expected auto or an integer >= 1, got %d", p->dp);
    if (p->zero < 0 || p->zero > 2)
        return vfail(v, "parallel.zero", "expected 0, 1 or 2, got %d", p->zero);
    /* Whole kv groups (and with them whole DIFF heads) live on one rank. */
    if (m->n_kv_heads % p->tp != 0)
        return vfail(v, "parallel.tp model.n_kv_heads",
                     "expected tp to divide n_kv_heads (whole kv groups per rank), got tp = %d, "
                     "n_kv_heads = %d",
                     p->tp, m->n_kv_heads);
    if (m->ffn_dim % p->tp != 0)
        return vfail(v, "parallel.tp model.ffn_dim",
                     "expected tp to divide ffn_dim, got tp = %d, ffn_dim = %d", p->tp,
                     m->ffn_dim);
    return DT_OK;
}

static dt_status validate_train(const vctx *v) {
    const dt_train_config *t = &v->cfg->train;
    DT_TRY(int_at_least(v, "train.seq_len", t->seq_len, 1));
    DT_TRY(int_at_least(v, "train.micro_batch", t->micro_batch, 1));
    DT_TRY(int_at_least(v, "train.global_batch", t->global_batch, 1));
    DT_TRY(int_at_least(v, "train.steps", t->steps, 0));
    DT_TRY(enum_check(v, "train.precision", (int)t->precision));
    DT_TRY(enum_check(v, "train.device", (int)t->device));
    DT_TRY(int_at_least(v, "train.val_every", t->val_every, 0));
    DT_TRY(int_at_least(v, "train.val_batches", t->val_batches, 1));
    DT_TRY(int_at_least(v, "train.threads", t->threads, 0));
    if (t->seq_len > v->cfg->model.max_seq_len)
        return vfail(v, "train.seq_len model.max_seq_len",
                     "expected seq_len <= model.max_seq_len, got seq_len = %d, max_seq_len = %d",
                     t->seq_len, v->cfg->model.max_seq_len);
    if (t->global_batch % t->micro_batch != 0)
        return vfail(v, "train.global_batch train.micro_batch",
                     "expected global_batch divisible by micro_batch, got global_batch = %d, "
                     "micro_batch = %d",
                     t->global_batch, t->micro_batch);
    int dp = v->cfg->parallel.dp;
    if (dp > 0 && t->global_batch % ((long long)t->micro_batch * dp) != 0)
        return vfail(v, "train.global_batch train.micro_batch parallel.dp",
                     "expected global_batch divisible by micro_batch*dp, got global_batch = %d, "
                     "micro_batch = %d, dp = %d",
                     t->global_batch, t->micro_batch, dp);
    return DT_OK;
}

static dt_status validate_optim(const vctx *v) {
    const dt_optim_config *o = &v->cfg->optim;
    DT_TRY(num_check(v, "optim.lr", o->lr, 0, 1, 0, 0));
    DT_TRY(num_check(v, "optim.min_lr", o->min_lr, 0, 0, 0, 0));
    DT_TRY(int_at_least(v, "optim.warmup_steps", o->warmup_steps, 0));
    DT_TRY(enum_check(v, "optim.decay", (int)o->decay));
    DT_TRY(num_check(v, "optim.betas", o->beta1, 0, 0, 1, 1));
    DT_TRY(num_check(v, "optim.betas", o->beta2, 0, 0, 1, 1));
    DT_TRY(num_check(v, "optim.eps", o->eps, 0, 1, 0, 0));
    DT_TRY(num_check(v, "optim.weight_decay", o->weight_decay, 0, 0, 0, 0));
    DT_TRY(num_check(v, "optim.grad_clip", o->grad_clip, 0, 0, 0, 0));
    if (o->min_lr > o->lr) {
        char a[64], b[64];
        cfg_format_double(a, sizeof a, o->min_lr);
        cfg_format_double(b, sizeof b, o->lr);
        return vfail(v, "optim.min_lr optim.lr", "expected min_lr <= lr, got min_lr = %s, lr = %s",
                     a, b);
    }
    return DT_OK;
}

static dt_status validate_paths(const vctx *v, const char *key, int n,
                                const char (*paths)[DT_PATH_MAX]) {
    if (n < 0 || n > DT_MAX_PATHS)
        return vfail(v, key, "expected 0 to %d paths, got %d", DT_MAX_PATHS, n);
    for (int i = 0; i < n; i++)
        if (paths[i][0] == '\0' || memchr(paths[i], '\0', DT_PATH_MAX) == NULL)
            return vfail(v, key, "expected a non-empty path as item %d, got an empty one", i);
    return DT_OK;
}

static int str_ok(const char *s, size_t size) { return memchr(s, '\0', size) != NULL; }

static dt_status validate_rest(const vctx *v) {
    const dt_config *c = v->cfg;
    DT_TRY(validate_paths(v, "data.train", c->data.n_train, c->data.train));
    DT_TRY(validate_paths(v, "data.val", c->data.n_val, c->data.val));

    DT_TRY(int_at_least(v, "checkpoint.every", c->checkpoint.every, 0));
    DT_TRY(int_at_least(v, "checkpoint.keep_last", c->checkpoint.keep_last, 0));
    if (!str_ok(c->checkpoint.resume, sizeof c->checkpoint.resume) || !c->checkpoint.resume[0])
        return vfail(v, "checkpoint.resume", "expected auto, never or a path, got nothing");
    if (c->checkpoint.every > 0 && c->checkpoint.dir[0] == '\0')
        return vfail(v, "checkpoint.every checkpoint.dir",
                     "expected checkpoint.dir to be set when every > 0, got every = %d and no dir",
                     c->checkpoint.every);

    DT_TRY(int_at_least(v, "log.every", c->log.every, 1));

    const dt_launch_config *l = &c->launch;
    DT_TRY(enum_check(v, "launch.scheduler", (int)l->scheduler));
    DT_TRY(int_at_least(v, "launch.nodes", l->nodes, 1));
    DT_TRY(int_at_least(v, "launch.procs_per_node", l->procs_per_node, 1));
    DT_TRY(int_at_least(v, "launch.slurm.gpus_per_node", l->slurm_gpus_per_node, 0));
    DT_TRY(int_at_least(v, "launch.slurm.cpus_per_task", l->slurm_cpus_per_task, 0));
    if (l->scheduler == DT_SCHED_LOCAL && l->nodes != 1)
        return vfail(v, "launch.nodes launch.scheduler",
                     "expected nodes = 1 with scheduler local, got nodes = %d", l->nodes);
    return DT_OK;
}

dt_status cfg_validate_origins(const dt_config *cfg, const cfg_origin *origins,
                               char *const *overrides) {
    vctx v = {cfg, origins, overrides, cfg->source[0] ? cfg->source : "config"};
    DT_TRY(validate_model(&v));
    DT_TRY(validate_parallel(&v));
    DT_TRY(validate_train(&v));
    DT_TRY(validate_optim(&v));
    DT_TRY(validate_rest(&v));
    return DT_OK;
}

dt_status config_validate(const dt_config *cfg) { return cfg_validate_origins(cfg, NULL, NULL); }

dt_status config_require_data(const dt_config *cfg) {
    vctx v = {cfg, NULL, NULL, cfg->source[0] ? cfg->source : "config"};
    if (cfg->data.n_train < 1)
        return vfail(&v, "data.train",
                     "expected at least one path or glob of training shards, got none");
    if (cfg->train.val_every > 0 && cfg->data.n_val < 1)
        return vfail(&v, "data.val",
                     "expected at least one path or glob when train.val_every > 0, got none");
    return DT_OK;
}

/* ---- derived sizes ---- */

int config_head_dim(const dt_model_config *m) {
    long long heads = m->arch == DT_ARCH_TRANSFORMER ? m->n_heads : 2LL * m->n_heads;
    return heads > 0 ? (int)(m->d_model / heads) : 0;
}

double config_lambda_init(const dt_model_config *m, int layer) {
    if (!m->lambda_init_schedule) return m->lambda_init;
    return 0.8 - 0.6 * exp(-0.3 * (double)layer);
}

const char *config_arch_name(dt_arch a) {
    switch (a) {
    case DT_ARCH_DIFF: return "diff";
    case DT_ARCH_DIFF_V2: return "diff_v2";
    case DT_ARCH_TRANSFORMER: return "transformer";
    }
    return "unknown";
}
