/* `difftrain generate CONFIG.yaml --checkpoint DIR (--prompt TEXT | --prompt-ids 1,2,3)
 * [--max-new-tokens N] [--temperature T] [--top-k K] [--seed S] [--no-cache] [--ids]
 * [key.path=value ...]`: samples a continuation from a checkpoint's weights on one rank. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ckpt/ckpt.h"
#include "data/tokenizer.h"
#include "dist/groups.h"
#include "dist/world.h"
#include "launch/commands.h"
#include "launch/config.h"
#include "model/cpu/cpu_ops.h"
#include "model/infer.h"
#include "model/model.h"
#include "util/alloc.h"

typedef struct gen_args {
    const char *checkpoint; /* --checkpoint DIR (required) */
    const char *prompt;     /* --prompt TEXT */
    const char *prompt_ids; /* --prompt-ids 1,2,3 */
    long max_new;           /* --max-new-tokens N */
    double temperature;     /* --temperature T; 0 = greedy */
    long top_k;             /* --top-k K; 0 = all */
    unsigned long long seed;
    int no_cache, ids;
} gen_args;

static void usage(FILE *f) {
    fprintf(f,
            "usage: difftrain generate CONFIG.yaml --checkpoint DIR (--prompt TEXT | --prompt-ids 1,2,3)\n"
            "                          [--max-new-tokens N] [--temperature T] [--top-k K] [--seed S]\n"
            "                          [--no-cache] [--ids] [key.path=value ...]\n"
            "\n"
            "Loads a checkpoint's weights (DIR: a step directory, or a checkpoint.dir with `latest`)\n"
            "into the model CONFIG.yaml describes, on one rank whatever parallel.* says, and prints\n"
            "the prompt and its continuation (bytes; the end-of-text token ends it unprinted).\n"
            "\n"
            "--prompt TEXT        the prompt as bytes (the byte tokenizer)\n"
            "--prompt-ids LIST    the prompt as comma-separated token ids\n"
            "--max-new-tokens N   new tokens at most (default 128); also stops at model.max_seq_len\n"
            "--temperature T      0 = greedy (default); else sample softmax(logits / T)\n"
            "--top-k K            sample among the K largest logits only (default 0: all)\n"
            "--seed S             seed of the sampling stream (default 0): a seed reproduces a run\n"
            "--no-cache           recompute the whole sequence for each token (the reference path)\n"
            "--ids                print the token ids instead of the text\n"
            "A last line on stderr gives the new tokens and tokens/s.\n");
}

/* Parses a whole decimal number in [lo, hi]. */
static dt_status parse_long(const char *opt, const char *s, long lo, long hi, long *out) {
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) {
        dt_error("generate: %s: expected a whole number in [%ld, %ld], got '%s'", opt, lo, hi, s);
        return DT_ERR_INPUT;
    }
    *out = v;
    return DT_OK;
}

/* Removes the options from argv, leaving the config and the overrides. */
static dt_status parse_args(int *argc, char **argv, gen_args *a) {
    memset(a, 0, sizeof *a);
    a->max_new = 128;
    static const char *with_value[] = {"--checkpoint", "--prompt", "--prompt-ids",
                                       "--max-new-tokens", "--temperature", "--top-k", "--seed"};
    for (int i = 2; i < *argc; i++) {
        const char *o = argv[i];
        int flag = strcmp(o, "--no-cache") == 0 || strcmp(o, "--ids") == 0;
        int valued = 0;
        for (size_t j = 0; j < sizeof with_value / sizeof *with_value; j++)
            valued |= strcmp(o, with_value[j]) == 0;
        if (!flag && !valued) {
            if (strncmp(o, "--", 2) == 0) {
                dt_error("generate: unknown option '%s' (see difftrain generate --help)", o);
                return DT_ERR_INPUT;
            }
            continue; /* an override */
        }
        int used = 1;
        if (flag) {
            if (strcmp(o, "--no-cache") == 0) a->no_cache = 1;
            else a->ids = 1;
        } else {
            if (i + 1 >= *argc) {
                dt_error("generate: %s needs a value", o);
                return DT_ERR_INPUT;
            }
            const char *v = argv[i + 1];
            used = 2;
            long n;
            if (strcmp(o, "--checkpoint") == 0) a->checkpoint = v;
            else if (strcmp(o, "--prompt") == 0) a->prompt = v;
            else if (strcmp(o, "--prompt-ids") == 0) a->prompt_ids = v;
            else if (strcmp(o, "--max-new-tokens") == 0)
                DT_TRY(parse_long(o, v, 0, 100000000, &a->max_new));
            else if (strcmp(o, "--top-k") == 0) DT_TRY(parse_long(o, v, 0, 2000000000, &a->top_k));
            else if (strcmp(o, "--seed") == 0) {
                DT_TRY(parse_long(o, v, 0, 2147483647, &n));
                a->seed = (unsigned long long)n;
            } else {
                char *end = NULL;
                a->temperature = strtod(v, &end);
                if (!*v || *end || !(a->temperature >= 0 && a->temperature <= 1e6)) {
                    dt_error("generate: --temperature: expected a number >= 0, got '%s'", v);
                    return DT_ERR_INPUT;
                }
            }
        }
        memmove(&argv[i], &argv[i + used], (size_t)(*argc - i - used) * sizeof *argv);
        *argc -= used;
        i--;
    }
    if (!a->checkpoint) {
        dt_error("generate: --checkpoint DIR is required (a step directory or a checkpoint.dir)");
        return DT_ERR_INPUT;
    }
    if (!a->prompt == !a->prompt_ids) {
        dt_error("generate: give exactly one of --prompt TEXT and --prompt-ids LIST");
        return DT_ERR_INPUT;
    }
    return DT_OK;
}

/* The prompt's token ids (host, dt_malloc'd), each checked against the vocabulary and the
 * whole against the context. */
static dt_status prompt_tokens(const gen_args *a, const dt_model_config *mc, int32_t **out,
                               int *n_out) {
    size_t cap = a->prompt ? strlen(a->prompt) : strlen(a->prompt_ids) / 2 + 1;
    int32_t *t = dt_malloc((cap + 1) * sizeof(int32_t));
    if (!t) return DT_ERR_RUNTIME;
    size_t n = 0;
    if (a->prompt) {
        for (const unsigned char *p = (const unsigned char *)a->prompt; *p; p++) t[n++] = *p;
    } else {
        const char *p = a->prompt_ids;
        while (*p) {
            char *end = NULL;
            long v = strtol(p, &end, 10);
            if (end == p || (*end && *end != ',') || v < 0 || v > 2147483647L) {
                dt_error("generate: --prompt-ids: expected comma-separated token ids, got '%s'",
                         a->prompt_ids);
                dt_free(t);
                return DT_ERR_INPUT;
            }
            t[n++] = (int32_t)v;
            p = *end ? end + 1 : end;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (t[i] >= mc->vocab_size) {
            dt_error("generate: prompt token %zu is %d, outside the vocabulary (model.vocab_size "
                     "%d)", i, (int)t[i], mc->vocab_size);
            dt_free(t);
            return DT_ERR_INPUT;
        }
    }
    if (n < 1 || n > (size_t)mc->max_seq_len) {
        dt_error("generate: the prompt has %zu tokens: expected 1 to model.max_seq_len %d", n,
                 mc->max_seq_len);
        dt_free(t);
        return DT_ERR_INPUT;
    }
    *out = t;
    *n_out = (int)n;
    return DT_OK;
}

/* Prints the tokens as ids (comma-separated) or as text (bytes; EOT and ids above it print
 * nothing: they carry no text). */
static void print_tokens(const int32_t *t, int n, int ids) {
    for (int i = 0; i < n; i++) {
        if (ids) printf("%s%d", i ? "," : "", (int)t[i]);
        else if (t[i] < DT_TOKEN_EOT) putchar(t[i]);
    }
    putchar('\n');
    fflush(stdout);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static dt_status generate_run(const gen_args *a, dt_config *c, const dt_world *w) {
    dt_status st;
    dt_groups g;
    dt_model m;
    memset(&g, 0, sizeof g);
    memset(&m, 0, sizeof m);
    int32_t *seq = NULL;
    int n_prompt = 0, n_new = 0;
    char path[4300];
    DT_TRY_GOTO(st, prompt_tokens(a, &c->model, &seq, &n_prompt), done);
    DT_TRY_GOTO(st, ckpt_resolve_dir(a->checkpoint, path, sizeof path), done);
    /* checkpoints hold global tensors: any saved layout loads into the single-rank one */
    c->parallel.tp = 1;
    c->parallel.dp = 1;
    c->parallel.zero = 0;
    DT_TRY_GOTO(st, groups_init(&g, w, 1, 1), done);
    if (c->train.threads > 0) cpu_set_threads(c->train.threads);
    long ctx = n_prompt + a->max_new;
    if (ctx > c->model.max_seq_len) ctx = c->model.max_seq_len;
    DT_TRY_GOTO(st, model_init(&m, &c->model, dt_backend_cpu(), c->train.seed, 1, (int)ctx),
                done);
    dt_ckpt_state s = {c, &m, NULL, NULL, &g};
    dt_ckpt_meta meta;
    DT_TRY_GOTO(st, ckpt_load(&s, path, DT_CKPT_WEIGHTS, &meta, NULL), done);
    int32_t *grown = dt_realloc(seq, (size_t)(n_prompt + a->max_new + 1) * sizeof(int32_t));
    if (!grown) {
        dt_error("out of memory for %ld tokens", a->max_new);
        st = DT_ERR_RUNTIME;
        goto done;
    }
    seq = grown;
    dt_gen_opts o = {(int)a->max_new, a->temperature, (int)a->top_k, (uint64_t)a->seed,
                     !a->no_cache, DT_TOKEN_EOT < c->model.vocab_size ? DT_TOKEN_EOT : -1};
    double t0 = now_s();
    DT_TRY_GOTO(st, infer_generate(seq + n_prompt, &n_new, &m, seq, n_prompt, &o), done);
    double dt = now_s() - t0;
    print_tokens(seq, n_prompt + n_new, a->ids);
    fprintf(stderr, "generate: %d new tokens after %d prompt tokens in %.3f s (%.1f tokens/s, %s)\n",
            n_new, n_prompt, dt, dt > 0 ? n_new / dt : 0.0,
            a->no_cache ? "no cache" : "KV cache");
done:
    model_free(&m);
    groups_free(&g);
    dt_free(seq);
    return st;
}

int cmd_generate(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? DT_ERR_INPUT : DT_OK;
    }
    gen_args a;
    dt_status st = parse_args(&argc, argv, &a);
    if (st != DT_OK) return st;
    dt_world w;
    st = world_init(&w, &argc, &argv);
    if (st != DT_OK) return st;
    dt_config cfg;
    if (w.size > 1) {
        dt_error("generate runs on one rank (started on %d): run it without mpirun/srun", w.size);
        st = DT_ERR_INPUT;
    } else {
        st = config_load(&cfg, argv[1], argc - 2, argv + 2);
        if (st == DT_OK) st = generate_run(&a, &cfg, &w);
    }
    world_finalize();
    return st;
}
