/* `difftrain analyze CONFIG.yaml --checkpoint DIR --tokens SHARD --answers FILE.jsonl
 * [--max-docs N] --out FILE.json [key.path=value ...]`: attention statistics of a checkpoint on
 * the needle documents of `difftrain data needles` (README "Analysis"), on one rank.
 *
 * Each document is one sequence of its C tokens. After a forward on the CPU backend the
 * per-layer activations (q and k after RoPE, lambda, the diff_v2 gate logits, the residual
 * stream x_in) are host memory; the attention maps are recomputed from q and k in double
 * (model/attn_stats.h) with the GQA pairing of SPEC 2, 4 and 5. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/ckpt.h"
#include "data/shard.h"
#include "dist/groups.h"
#include "dist/world.h"
#include "launch/commands.h"
#include "launch/config.h"
#include "launch/needles_answers.h"
#include "model/attn_stats.h"
#include "model/cpu/cpu_ops.h"
#include "model/model.h"
#include "util/alloc.h"

#define ANALYZE_TOPK 100 /* the "top-100" magnitude: the 100th largest */

/* per-head sums over the queries, divided by the query count when written */
enum { S_SPAN, S_REST_ABS, S_REST_SIGNED, S_ENTROPY, S_GINI, S_SINK, S_LAMBDA, S_COS_REL,
       S_COS_IRR, S_KL_REL, S_KL_IRR, S_COUNT };
static const char *const stat_names[S_COUNT] = {
    "span_mass", "rest_abs_mass", "rest_signed_mass", "entropy", "gini", "sink_mass", "lambda",
    "cos_relevant", "cos_irrelevant", "kl_relevant", "kl_irrelevant"};

typedef struct analyze_args {
    const char *checkpoint, *tokens, *answers, *out;
    long max_docs; /* 0 = all */
} analyze_args;

typedef struct analyzer {
    dt_config cfg;
    dt_groups groups;
    dt_model model;
    dt_needles_answers ans;
    dt_shard shard;
    char ckpt_path[4300];
    long long step;
    long n_docs;
    size_t n_queries;
    int C, L, Hq, Hout, d;
    int diff, v2;     /* arch flags */
    int32_t *inputs;  /* (C) */
    double *sums;     /* (L, Hout, S_COUNT) */
    double **logits;  /* (L) each (n_docs * Hq * C (C + 1) / 2) scaled scores */
    double **hidden;  /* (L) each (n_docs * C * D) x_in entries */
    size_t n_logits, n_hidden; /* filled so far, per layer */
    double *p;        /* (Hq, C) probability rows at one query position */
    double *amap;     /* (C) effective map */
    double *scratch;  /* (C) */
    int *rel, *irr;   /* (C) position lists */
} analyzer;

static void usage(FILE *f) {
    fprintf(f,
            "usage: difftrain analyze CONFIG.yaml --checkpoint DIR --tokens SHARD --answers FILE.jsonl\n"
            "                         [--max-docs N] --out FILE.json [key.path=value ...]\n"
            "\n"
            "Attention statistics of a checkpoint (DIR: a step directory, or a checkpoint.dir with\n"
            "`latest`; loaded on one rank whatever parallel.* says) on the documents of `difftrain\n"
            "data needles` (SHARD = NAME_000000.bin, FILE = NAME_answers.jsonl), each one sequence\n"
            "of its C tokens (C <= model.max_seq_len). At each query position (the row predicting\n"
            "the first answer digit), per layer and head, averaged over queries: the effective map's\n"
            "mass on the needle's value span and on the rest (|A| and signed), its entropy, Gini\n"
            "sparsity and first-token (sink) mass; for diff and diff_v2 the cosine and KL(P1||P2)\n"
            "of the two branch maps on the span and on the other positions. Per layer: lambda, and\n"
            "the top-1, top-100 and median magnitude of the attention logits and hidden states.\n"
            "\n"
            "--max-docs N      analyse only the first N documents\n"
            "--out FILE.json   where the statistics go (required)\n");
}

static dt_status parse_args(int *argc, char **argv, analyze_args *a) {
    memset(a, 0, sizeof *a);
    for (int i = 2; i < *argc; i++) {
        const char *o = argv[i];
        const char **dst = strcmp(o, "--checkpoint") == 0 ? &a->checkpoint
                         : strcmp(o, "--tokens") == 0     ? &a->tokens
                         : strcmp(o, "--answers") == 0    ? &a->answers
                         : strcmp(o, "--out") == 0        ? &a->out
                                                          : NULL;
        int is_max = strcmp(o, "--max-docs") == 0;
        if (!dst && !is_max) {
            if (strncmp(o, "--", 2) == 0) {
                dt_error("analyze: unknown option '%s' (see difftrain analyze --help)", o);
                return DT_ERR_INPUT;
            }
            continue; /* an override */
        }
        if (i + 1 >= *argc || !argv[i + 1][0]) {
            dt_error("analyze: %s needs %s", o, is_max ? "a number of documents" : "a path");
            return DT_ERR_INPUT;
        }
        if (is_max) {
            char *end = NULL;
            long n = strtol(argv[i + 1], &end, 10);
            if (*end || n < 1 || n > 1000000000) {
                dt_error("analyze: --max-docs: expected a number >= 1, got '%s'", argv[i + 1]);
                return DT_ERR_INPUT;
            }
            a->max_docs = n;
        } else {
            *dst = argv[i + 1];
        }
        memmove(&argv[i], &argv[i + 2], (size_t)(*argc - i - 2) * sizeof *argv);
        *argc -= 2;
        i--;
    }
    const char *missing = !a->checkpoint ? "--checkpoint DIR"
                        : !a->tokens     ? "--tokens SHARD"
                        : !a->answers    ? "--answers FILE.jsonl"
                        : !a->out        ? "--out FILE.json"
                                         : NULL;
    if (missing) {
        dt_error("analyze: %s is required (see difftrain analyze --help)", missing);
        return DT_ERR_INPUT;
    }
    return DT_OK;
}

/* The kv head (index into k's heads) that q-head j reads: SPEC 2 (diff: DIFF head j/2 of kv
 * group g = (j/2) / n_rep, branch j%2 -> k-head 2g + j%2), SPEC 4 (diff_v2: j / (2H / H_kv)) and
 * SPEC 5 (transformer: j / (H / H_kv)). */
static int kv_head_of(const analyzer *z, int j) {
    const dt_model_config *c = &z->cfg.model;
    if (z->diff) return 2 * ((j / 2) / (c->n_heads / c->n_kv_heads)) + j % 2;
    if (z->v2) return j / (2 * c->n_heads / c->n_kv_heads);
    return j / (c->n_heads / c->n_kv_heads);
}

/* s * q[t, j] . k[u, kv_head_of(j)] in double; q and k are the CPU backend's operands (model/
 * backend.h), which are fp32 */
static double score(const analyzer *z, const dt_layer_acts *x, int j, int t, int u) {
    int d = z->d, kh = kv_head_of(z, j);
    const float *q = (const float *)x->q + (size_t)t * z->Hq * d + (size_t)j * d;
    int k_heads = z->diff ? 2 * z->cfg.model.n_kv_heads : z->cfg.model.n_kv_heads;
    const float *kr = (const float *)x->k + (size_t)u * k_heads * d + (size_t)kh * d;
    double s = 0;
    for (int i = 0; i < d; i++) s += (double)q[i] * (double)kr[i];
    return s / sqrt((double)d);
}

static dt_status grow_fail(const char *what, size_t n) {
    dt_error("analyze: out of memory for %zu %s values (use --max-docs to analyse fewer documents)",
             n, what);
    return DT_ERR_RUNTIME;
}

/* Loads the data, checks it, and the checkpoint into a single-rank model of B = 1, T = C. */
static dt_status analyze_setup(analyzer *z, const analyze_args *a, const dt_world *w) {
    dt_config *c = &z->cfg;
    DT_TRY(needles_answers_load(&z->ans, a->answers));
    DT_TRY(shard_open(&z->shard, a->tokens));
    for (size_t i = 0; i < z->shard.n_tokens; i++) {
        uint32_t t = shard_token(&z->shard, i);
        if (t >= (uint32_t)c->model.vocab_size) {
            dt_error("%s: token %zu is %u, outside the vocabulary (model.vocab_size %d)",
                     a->tokens, i, t, c->model.vocab_size);
            return DT_ERR_INPUT;
        }
    }
    DT_TRY(needles_answers_check_shard(&z->ans, a->answers, &z->shard));
    z->C = z->ans.context;
    if (z->C > c->model.max_seq_len) {
        dt_error("%s: documents of %d tokens, but model.max_seq_len is %d: analyze runs each "
                 "document as one sequence", a->answers, z->C, c->model.max_seq_len);
        return DT_ERR_INPUT;
    }
    z->n_docs = (long)z->ans.n_docs;
    if (a->max_docs > 0 && a->max_docs < z->n_docs) z->n_docs = a->max_docs;
    z->n_queries = z->ans.doc_first[z->n_docs];
    DT_TRY(ckpt_resolve_dir(a->checkpoint, z->ckpt_path, sizeof z->ckpt_path));
    /* checkpoints hold global tensors: any saved layout loads into the single-rank one, whose
     * activations hold every head */
    c->parallel.tp = 1;
    c->parallel.dp = 1;
    c->parallel.zero = 0;
    DT_TRY(groups_init(&z->groups, w, 1, 1));
    if (c->train.threads > 0) cpu_set_threads(c->train.threads);
    DT_TRY(model_init(&z->model, &c->model, dt_backend_cpu(), c->train.seed, 1, z->C));
    dt_ckpt_state s = {c, &z->model, NULL, NULL, &z->groups};
    dt_ckpt_meta meta;
    DT_TRY(ckpt_load(&s, z->ckpt_path, DT_CKPT_WEIGHTS, &meta, NULL));
    z->step = (long long)meta.step;

    const dt_model_config *mc = &c->model;
    z->diff = mc->arch == DT_ARCH_DIFF;
    z->v2 = mc->arch == DT_ARCH_DIFF_V2;
    z->L = mc->n_layers;
    z->Hout = mc->n_heads;
    z->Hq = z->diff || z->v2 ? 2 * mc->n_heads : mc->n_heads;
    z->d = config_head_dim(mc);
    size_t C = (size_t)z->C, docs = (size_t)z->n_docs;
    size_t nl = docs * (size_t)z->Hq * C * (C + 1) / 2, nh = docs * C * (size_t)mc->d_model;
    z->inputs = dt_malloc(C * sizeof *z->inputs);
    z->sums = dt_calloc((size_t)z->L * z->Hout * S_COUNT, sizeof *z->sums);
    z->logits = dt_calloc((size_t)z->L, sizeof *z->logits);
    z->hidden = dt_calloc((size_t)z->L, sizeof *z->hidden);
    z->p = dt_malloc((size_t)z->Hq * C * sizeof *z->p);
    z->amap = dt_malloc(C * sizeof *z->amap);
    z->scratch = dt_malloc(C * sizeof *z->scratch);
    z->rel = dt_malloc(C * sizeof *z->rel);
    z->irr = dt_malloc(C * sizeof *z->irr);
    if (!z->inputs || !z->sums || !z->logits || !z->hidden || !z->p || !z->amap || !z->scratch ||
        !z->rel || !z->irr)
        return grow_fail("scratch", C);
    for (int l = 0; l < z->L; l++) {
        if (!(z->logits[l] = dt_malloc(nl * sizeof(double)))) return grow_fail("logit", nl);
        if (!(z->hidden[l] = dt_malloc(nh * sizeof(double)))) return grow_fail("hidden", nh);
    }
    return DT_OK;
}

/* One query of one layer: the probability rows of every q-head at position qp, then per output
 * head the effective map and its statistics added into the sums. */
static void analyze_query(analyzer *z, int l, const dt_needles_query *nq) {
    const dt_layer_acts *x = &z->model.acts[l];
    int qp = nq->pos - 1, n = qp + 1, lo = nq->value_pos, hi = nq->value_pos + DT_ANSWER_DIGITS;
    for (int j = 0; j < z->Hq; j++) {
        double *p = z->p + (size_t)j * z->C;
        for (int u = 0; u < n; u++) z->scratch[u] = score(z, x, j, qp, u);
        attn_softmax(p, z->scratch, n);
    }
    /* relevant: the needle's value span; irrelevant: every other causal position */
    int n_rel = 0, n_irr = 0;
    for (int u = 0; u < n; u++) {
        if (u >= lo && u < hi) z->rel[n_rel++] = u;
        else z->irr[n_irr++] = u;
    }
    for (int h = 0; h < z->Hout; h++) {
        double *s = z->sums + ((size_t)l * z->Hout + h) * S_COUNT, *A = z->amap, m[3];
        const double *p1 = z->p + (size_t)(z->diff || z->v2 ? 2 * h : h) * z->C;
        const double *p2 = p1 + z->C;
        double lam = 0;
        if (z->diff) lam = x->lambda[0];
        else if (z->v2) lam = 1 / (1 + exp(-(double)x->lam_logit[(size_t)qp * z->Hout + h]));
        for (int u = 0; u < n; u++) A[u] = z->diff || z->v2 ? p1[u] - lam * p2[u] : p1[u];
        attn_span_mass(m, A, n, lo, hi);
        s[S_SPAN] += m[0];
        s[S_REST_ABS] += m[1];
        s[S_REST_SIGNED] += m[2];
        s[S_ENTROPY] += attn_entropy(A, n);
        s[S_GINI] += attn_gini(A, n, z->scratch);
        s[S_SINK] += attn_sink_mass(A, n);
        s[S_LAMBDA] += lam;
        if (z->diff || z->v2) {
            s[S_COS_REL] += attn_cosine_subset(p1, p2, z->rel, n_rel);
            s[S_COS_IRR] += attn_cosine_subset(p1, p2, z->irr, n_irr);
            s[S_KL_REL] += attn_kl_subset(p1, p2, z->rel, n_rel);
            s[S_KL_IRR] += attn_kl_subset(p1, p2, z->irr, n_irr);
        }
    }
}

/* Document k: one forward, then per layer its logits and hidden states kept for the magnitude
 * statistics and its queries analysed. */
static void analyze_doc(analyzer *z, long k) {
    int C = z->C, D = z->cfg.model.d_model;
    for (int t = 0; t < C; t++)
        z->inputs[t] = (int32_t)shard_token(&z->shard, (size_t)k * C + (size_t)t);
    model_forward(&z->model, z->inputs, NULL);
    size_t nl = 0, nh = 0; /* this document's values, the same count in every layer */
    for (int l = 0; l < z->L; l++) {
        const dt_layer_acts *x = &z->model.acts[l];
        double *lg = z->logits[l] + z->n_logits, *hd = z->hidden[l] + z->n_hidden;
        nl = nh = 0;
        for (int j = 0; j < z->Hq; j++)
            for (int t = 0; t < C; t++)
                for (int u = 0; u <= t; u++) lg[nl++] = score(z, x, j, t, u);
        for (size_t i = 0; i < (size_t)C * D; i++) hd[nh++] = x->x_in[i];
        for (size_t q = z->ans.doc_first[k]; q < z->ans.doc_first[k + 1]; q++)
            analyze_query(z, l, &z->ans.queries[q]);
    }
    z->n_logits += nl;
    z->n_hidden += nh;
}

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

/* a number, or null when it is not finite (a KL with disjoint support) */
static void json_num(FILE *f, double v) {
    if (isfinite(v)) fprintf(f, "%.17g", v);
    else fprintf(f, "null");
}

static void json_mags(FILE *f, const char *name, double *x, size_t n) {
    double m[3];
    attn_magnitudes(m, x, n, ANALYZE_TOPK);
    fprintf(f, "\"%s\": {\"top1\": %.17g, \"top%d\": %.17g, \"median\": %.17g, \"count\": %zu}",
            name, m[0], ANALYZE_TOPK, m[1], m[2], n);
}

/* Writes --out through a .tmp and a rename; prints one line per layer. */
static dt_status analyze_write(analyzer *z, const analyze_args *a) {
    char tmp[DT_PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", a->out);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        dt_error("--out %s: cannot create %s", a->out, tmp);
        return DT_ERR_INPUT;
    }
    double nq = (double)z->n_queries;
    fprintf(f, "{\"arch\": \"%s\", \"checkpoint\": ", config_arch_name(z->cfg.model.arch));
    json_string(f, z->ckpt_path);
    fprintf(f, ", \"step\": %lld, \"tokens\": ", z->step);
    json_string(f, a->tokens);
    fprintf(f, ", \"answers\": ");
    json_string(f, a->answers);
    fprintf(f, ", \"docs\": %ld, \"queries\": %zu, \"context\": %d, \"n_heads\": %d, \"layers\": [",
            z->n_docs, z->n_queries, z->C, z->Hout);
    for (int l = 0; l < z->L; l++) {
        double lam_layer = 0;
        fprintf(f, "%s\n {\"layer\": %d, \"lambda\": ", l ? "," : "", l);
        if (z->diff) fprintf(f, "%.17g", (double)z->model.acts[l].lambda[0]);
        else if (!z->v2) fprintf(f, "null");
        else {
            fprintf(f, "[");
            for (int h = 0; h < z->Hout; h++) {
                double v = z->sums[((size_t)l * z->Hout + h) * S_COUNT + S_LAMBDA] / nq;
                fprintf(f, "%s%.17g", h ? ", " : "", v);
            }
            fprintf(f, "]");
        }
        fprintf(f, ", ");
        json_mags(f, "logits", z->logits[l], z->n_logits);
        fprintf(f, ", ");
        json_mags(f, "hidden", z->hidden[l], z->n_hidden);
        fprintf(f, ", \"heads\": [");
        double span = 0, rest = 0;
        for (int h = 0; h < z->Hout; h++) {
            const double *s = z->sums + ((size_t)l * z->Hout + h) * S_COUNT;
            int ns = z->diff || z->v2 ? S_COUNT : S_COS_REL;
            fprintf(f, "%s\n  {\"head\": %d", h ? "," : "", h);
            for (int i = 0; i < ns; i++) {
                if (i == S_LAMBDA && !(z->diff || z->v2)) continue;
                fprintf(f, ", \"%s\": ", stat_names[i]);
                json_num(f, s[i] / nq);
            }
            fprintf(f, "}");
            span += s[S_SPAN] / nq / z->Hout;
            rest += s[S_REST_ABS] / nq / z->Hout;
            lam_layer += s[S_LAMBDA] / nq / z->Hout;
        }
        fprintf(f, "]}");
        char lam_s[32] = "-";
        if (z->diff || z->v2) snprintf(lam_s, sizeof lam_s, "%.4f", lam_layer);
        printf("analyze: layer %d | lambda %s | span mass %.4f | rest |A| mass %.4f (mean over "
               "heads and %zu queries)\n", l, lam_s, span, rest, z->n_queries);
    }
    fprintf(f, "\n]}\n");
    int bad = ferror(f);
    if (fclose(f) != 0 || bad || rename(tmp, a->out) != 0) {
        dt_error("--out %s: write failed", a->out);
        remove(tmp);
        return DT_ERR_RUNTIME;
    }
    printf("analyze: %ld documents, %zu queries | checkpoint %s (step %lld) | wrote %s\n",
           z->n_docs, z->n_queries, z->ckpt_path, z->step, a->out);
    fflush(stdout);
    return DT_OK;
}

static void analyze_free(analyzer *z) {
    for (int l = 0; z->logits && l < z->L; l++) dt_free(z->logits[l]);
    for (int l = 0; z->hidden && l < z->L; l++) dt_free(z->hidden[l]);
    dt_free(z->logits);
    dt_free(z->hidden);
    dt_free(z->inputs);
    dt_free(z->sums);
    dt_free(z->p);
    dt_free(z->amap);
    dt_free(z->scratch);
    dt_free(z->rel);
    dt_free(z->irr);
    model_free(&z->model);
    needles_answers_free(&z->ans);
    shard_close(&z->shard);
    groups_free(&z->groups);
}

int cmd_analyze(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? DT_ERR_INPUT : DT_OK;
    }
    analyze_args a;
    dt_status st = parse_args(&argc, argv, &a);
    if (st != DT_OK) return st;
    dt_world w;
    st = world_init(&w, &argc, &argv);
    if (st != DT_OK) return st;
    analyzer *z = dt_calloc(1, sizeof *z);
    if (!z) {
        st = DT_ERR_RUNTIME;
    } else if (w.size > 1) {
        dt_error("analyze runs on one rank (started on %d): run it without mpirun/srun", w.size);
        st = DT_ERR_INPUT;
    } else {
        st = config_load(&z->cfg, argv[1], argc - 2, argv + 2);
        if (st == DT_OK) st = analyze_setup(z, &a, &w);
        for (long k = 0; st == DT_OK && k < z->n_docs; k++) analyze_doc(z, k);
        if (st == DT_OK) st = analyze_write(z, &a);
    }
    if (z) analyze_free(z);
    dt_free(z);
    world_finalize();
    return st;
}
