/* `difftrain eval CONFIG.yaml --checkpoint DIR [--tokens FILE] [--out FILE.json]
 * [--max-batches N] [key.path=value ...]`: the loss and perplexity of a checkpoint's weights on
 * the config's validation shards or on one token shard, alone or on tp x dp ranks.
 * `--task needles --tokens SHARD --answers FILE.jsonl ...`: multi-needle retrieval accuracy on
 * the documents of `difftrain data needles`, by number of needles and by needle depth. */
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
#include "launch/device.h"
#include "launch/needles_answers.h"
#include "launch/tp_comm.h"
#include "launch/watchdog.h"
#include "model/cpu/cpu_ops.h"
#include "model/model.h"
#include "util/alloc.h"

#define EVAL_MAX_SETS 16 /* --tokens/--answers pairs of --task needles */
#define DEPTH_BUCKETS 5  /* needle depth in [0, 0.2), [0.2, 0.4), ..., [0.8, 1.0] */

typedef struct eval_args {
    const char *checkpoint; /* --checkpoint DIR (required) */
    const char *tokens;     /* --tokens FILE, or NULL: the config's data.val */
    const char *out;        /* --out FILE.json, or NULL */
    long max_batches;       /* --max-batches N; 0 = all of the data */
    int needles;            /* --task needles (else --task loss, the default) */
    const char *shards[EVAL_MAX_SETS];  /* every --tokens, in order */
    const char *answers[EVAL_MAX_SETS]; /* every --answers, in order */
    int n_shards, n_answers;
    const char *dump; /* --dump-queries FILE (undocumented, for tests): one line per query */
} eval_args;

typedef struct evaluator {
    dt_config cfg;
    dt_world world;
    dt_groups groups;
    dt_tp_comm tp_comm;
    dt_tp_binding tp_binding;
    dt_device_choice device; /* train.device / train.precision: the CPU or this rank's GPU */
    const dt_backend *be;
    dt_model model;
    dt_loader val;   /* default data: data.val, unshuffled */
    dt_shard shard;  /* --tokens FILE */
    int32_t *inputs, *targets; /* (micro_batch, seq_len) host staging */
    char ckpt_path[4300];      /* the resolved step directory */
    long long step;            /* the checkpoint's step */
    long n_batches;            /* micro-batches to score, shared out over DP ranks */
    int T;                     /* the model's sequence length: seq_len, or the longest document */
    /* --task needles: the pairs, their documents numbered one after the other */
    dt_needles_answers ans[EVAL_MAX_SETS];
    dt_shard nshard[EVAL_MAX_SETS];
    int n_sets;
    uint64_t n_docs;  /* over all sets */
    size_t n_queries; /* over all sets */
    double *preds;    /* (n_queries, 6) the greedy prediction at each answer digit */
    double *nll;      /* (n_queries, 6) the cross-entropy of each answer digit (nats) */
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
            "                  \"step\", \"data\"} (rank 0)\n"
            "\n"
            "difftrain eval CONFIG.yaml --checkpoint DIR --task needles --tokens SHARD --answers FILE\n"
            "               [--tokens SHARD --answers FILE ...] [--out FILE.json] [key.path=value ...]\n"
            "\n"
            "--task needles    multi-needle retrieval accuracy on the documents of `difftrain data\n"
            "                  needles` (pairs of NAME_000000.bin and NAME_answers.jsonl, up to 16):\n"
            "                  each document is one sequence of its C tokens (train.seq_len >= C),\n"
            "                  and a query is right when, under teacher forcing, the argmax of the\n"
            "                  logits predicts all 6 answer digits. Prints accuracy by number of\n"
            "                  needles, by needle depth (5 buckets of 0.2) and overall, and two\n"
            "                  graded measures: the fraction of answer digits predicted right and\n"
            "                  the answer loss (mean cross-entropy of the answer digits, nats);\n"
            "                  --out writes {\"task\", \"accuracy\", \"correct\", \"queries\",\n"
            "                  \"digit_accuracy\", \"answer_loss\", \"digit_accuracy_by_needles\",\n"
            "                  \"answer_loss_by_needles\", \"by_needles\", \"queries_by_needles\",\n"
            "                  \"by_depth\", \"queries_by_depth\", \"checkpoint\", \"step\", \"data\"}\n");
}

/* Removes the options from argv (they may stand anywhere after the config), leaving the config
 * and the overrides. Returns DT_ERR_INPUT with a message on a bad option. */
static dt_status parse_args(int *argc, char **argv, eval_args *a) {
    memset(a, 0, sizeof *a);
    for (int i = 2; i < *argc; i++) {
        const char *o = argv[i];
        int is_max = strcmp(o, "--max-batches") == 0, is_task = strcmp(o, "--task") == 0;
        int is_tokens = strcmp(o, "--tokens") == 0, is_answers = strcmp(o, "--answers") == 0;
        const char **dst = strcmp(o, "--checkpoint") == 0    ? &a->checkpoint
                         : strcmp(o, "--out") == 0           ? &a->out
                         : strcmp(o, "--dump-queries") == 0  ? &a->dump
                                                             : NULL;
        if (!dst && !is_max && !is_task && !is_tokens && !is_answers) {
            if (strncmp(o, "--", 2) == 0) {
                dt_error("eval: unknown option '%s' (see difftrain eval --help)", o);
                return DT_ERR_INPUT;
            }
            continue; /* an override */
        }
        if (i + 1 >= *argc || !argv[i + 1][0]) {
            dt_error("eval: %s needs %s", o,
                     is_max ? "a number of micro-batches" : is_task ? "loss or needles" : "a path");
            return DT_ERR_INPUT;
        }
        const char *v = argv[i + 1];
        if (is_max) {
            char *end = NULL;
            long n = strtol(v, &end, 10);
            if (*end || n < 1 || n > 1000000000) {
                dt_error("eval: --max-batches: expected a number >= 1, got '%s'", v);
                return DT_ERR_INPUT;
            }
            a->max_batches = n;
        } else if (is_task) {
            if (strcmp(v, "loss") != 0 && strcmp(v, "needles") != 0) {
                dt_error("eval: --task: expected loss or needles, got '%s'", v);
                return DT_ERR_INPUT;
            }
            a->needles = strcmp(v, "needles") == 0;
        } else if (is_tokens || is_answers) {
            int *n = is_tokens ? &a->n_shards : &a->n_answers;
            if (*n == EVAL_MAX_SETS) {
                dt_error("eval: %s given more than %d times", o, EVAL_MAX_SETS);
                return DT_ERR_INPUT;
            }
            (is_tokens ? a->shards : a->answers)[(*n)++] = v;
        } else {
            *dst = v;
        }
        memmove(&argv[i], &argv[i + 2], (size_t)(*argc - i - 2) * sizeof *argv);
        *argc -= 2;
        i--;
    }
    if (!a->checkpoint) {
        dt_error("eval: --checkpoint DIR is required (a step directory or a checkpoint.dir)");
        return DT_ERR_INPUT;
    }
    a->tokens = a->n_shards ? a->shards[0] : NULL;
    if (a->needles) {
        if (a->n_shards < 1 || a->n_shards != a->n_answers) {
            dt_error("eval: --task needles needs pairs of --tokens SHARD --answers FILE.jsonl (the "
                     "files of `difftrain data needles`), got %d --tokens and %d --answers",
                     a->n_shards, a->n_answers);
            return DT_ERR_INPUT;
        }
        if (a->max_batches) {
            dt_error("eval: --max-batches applies to --task loss, not to --task needles");
            return DT_ERR_INPUT;
        }
    } else if (a->n_answers || a->dump) {
        dt_error("eval: %s applies to --task needles", a->n_answers ? "--answers" : "--dump-queries");
        return DT_ERR_INPUT;
    } else if (a->n_shards > 1) {
        dt_error("eval: --tokens given %d times: --task loss scores one shard", a->n_shards);
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

/* --task needles: reads every answers file, checks it against its shard, and sizes the model for
 * the longest document (at most train.seq_len, so at most model.max_seq_len). */
static dt_status open_needles(evaluator *e, const eval_args *a) {
    const dt_config *c = &e->cfg;
    e->T = 1;
    for (int i = 0; i < a->n_shards; i++) {
        dt_needles_answers *ans = &e->ans[i];
        DT_TRY(needles_answers_load(ans, a->answers[i]));
        e->n_sets = i + 1; /* from here on eval_free releases this pair */
        DT_TRY(shard_open(&e->nshard[i], a->shards[i]));
        DT_TRY(check_shard_tokens(&e->nshard[i], c->model.vocab_size));
        DT_TRY(needles_answers_check_shard(ans, a->answers[i], &e->nshard[i]));
        if (ans->context > c->train.seq_len) {
            dt_error("%s: documents of %d tokens, but train.seq_len is %d: --task needles scores "
                     "each document as one sequence; set train.seq_len=%d (model.max_seq_len must "
                     "be at least that too)", a->answers[i], ans->context, c->train.seq_len,
                     ans->context);
            return DT_ERR_INPUT;
        }
        if (ans->context > e->T) e->T = ans->context;
        e->n_docs += ans->n_docs;
        e->n_queries += ans->n_queries;
    }
    long B = c->train.micro_batch;
    e->n_batches = (long)((e->n_docs + (uint64_t)B - 1) / (uint64_t)B);
    e->preds = dt_calloc(e->n_queries * DT_ANSWER_DIGITS, sizeof *e->preds);
    e->nll = dt_calloc(e->n_queries * DT_ANSWER_DIGITS, sizeof *e->nll);
    if (!e->preds || !e->nll) {
        dt_error("out of memory for the predictions of %zu queries", e->n_queries);
        return DT_ERR_RUNTIME;
    }
    return DT_OK;
}

/* Opens the data, checks it, and counts the micro-batches to score. */
static dt_status open_data(evaluator *e, const eval_args *a) {
    const dt_config *c = &e->cfg;
    long B = c->train.micro_batch, T = c->train.seq_len;
    uint64_t rows;
    if (a->needles) return open_needles(e, a);
    e->T = c->train.seq_len;
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
        watchdog_phase("evaluation", (int)(i + 1));
        DT_TRY(fill_batch(e, i, wrap));
        float loss = model_forward(&e->model, e->inputs, e->targets);
        sums[0] += (double)loss * (double)e->model.n_targets;
        sums[1] += (double)e->model.n_targets;
    }
    watchdog_phase("sum over the data-parallel ranks", 0);
    return comm_allreduce_f64(&e->groups.dp, sums, 2, DT_REDUCE_SUM);
}

static dt_status eval_setup(evaluator *e, const eval_args *a) {
    dt_config *c = &e->cfg;
    dt_groups *g = &e->groups;
    DT_TRY(groups_init(g, &e->world, c->parallel.tp, c->parallel.dp));
    if (c->train.threads > 0) cpu_set_threads(c->train.threads);
    DT_TRY(device_select(&e->device, c, &e->world, &g->world));
    e->be = e->device.be;
    tp_comm_bind(&e->tp_comm, &e->tp_binding, g, e->device.coll, &e->world);
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
                                               c->train.micro_batch, e->T, &e->tp_comm)));
    /* weights only: ckpt_load never touches the optimizer or ZeRO state in this mode */
    dt_ckpt_state s = {c, &e->model, NULL, NULL, g};
    dt_ckpt_meta meta;
    watchdog_phase("checkpoint load", 0);
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

/* ---- --task needles ---- */

/* The set holding document g of the concatenation, and g's index in it. */
static int needles_locate(const evaluator *e, uint64_t g, uint64_t *doc) {
    int i = 0;
    while (g >= e->ans[i].n_docs) g -= e->ans[i++].n_docs;
    *doc = g;
    return i;
}

/* Index of set i's first query among all the sets' queries. */
static size_t needles_query_base(const evaluator *e, int i) {
    size_t q = 0;
    for (int j = 0; j < i; j++) q += e->ans[j].n_queries;
    return q;
}

/* Micro-batch i = documents [i*B, i*B + B) of the concatenation, one per row, each padded with
 * token 0 after its C tokens up to T (causal attention: the padding cannot change the rows
 * before it). One forward whose only targets are the answer digits, then the greedy prediction
 * and the cross-entropy at every answer digit's row, stored into preds and nll (the only rank
 * writing those queries' entries). */
typedef struct needles_scratch {
    int32_t *rows, *out; /* (B * 64 * 6) the answer digits' rows and their predictions */
    float *losses;       /* (B * T) the forward's per-row losses */
    size_t *first;       /* (B) row b's document's first query among all the sets' queries */
    int *n_q;            /* (B) its number of queries */
} needles_scratch;

static dt_status needles_batch(evaluator *e, long i, const needles_scratch *w) {
    int B = e->cfg.train.micro_batch, T = e->T, n = 0;
    int32_t *rows = w->rows, *out = w->out;
    for (int b = 0; b < B; b++) {
        int32_t *in = e->inputs + (size_t)b * T, *tg = e->targets + (size_t)b * T;
        uint64_t g = (uint64_t)i * B + (uint64_t)b, doc = 0;
        for (int t = 0; t < T; t++) in[t] = 0, tg[t] = -1;
        if (g >= e->n_docs) continue;
        int set = needles_locate(e, g, &doc);
        const dt_needles_answers *ans = &e->ans[set];
        for (int t = 0; t < ans->context; t++)
            in[t] = (int32_t)shard_token(&e->nshard[set], (size_t)(doc * ans->context) + t);
        size_t q0 = ans->doc_first[doc], q1 = ans->doc_first[doc + 1];
        for (size_t q = q0; q < q1; q++)
            for (int j = 0; j < DT_ANSWER_DIGITS; j++) {
                int pos = (int)ans->queries[q].pos + j; /* the digit, predicted by row pos - 1 */
                tg[pos - 1] = in[pos];
                rows[n++] = b * T + pos - 1;
            }
        w->first[b] = needles_query_base(e, set) + q0;
        w->n_q[b] = (int)(q1 - q0);
    }
    model_forward(&e->model, e->inputs, e->targets);
    e->model.be->copy_to_host(w->losses, e->model.losses, (size_t)B * T * sizeof(float));
    DT_TRY(model_argmax_rows(&e->model, out, rows, n));
    n = 0;
    for (int b = 0; b < B && (uint64_t)i * B + (uint64_t)b < e->n_docs; b++)
        for (int k = 0; k < w->n_q[b] * DT_ANSWER_DIGITS; k++, n++) {
            size_t at = w->first[b] * DT_ANSWER_DIGITS + (size_t)k;
            e->preds[at] = out[n];
            e->nll[at] = w->losses[rows[n]];
        }
    return DT_OK;
}

/* Every DP rank scores micro-batches dp_rank, dp_rank + dp, ... (all TP ranks of a DP group the
 * same ones, together); each prediction is written by exactly one DP rank and left 0 by the
 * others, so a sum over the DP group gathers them all. */
static dt_status needles_run(evaluator *e) {
    int B = e->cfg.train.micro_batch;
    size_t per = (size_t)B * 64 * DT_ANSWER_DIGITS; /* rows of one micro-batch, at most */
    needles_scratch w = {dt_malloc(per * sizeof *w.rows), dt_malloc(per * sizeof *w.out),
                         dt_malloc((size_t)B * e->T * sizeof *w.losses),
                         dt_malloc((size_t)B * sizeof *w.first), dt_malloc((size_t)B * sizeof *w.n_q)};
    dt_status st = w.rows && w.out && w.losses && w.first && w.n_q ? DT_OK : DT_ERR_RUNTIME;
    if (st != DT_OK) dt_error("out of memory for the answer rows");
    for (long i = e->groups.dp_rank; st == DT_OK && i < e->n_batches; i += e->groups.dp_size) {
        watchdog_phase("evaluation", (int)(i + 1));
        st = needles_batch(e, i, &w);
    }
    dt_free(w.rows);
    dt_free(w.out);
    dt_free(w.losses);
    dt_free(w.first);
    dt_free(w.n_q);
    DT_TRY(st);
    watchdog_phase("sum over the data-parallel ranks", 0);
    DT_TRY(comm_allreduce_f64(&e->groups.dp, e->nll, e->n_queries * DT_ANSWER_DIGITS,
                              DT_REDUCE_SUM));
    return comm_allreduce_f64(&e->groups.dp, e->preds, e->n_queries * DT_ANSWER_DIGITS,
                              DT_REDUCE_SUM);
}

/* Bucket of a depth in [0, 1]: floor(5 d), with d = 1 in the last bucket. */
static int depth_bucket(double depth) {
    int b = (int)floor(depth * DEPTH_BUCKETS);
    return b < 0 ? 0 : (b >= DEPTH_BUCKETS ? DEPTH_BUCKETS - 1 : b);
}

typedef struct tally {
    long correct[65], total[65];                   /* by number of needles, 1..64 */
    long dcorrect[DEPTH_BUCKETS], dtotal[DEPTH_BUCKETS]; /* by depth bucket */
    long all_correct, all;
    /* per answer digit (6 per query): greedy hits and the summed cross-entropy, by N and all */
    long digit_hits[65], digit_hits_all;
    double nll[65], nll_all;
} tally;

/* correct / total with 17 significant digits (JSON) or 6 decimals (the table); null if empty */
static void fmt_acc(char *buf, size_t n, long correct, long total, int json) {
    if (total) snprintf(buf, n, json ? "%.17g" : "%.6f", (double)correct / (double)total);
    else snprintf(buf, n, "null");
}

static dt_status needles_write_json(const evaluator *e, const eval_args *a, const tally *t) {
    char tmp[DT_PATH_MAX + 8], acc[32];
    snprintf(tmp, sizeof tmp, "%s.tmp", a->out);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        dt_error("--out %s: cannot create %s", a->out, tmp);
        return DT_ERR_INPUT;
    }
    fmt_acc(acc, sizeof acc, t->all_correct, t->all, 1);
    fprintf(f, "{\"task\": \"needles\", \"accuracy\": %s, \"correct\": %ld, \"queries\": %ld",
            acc, t->all_correct, t->all);
    fmt_acc(acc, sizeof acc, t->digit_hits_all, t->all * DT_ANSWER_DIGITS, 1);
    fprintf(f, ", \"digit_accuracy\": %s, \"answer_loss\": ", acc);
    if (t->all) fprintf(f, "%.17g", t->nll_all / (double)(t->all * DT_ANSWER_DIGITS));
    else fprintf(f, "null");
    for (int pass = 0; pass < 2; pass++) {
        fprintf(f, ", \"%s\": {", pass ? "answer_loss_by_needles" : "digit_accuracy_by_needles");
        for (int k = 0, first = 1; k < 65; k++) {
            if (!t->total[k]) continue;
            long digits = t->total[k] * DT_ANSWER_DIGITS;
            if (pass) snprintf(acc, sizeof acc, "%.17g", t->nll[k] / (double)digits);
            else fmt_acc(acc, sizeof acc, t->digit_hits[k], digits, 1);
            fprintf(f, "%s\"%d\": %s", first ? "" : ", ", k, acc);
            first = 0;
        }
        fprintf(f, "}");
    }
    for (int pass = 0; pass < 4; pass++) {
        static const char *names[4] = {"by_needles", "queries_by_needles", "by_depth",
                                       "queries_by_depth"};
        fprintf(f, ", \"%s\": {", names[pass]);
        int first = 1;
        for (int k = 0; k < (pass < 2 ? 65 : DEPTH_BUCKETS); k++) {
            long c = pass < 2 ? t->correct[k] : t->dcorrect[k];
            long n = pass < 2 ? t->total[k] : t->dtotal[k];
            if (pass < 2 && n == 0) continue;
            char key[32];
            if (pass < 2) snprintf(key, sizeof key, "%d", k);
            else snprintf(key, sizeof key, "%.1f-%.1f", k / 5.0, (k + 1) / 5.0);
            fmt_acc(acc, sizeof acc, c, n, 1);
            if (pass % 2) fprintf(f, "%s\"%s\": %ld", first ? "" : ", ", key, n);
            else fprintf(f, "%s\"%s\": %s", first ? "" : ", ", key, acc);
            first = 0;
        }
        fprintf(f, "}");
    }
    fprintf(f, ", \"checkpoint\": ");
    json_string(f, e->ckpt_path);
    fprintf(f, ", \"step\": %lld, \"data\": [", e->step);
    for (int i = 0; i < a->n_shards; i++) {
        fprintf(f, "%s{\"tokens\": ", i ? ", " : "");
        json_string(f, a->shards[i]);
        fprintf(f, ", \"answers\": ");
        json_string(f, a->answers[i]);
        fprintf(f, "}");
    }
    fprintf(f, "]}\n");
    int bad = ferror(f);
    if (fclose(f) != 0 || bad || rename(tmp, a->out) != 0) {
        dt_error("--out %s: write failed", a->out);
        remove(tmp);
        return DT_ERR_RUNTIME;
    }
    return DT_OK;
}

/* Rank 0: scores every query from the gathered predictions, prints the tables, writes --out and
 * --dump-queries (per query: set, doc, query, N, depth, answer, the 6 predicted ids, 0/1). */
static dt_status needles_report(const evaluator *e, const eval_args *a) {
    tally t;
    memset(&t, 0, sizeof t);
    FILE *dump = NULL;
    if (a->dump && !(dump = fopen(a->dump, "w"))) {
        dt_error("--dump-queries %s: cannot create the file", a->dump);
        return DT_ERR_INPUT;
    }
    size_t g = 0;
    for (int i = 0; i < e->n_sets; i++) {
        const dt_needles_answers *ans = &e->ans[i];
        for (size_t q = 0; q < ans->n_queries; q++, g++) {
            const dt_needles_query *nq = &ans->queries[q];
            const double *p = e->preds + g * DT_ANSWER_DIGITS;
            const double *nll = e->nll + g * DT_ANSWER_DIGITS;
            int ok = 1;
            for (int j = 0; j < DT_ANSWER_DIGITS; j++) {
                int hit = p[j] == (double)(unsigned char)nq->answer[j];
                ok &= hit;
                t.digit_hits[nq->n_needles] += hit;
                t.digit_hits_all += hit;
                t.nll[nq->n_needles] += nll[j];
                t.nll_all += nll[j];
            }
            int d = depth_bucket(nq->depth);
            t.correct[nq->n_needles] += ok;
            t.total[nq->n_needles]++;
            t.dcorrect[d] += ok;
            t.dtotal[d]++;
            t.all_correct += ok;
            t.all++;
            if (dump) {
                fprintf(dump, "%d\t%llu\t%zu\t%d\t%.6f\t%s\t", i, (unsigned long long)nq->doc,
                        q - ans->doc_first[nq->doc], nq->n_needles, nq->depth, nq->answer);
                for (int j = 0; j < DT_ANSWER_DIGITS; j++)
                    fprintf(dump, "%s%.0f", j ? "," : "", p[j]);
                fprintf(dump, "\t%d\n", ok);
            }
        }
    }
    if (dump && (ferror(dump) | fclose(dump))) {
        dt_error("--dump-queries %s: write failed", a->dump);
        return DT_ERR_RUNTIME;
    }
    char acc[32];
    printf("needles: checkpoint %s (step %lld) | %zu documents in %d file%s\n", e->ckpt_path,
           e->step, (size_t)e->n_docs, e->n_sets, e->n_sets == 1 ? "" : "s");
    printf("  %-10s %8s %8s %9s %9s %12s\n", "needles", "queries", "correct", "accuracy",
           "digits", "answer loss");
    for (int k = 1; k <= 64; k++) {
        if (!t.total[k]) continue;
        char dacc[32];
        fmt_acc(acc, sizeof acc, t.correct[k], t.total[k], 0);
        fmt_acc(dacc, sizeof dacc, t.digit_hits[k], t.total[k] * DT_ANSWER_DIGITS, 0);
        printf("  %-10d %8ld %8ld %9s %9s %12.4f\n", k, t.total[k], t.correct[k], acc, dacc,
               t.nll[k] / (double)(t.total[k] * DT_ANSWER_DIGITS));
    }
    printf("  %-10s %8s %8s %9s\n", "depth", "queries", "correct", "accuracy");
    for (int k = 0; k < DEPTH_BUCKETS; k++) {
        char key[32];
        snprintf(key, sizeof key, "%.1f-%.1f", k / 5.0, (k + 1) / 5.0);
        fmt_acc(acc, sizeof acc, t.dcorrect[k], t.dtotal[k], 0);
        printf("  %-10s %8ld %8ld %9s\n", key, t.dtotal[k], t.dcorrect[k], t.dtotal[k] ? acc : "-");
    }
    fmt_acc(acc, sizeof acc, t.all_correct, t.all, 0);
    printf("needles: accuracy %s | %ld of %ld queries", acc, t.all_correct, t.all);
    if (t.all) {
        fmt_acc(acc, sizeof acc, t.digit_hits_all, t.all * DT_ANSWER_DIGITS, 0);
        printf(" | answer digits right %s, answer loss %.4f nats/digit", acc,
               t.nll_all / (double)(t.all * DT_ANSWER_DIGITS));
    }
    printf("\n");
    fflush(stdout);
    return a->out ? needles_write_json(e, a, &t) : DT_OK;
}

static void eval_free(evaluator *e) {
    for (int i = 0; i < e->n_sets; i++) {
        needles_answers_free(&e->ans[i]);
        shard_close(&e->nshard[i]);
    }
    dt_free(e->preds);
    dt_free(e->nll);
    model_free(&e->model);
    loader_free(&e->val);
    shard_close(&e->shard);
    dt_free(e->inputs);
    dt_free(e->targets);
    groups_free(&e->groups); /* frees the NCCL communicators before the device goes */
    device_release(&e->device);
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
    if (st == DT_OK) st = watchdog_start("batch"); /* the same variable on every rank */
    dt_log_set_quiet(0);
    if (st != DT_OK) goto done;
    DT_TRY_GOTO(st, eval_setup(&e, &a), done);
    if (e.world.rank == 0) {
        printf("eval: %ld batch%s of %d x %d tokens on %d rank%s (tp %d, dp %d)\n", e.n_batches,
               e.n_batches == 1 ? "" : "es", e.cfg.train.micro_batch, e.T, e.world.size,
               e.world.size == 1 ? "" : "s", e.groups.tp_size, e.groups.dp_size);
        fflush(stdout);
    }
    if (a.needles) {
        /* as below: a rank's failure mid-run must not leave the others waiting */
        st = needles_run(&e);
        if (st != DT_OK && e.world.size > 1) world_abort(&e.world, st);
        watchdog_phase("report", 0);
        if (st == DT_OK && e.world.rank == 0) st = needles_report(&e, &a);
        if (e.world.size > 1) st = dist_agree(&e.groups.world, st);
        goto done;
    }
    double sums[2];
    /* with --max-batches the data.val stream wraps as training's validation does. A failure
     * here may be one rank's alone (a bad token in its share of the data) while the others wait
     * in the all-reduce: end the whole job rather than leave them hanging. Every failure before
     * this point was agreed on by all ranks, which exit with it. */
    st = eval_run(&e, a.max_batches > 0, sums);
    if (st != DT_OK && e.world.size > 1) world_abort(&e.world, st);
    watchdog_phase("report", 0);
    if (st == DT_OK && e.world.rank == 0) st = eval_report(&e, &a, sums);
    if (e.world.size > 1) st = dist_agree(&e.groups.world, st);
done:
    watchdog_phase("shutdown", 0); /* MPI_Finalize's wait for the peers */
    eval_free(&e);
    world_finalize();
    watchdog_stop();
    return st;
}
