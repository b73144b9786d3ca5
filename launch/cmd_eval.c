/* `difftrain eval CONFIG.yaml --checkpoint DIR [--tokens FILE] [--out FILE.json]
 * [--max-batches N] [key.path=value ...]`: the loss and perplexity of a checkpoint's weights on
 * the config's validation shards or on one token shard, alone or on tp x dp ranks. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/ckpt.h"
#include "data/loader.h"
#include "data/shard.h"
#include "dist/groups.h"
#include "dist/world.h"
#include "launch/commands.h"
#include "launch/config.h"
#include "model/cpu/cpu_ops.h"
#include "model/model.h"
#include "util/alloc.h"

typedef struct eval_args {
    const char *checkpoint; /* --checkpoint DIR (required) */
    const char *tokens;     /* --tokens FILE, or NULL: the config's data.val */
    const char *out;        /* --out FILE.json, or NULL */
    long max_batches;       /* --max-batches N; 0 = all of the data */
} eval_args;

typedef struct evaluator {
    dt_config cfg;
    dt_world world;
    dt_groups groups;
    dt_tp_comm tp_comm;
    const dt_backend *be;
    dt_model model;
    dt_loader val;   /* default data: data.val, unshuffled */
    dt_shard shard;  /* --tokens FILE */
    int32_t *inputs, *targets; /* (micro_batch, seq_len) host staging */
    char ckpt_path[4300];      /* the resolved step directory */
    long long step;            /* the checkpoint's step */
    long n_batches;            /* micro-batches to score, shared out over DP ranks */
} evaluator;

static void usage(FILE *f) {
    fprintf(f,
            "usage: difftrain eval CONFIG.yaml --checkpoint DIR [--tokens FILE] [--out FILE.json]\n"
            "                      [--max-batches N] [key.path=value ...]\n"
            "\n"
            "Loads the weights of a checkpoint (DIR: a step directory, or a checkpoint.dir with\n"
            "`latest`) into the model CONFIG.yaml describes, in the config's parallel layout\n"
            "(alone or under mpirun/srun on parallel.tp x parallel.dp ranks), and prints the mean\n"
            "cross-entropy over every target, the perplexity exp(loss) and the number of targets.\n"
            "\n"
            "--checkpoint DIR  the checkpoint (required); its tensors must have the config's shapes\n"
            "--tokens FILE     score a token shard instead of data.val: windows of seq_len+1 tokens\n"
            "                  advancing by seq_len, the last one partial, so that every token but\n"
            "                  the first is a target exactly once\n"
            "--max-batches N   score only the first N micro-batches (of train.micro_batch sequences;\n"
            "                  on data.val the unshuffled stream from sample 0, as training's\n"
            "                  validation reads it: train.val_batches=N gives the same samples)\n"
            "--out FILE.json   also write {\"loss\", \"perplexity\", \"tokens\", \"checkpoint\",\n"
            "                  \"step\", \"data\"} (rank 0)\n");
}

/* A collective failing inside the model leaves the group in an unknown state: end the job. */
static void tp_allreduce(void *ctx, float *buf, size_t n, dt_reduce_op op) {
    evaluator *e = ctx;
    if (comm_allreduce_f32(&e->groups.tp, buf, n, op) != DT_OK) world_abort(&e->world, DT_ERR_RUNTIME);
}
static void tp_allreduce_sum(void *ctx, float *buf, size_t n) { tp_allreduce(ctx, buf, n, DT_REDUCE_SUM); }
static void tp_allreduce_max(void *ctx, float *buf, size_t n) { tp_allreduce(ctx, buf, n, DT_REDUCE_MAX); }

/* Removes the options from argv (they may stand anywhere after the config), leaving the config
 * and the overrides. Returns DT_ERR_INPUT with a message on a bad option. */
static dt_status parse_args(int *argc, char **argv, eval_args *a) {
    memset(a, 0, sizeof *a);
    for (int i = 2; i < *argc; i++) {
        const char *o = argv[i];
        const char **dst = strcmp(o, "--checkpoint") == 0 ? &a->checkpoint
                         : strcmp(o, "--tokens") == 0   ? &a->tokens
                         : strcmp(o, "--out") == 0      ? &a->out
                                                        : NULL;
        int is_max = strcmp(o, "--max-batches") == 0;
        if (!dst && !is_max) {
            if (strncmp(o, "--", 2) == 0) {
                dt_error("eval: unknown option '%s' (see difftrain eval --help)", o);
                return DT_ERR_INPUT;
            }
            continue; /* an override */
        }
        if (i + 1 >= *argc || !argv[i + 1][0]) {
            dt_error("eval: %s needs %s", o, is_max ? "a number of micro-batches" : "a path");
            return DT_ERR_INPUT;
        }
        if (is_max) {
            char *end = NULL;
            long n = strtol(argv[i + 1], &end, 10);
            if (*end || n < 1 || n > 1000000000) {
                dt_error("eval: --max-batches: expected a number >= 1, got '%s'", argv[i + 1]);
                return DT_ERR_INPUT;
            }
            a->max_batches = n;
        } else {
            *dst = argv[i + 1];
        }
        memmove(&argv[i], &argv[i + 2], (size_t)(*argc - i - 2) * sizeof *argv);
        *argc -= 2;
        i--;
    }
    if (!a->checkpoint) {
        dt_error("eval: --checkpoint DIR is required (a step directory or a checkpoint.dir)");
        return DT_ERR_INPUT;
    }
    return DT_OK;
}

/* Every token of the shard must be a valid id: checked once, before any forward. */
static dt_status check_shard_tokens(const dt_shard *s, int vocab_size) {
    if (s->n_tokens < 2) {
        dt_error("%s: %zu token(s): scoring needs at least 2 (the first is never a target)",
                 s->path, s->n_tokens);
        return DT_ERR_INPUT;
    }
    for (size_t i = 0; i < s->n_tokens; i++) {
        uint32_t t = shard_token(s, i);
        if (t >= (uint32_t)vocab_size) {
            dt_error("%s: token %zu is %u, outside the vocabulary (model.vocab_size %d)", s->path,
                     i, t, vocab_size);
            return DT_ERR_INPUT;
        }
    }
    return DT_OK;
}

/* Opens the data, checks it, and counts the micro-batches to score. */
static dt_status open_data(evaluator *e, const eval_args *a) {
    const dt_config *c = &e->cfg;
    long B = c->train.micro_batch, T = c->train.seq_len;
    uint64_t rows;
    if (a->tokens) {
        DT_TRY(shard_open(&e->shard, a->tokens));
        DT_TRY(check_shard_tokens(&e->shard, c->model.vocab_size));
        rows = (e->shard.n_tokens - 2) / (uint64_t)T + 1; /* ceil((n - 1) / T) windows */
    } else {
        DT_TRY(loader_init(&e->val, (const char(*)[DT_PATH_MAX])c->data.val, c->data.n_val,
                           c->train.seq_len, c->model.vocab_size, c->train.seed, 0));
        rows = loader_num_samples(&e->val);
    }
    uint64_t all = (rows + (uint64_t)B - 1) / (uint64_t)B;
    e->n_batches = a->max_batches > 0 && (a->tokens == NULL || (uint64_t)a->max_batches < all)
                       ? a->max_batches
                       : (long)all;
    return DT_OK;
}

/* Fills the staging buffers with micro-batch i. Data.val: stream indices [i*B, i*B + B), which
 * with --max-batches may wrap into the next epoch (the same samples as training's validation);
 * without it, rows past the last sample are padding. --tokens: windows i*B + b starting at token
 * (i*B + b)*T; positions whose target lies past the end of the file are padding. Padding is
 * input 0 with target -1, which the model ignores. */
static dt_status fill_batch(evaluator *e, long i, int wrap) {
    int B = e->cfg.train.micro_batch, T = e->cfg.train.seq_len;
    for (int b = 0; b < B; b++) {
        int32_t *in = e->inputs + (size_t)b * T, *tg = e->targets + (size_t)b * T;
        uint64_t row = (uint64_t)i * B + (uint64_t)b;
        if (!e->shard.map && (wrap || row < loader_num_samples(&e->val))) {
            DT_TRY(loader_sample(&e->val, row, in, tg));
            continue;
        }
        for (int t = 0; t < T; t++) {
            uint64_t pos = row * (uint64_t)T + (uint64_t)t; /* the input's index in the file */
            int real = e->shard.map && pos + 1 < e->shard.n_tokens;
            in[t] = real ? (int32_t)shard_token(&e->shard, pos) : 0;
            tg[t] = real ? (int32_t)shard_token(&e->shard, pos + 1) : -1;
        }
    }
    return DT_OK;
}

/* Sums the loss over every target of this DP rank's micro-batches (i = dp_rank, dp_rank + dp,
 * ...), then over the DP group: sums[0] = sum of per-target losses, sums[1] = targets. Each
 * micro-batch's mean (fp32, as the model returns it) is weighted by its target count in double,
 * so the result is the mean over all targets whatever the padding. */
static dt_status eval_run(evaluator *e, int wrap, double sums[2]) {
    sums[0] = sums[1] = 0;
    for (long i = e->groups.dp_rank; i < e->n_batches; i += e->groups.dp_size) {
        DT_TRY(fill_batch(e, i, wrap));
        float loss = model_forward(&e->model, e->inputs, e->targets);
        sums[0] += (double)loss * (double)e->model.n_targets;
        sums[1] += (double)e->model.n_targets;
    }
    return comm_allreduce_f64(&e->groups.dp, sums, 2, DT_REDUCE_SUM);
}

static dt_status eval_setup(evaluator *e, const eval_args *a) {
    dt_config *c = &e->cfg;
    dt_groups *g = &e->groups;
    DT_TRY(groups_init(g, &e->world, c->parallel.tp, c->parallel.dp));
    if (c->train.threads > 0) cpu_set_threads(c->train.threads);
    e->be = dt_backend_cpu();
    e->tp_comm = (dt_tp_comm){g->tp_rank, g->tp_size, e, tp_allreduce_sum, tp_allreduce_max};
    /* every rank finds the same problems in the data: rank 0 reports them */
    dt_log_set_quiet(e->world.rank != 0);
    dt_status st = open_data(e, a);
    if (st == DT_OK) st = ckpt_resolve_dir(a->checkpoint, e->ckpt_path, sizeof e->ckpt_path);
    dt_log_set_quiet(0);
    DT_TRY(dist_agree(&g->world, st));
    size_t n = (size_t)c->train.micro_batch * c->train.seq_len;
    e->inputs = dt_malloc(n * sizeof(int32_t));
    e->targets = dt_malloc(n * sizeof(int32_t));
    st = e->inputs && e->targets ? DT_OK : DT_ERR_RUNTIME;
    if (st != DT_OK) dt_error("out of memory for the token staging buffers");
    DT_TRY(dist_agree(&g->world, st));
    /* the initial weights are overwritten by the checkpoint's */
    DT_TRY(dist_agree(&g->world, model_init_tp(&e->model, &c->model, e->be, c->train.seed,
                                               c->train.micro_batch, c->train.seq_len,
                                               &e->tp_comm)));
    /* weights only: ckpt_load never touches the optimizer or ZeRO state in this mode */
    dt_ckpt_state s = {c, &e->model, NULL, NULL, g};
    dt_ckpt_meta meta;
    DT_TRY(ckpt_load(&s, e->ckpt_path, DT_CKPT_WEIGHTS, &meta, NULL));
    e->step = (long long)meta.step;
    return DT_OK;
}

/* Writes s as a JSON string (quotes, backslashes and control characters escaped). */
static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

/* What was scored, for the report: the --tokens file, or data.val's patterns joined by ", ". */
static void data_name(const evaluator *e, const eval_args *a, char *buf, size_t n) {
    if (a->tokens) {
        snprintf(buf, n, "%s", a->tokens);
        return;
    }
    size_t len = 0;
    buf[0] = 0;
    for (int i = 0; i < e->cfg.data.n_val && len < n; i++)
        len += (size_t)snprintf(buf + len, n - len, "%s%s", i ? ", " : "", e->cfg.data.val[i]);
}

/* Writes the result to path.tmp and renames it, so a reader never sees a partial file. */
static dt_status write_json(const char *path, double loss, double ppl, double tokens,
                            const char *ckpt, long long step, const char *data) {
    char tmp[DT_PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        dt_error("--out %s: cannot create %s", path, tmp);
        return DT_ERR_INPUT;
    }
    fprintf(f, "{\"loss\": %.17g, \"perplexity\": %.17g, \"tokens\": %.0f, \"checkpoint\": ", loss,
            ppl, tokens);
    json_string(f, ckpt);
    fprintf(f, ", \"step\": %lld, \"data\": ", step);
    json_string(f, data);
    fprintf(f, "}\n");
    int bad = ferror(f);
    if (fclose(f) != 0 || bad || rename(tmp, path) != 0) {
        dt_error("--out %s: write failed", path);
        remove(tmp);
        return DT_ERR_RUNTIME;
    }
    return DT_OK;
}

static dt_status eval_report(const evaluator *e, const eval_args *a, const double sums[2]) {
    char data[4 * DT_PATH_MAX];
    data_name(e, a, data, sizeof data);
    double loss = sums[1] > 0 ? sums[0] / sums[1] : 0;
    double ppl = exp(loss);
    printf("eval: loss %.6f | perplexity %.4f | %.0f tokens | checkpoint %s (step %lld) | data %s\n",
           loss, ppl, sums[1], e->ckpt_path, e->step, data);
    fflush(stdout);
    return a->out ? write_json(a->out, loss, ppl, sums[1], e->ckpt_path, e->step, data) : DT_OK;
}

static void eval_free(evaluator *e) {
    model_free(&e->model);
    loader_free(&e->val);
    shard_close(&e->shard);
    dt_free(e->inputs);
    dt_free(e->targets);
    groups_free(&e->groups);
}

int cmd_eval(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? DT_ERR_INPUT : DT_OK;
    }
    eval_args a;
    dt_status st = parse_args(&argc, argv, &a);
    if (st != DT_OK) return st;
    evaluator e;
    memset(&e, 0, sizeof e);
    st = world_init(&e.world, &argc, &argv);
    if (st != DT_OK) return st;
    /* every rank reads the same config and finds the same problems: rank 0 reports them */
    dt_log_set_quiet(e.world.rank != 0);
    st = config_load(&e.cfg, argv[1], argc - 2, argv + 2);
    if (st == DT_OK && !a.tokens && e.cfg.data.n_val < 1) {
        dt_error("%s: data.val: expected at least one path or glob of validation shards to "
                 "evaluate on (or pass --tokens FILE), got none", e.cfg.source);
        st = DT_ERR_INPUT;
    }
    dt_log_set_quiet(0);
    if (st != DT_OK) goto done;
    DT_TRY_GOTO(st, eval_setup(&e, &a), done);
    double sums[2];
    /* with --max-batches the data.val stream wraps as training's validation does. A failure
     * here may be one rank's alone (a bad token in its share of the data) while the others wait
     * in the all-reduce: end the whole job rather than leave them hanging. Every failure before
     * this point was agreed on by all ranks, which exit with it. */
    st = eval_run(&e, a.max_batches > 0, sums);
    if (st != DT_OK && e.world.size > 1) world_abort(&e.world, st);
    if (st == DT_OK && e.world.rank == 0) st = eval_report(&e, &a, sums);
    if (e.world.size > 1) st = dist_agree(&e.groups.world, st);
done:
    eval_free(&e);
    world_finalize();
    return st;
}
