/* `difftrain plan CONFIG.yaml [key.path=value ...] [--device-mem SIZE] [--world N] [--json]`:
 * the command-line face of model/plan.h. Prints the plan (a table, or one JSON object) and
 * exits 2 when the run does not fit the device or its sizes do not divide. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launch/commands.h"
#include "launch/config.h"
#include "model/plan.h"
#include "util/alloc.h"
#include "util/status.h"

static void plan_usage(FILE *f) {
    fprintf(
        f,
        "usage: difftrain plan CONFIG.yaml [key.path=value ...] [--device-mem SIZE] [--world N]\n"
        "                      [--json]\n"
        "\n"
        "Prints what a run of the config needs, without running it: exact parameter counts\n"
        "(from the same layout code that allocates), memory per rank for weights, gradients,\n"
        "optimizer state and activations under the config's parallel.tp, parallel.dp,\n"
        "parallel.zero, train.precision, train.micro_batch and train.seq_len, and FLOPs per token\n"
        "and per step. Overrides use the config's key paths (parallel.tp=4 train.micro_batch=1,\n"
        "train.recompute=true).\n"
        "\n"
        "options:\n"
        "  --device-mem SIZE  memory of one device: 80GiB, 80GB, 141GiB, 24G, 1.5TiB or bytes\n"
        "                     (K, M, G, T and KiB.. are powers of 1024, KB, MB.. of 1000);\n"
        "                     reports whether the plan fits and fails when it does not\n"
        "  --world N          the number of ranks the job will run on: resolves parallel.dp =\n"
        "                     auto to N / tp (without it, auto means dp = 1)\n"
        "  --json             print one JSON object instead of the table\n"
        "  --help             this text\n"
        "\n"
        "Memory per rank, with P the largest tensor-parallel rank's parameters and\n"
        "S = ceil(P/dp) its largest ZeRO shard:\n"
        "  weights      fp32 4P; bf16 adds the products' bf16 copies of the weight matrices\n"
        "               (about 2P)\n"
        "  gradients    fp32 4P; zero 2 adds the fp32 shard accumulator 4S\n"
        "  optimizer    AdamW m and v in fp32: 8P (8S when zero >= 1)\n"
        "  activations  the model's activation allocation at micro_batch x seq_len, 4 bytes per\n"
        "               element; with train.recompute, each layer's input plus one layer's worth\n"
        "               of the other activations\n"
        "train.precision bf16 computes the matrix products on bf16 tensor cores; besides the\n"
        "weight copies it stores the products' input activations and the output gradients only\n"
        "products read in bf16 (2 bytes an element); the rest stays fp32.\n"
        "Not counted: backend workspaces (cuBLAS, NCCL; on GPUs the fused attention's stored\n"
        "dS tiles, up to 2 GiB), data loader and checkpoint buffers, fragmentation: leave a\n"
        "margin.\n"
        "\n"
        "Exit status: 0 the plan holds (and fits, given --device-mem), 2 it does not fit, the\n"
        "sizes do not divide (tp over heads, kv heads, ffn_dim; global_batch over micro_batch x\n"
        "dp; the world over tp), or bad usage or config.\n");
}

static const double GIB = 1073741824.0;

/* 1234567 -> "1,234,567" */
static const char *with_commas(char *buf, size_t n, uint64_t v) {
    char digits[32];
    int len = snprintf(digits, sizeof digits, "%llu", (unsigned long long)v);
    size_t o = 0;
    for (int i = 0; i < len && o + 2 < n; i++) {
        if (i > 0 && (len - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = digits[i];
    }
    buf[o] = '\0';
    return buf;
}

/* 833529856 -> "833.5M"; 3.2e9 -> "3.20B" */
static const char *short_count(char *buf, size_t n, double v) {
    static const char suffix[] = {'\0', 'K', 'M', 'B', 'T'};
    int s = 0;
    while (v >= 1000.0 && s < 4) v /= 1000.0, s++;
    if (s == 0) snprintf(buf, n, "%.0f", v);
    else snprintf(buf, n, v < 10 ? "%.2f%c" : v < 100 ? "%.1f%c" : "%.0f%c", v, suffix[s]);
    return buf;
}

/* bytes in the largest binary unit that keeps the number >= 1: "8.56 GiB", "5.55 MiB" */
static const char *human_bytes(char *buf, size_t n, uint64_t v) {
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double x = (double)v;
    int u = 0;
    while (x >= 1024.0 && u < 4) x /= 1024.0, u++;
    snprintf(buf, n, u == 0 ? "%.0f %s" : "%.2f %s", x, units[u]);
    return buf;
}

static const char *precision_name(dt_precision p) {
    return p == DT_PRECISION_BF16 ? "bf16" : "fp32";
}

/* What each category counts, in words (the table's last column and the JSON's
 * memory_counted). */
typedef struct notes {
    char weights[160], gradients[160], optimizer[160], activations[160];
} notes;

static void describe(notes *n, const dt_plan *p) {
    int sharded = p->zero >= 1;
    snprintf(n->weights, sizeof n->weights, "%s",
             p->precision == DT_PRECISION_BF16
                 ? "4 B x P fp32 + 2 B x matrices bf16 (the products' copies)"
                 : "4 B x P fp32");
    snprintf(n->gradients, sizeof n->gradients, "%s%s", "4 B x P fp32",
             p->zero == 2 ? " (one micro-batch) + 4 B x P/dp fp32 shard accumulator" : "");
    snprintf(n->optimizer, sizeof n->optimizer, "AdamW m, v: 8 B x %s",
             sharded ? "P/dp (ZeRO shard)" : "P");
    snprintf(n->activations, sizeof n->activations, "%s%s",
             p->precision == DT_PRECISION_BF16 ? "operands bf16, the rest fp32" : "fp32",
             p->recompute ? "; recompute: layer inputs + one layer" : "");
}

static void print_table(const dt_config *c, const dt_plan *p, int world, int have_dev,
                        uint64_t dev, int fits) {
    char a[64], b[64];
    const dt_model_config *m = &c->model;
    notes n;
    describe(&n, p);
    printf("plan for %s\n\n", c->source);
    printf("model      %s: %d layers, d_model %d, %d heads of dim %d (%d kv), ffn %d, vocab %d, "
           "%s embeddings\n", config_arch_name(m->arch), m->n_layers, m->d_model, m->n_heads,
           config_head_dim(m), m->n_kv_heads, m->ffn_dim, m->vocab_size,
           m->tie_embeddings ? "tied" : "untied");
    printf("layout     tp %d x dp %d = %d ranks, zero %d, precision %s, recompute %s%s\n", p->tp,
           p->dp, p->tp * p->dp, p->zero, precision_name(p->precision),
           p->recompute ? "on" : "off",
           c->parallel.dp == 0 && !world ? " (parallel.dp auto: taken as 1; --world N sets it)"
                                         : "");
    printf("batch      micro_batch %d x seq_len %d, global_batch %d (%d micro-batches per step "
           "per rank), %.0f tokens per step\n\n", p->micro_batch, p->seq_len, p->global_batch,
           p->grad_accum, p->tokens_per_step);

    printf("parameters\n");
    printf("  %-22s %18s  %8s\n", "total", with_commas(a, sizeof a, p->params_total),
           short_count(b, sizeof b, (double)p->params_total));
    printf("  %-22s %18s  %8s\n", "embedding", with_commas(a, sizeof a, p->params_embedding),
           short_count(b, sizeof b, (double)p->params_embedding));
    printf("  %-22s %18s  %8s\n", "non-embedding",
           with_commas(a, sizeof a, p->params_non_embedding),
           short_count(b, sizeof b, (double)p->params_non_embedding));
    printf("  %-22s %18s  %8s\n", "per rank (P, largest)",
           with_commas(a, sizeof a, p->params_per_rank),
           short_count(b, sizeof b, (double)p->params_per_rank));
    if (p->zero >= 1)
        printf("  %-22s %18s  %8s\n", "ZeRO shard (P/dp)",
               with_commas(a, sizeof a, p->shard_per_rank),
               short_count(b, sizeof b, (double)p->shard_per_rank));

    printf("\nmemory per rank          GiB              bytes  counted\n");
    const struct {
        const char *name;
        uint64_t bytes;
        const char *note;
    } rows[] = {
        {"weights", p->mem.weights, n.weights},
        {"gradients", p->mem.gradients, n.gradients},
        {"optimizer", p->mem.optimizer, n.optimizer},
        {"activations", p->mem.activations, n.activations},
        {"total", p->mem.total, ""},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        printf("  %-14s %12.3f %18s%s%s\n", rows[i].name, rows[i].bytes / GIB,
               with_commas(a, sizeof a, rows[i].bytes), rows[i].note[0] ? "  " : "",
               rows[i].note);

    printf("\ncompute\n");
    printf("  %-24s %.4g (forward + backward)\n", "FLOPs per token", p->flops_per_token);
    printf("  %-24s %.4g (all ranks)\n", "FLOPs per step", p->flops_per_step);
    printf("  %-24s %.4g\n", "FLOPs per step per rank", p->flops_per_step / (p->tp * p->dp));

    if (have_dev)
        printf("\ndevice     %s per rank: %s (%.1f%% used)\n", human_bytes(a, sizeof a, dev),
               fits ? "fits" : "does NOT fit", 100.0 * (double)p->mem.total / (double)dev);
    else
        printf("\ndevice     not given (--device-mem SIZE to check the fit)\n");
}

/* JSON string body: our notes and paths hold no control characters, but paths may hold
 * quotes or backslashes. */
static void json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') printf("\\%c", ch);
        else if (ch < 0x20) printf("\\u%04x", ch);
        else putchar(ch);
    }
    putchar('"');
}

static void print_json(const dt_config *c, const dt_plan *p, int have_dev, uint64_t dev,
                       int fits) {
    notes n;
    describe(&n, p);
    printf("{\"config\": ");
    json_string(c->source);
    printf(", \"arch\": \"%s\"", config_arch_name(c->model.arch));
    printf(", \"params_total\": %llu, \"params_embedding\": %llu, \"params_non_embedding\": %llu"
           ", \"params_per_rank\": %llu, \"shard_per_rank\": %llu",
           (unsigned long long)p->params_total, (unsigned long long)p->params_embedding,
           (unsigned long long)p->params_non_embedding, (unsigned long long)p->params_per_rank,
           (unsigned long long)p->shard_per_rank);
    printf(", \"flops_per_token\": %.17g, \"flops_per_step\": %.17g, \"tokens_per_step\": %.17g",
           p->flops_per_token, p->flops_per_step, p->tokens_per_step);
    printf(", \"memory_per_rank_bytes\": {\"weights\": %llu, \"gradients\": %llu, \"optimizer\": "
           "%llu, \"activations\": %llu, \"total\": %llu}",
           (unsigned long long)p->mem.weights, (unsigned long long)p->mem.gradients,
           (unsigned long long)p->mem.optimizer, (unsigned long long)p->mem.activations,
           (unsigned long long)p->mem.total);
    printf(", \"memory_counted\": {\"weights\": ");
    json_string(n.weights);
    printf(", \"gradients\": ");
    json_string(n.gradients);
    printf(", \"optimizer\": ");
    json_string(n.optimizer);
    printf(", \"activations\": ");
    json_string(n.activations);
    printf("}");
    printf(", \"layout\": {\"tp\": %d, \"dp\": %d, \"dp_auto\": %s, \"zero\": %d, "
           "\"precision\": \"%s\", \"micro_batch\": %d, \"seq_len\": %d, \"global_batch\": %d, "
           "\"grad_accum\": %d, \"recompute\": %s}",
           p->tp, p->dp, c->parallel.dp == 0 ? "true" : "false", p->zero,
           precision_name(p->precision), p->micro_batch, p->seq_len,
           p->global_batch, p->grad_accum, p->recompute ? "true" : "false");
    if (have_dev)
        printf(", \"device_mem_bytes\": %llu, \"fits\": %s}\n", (unsigned long long)dev,
               fits ? "true" : "false");
    else
        printf(", \"device_mem_bytes\": null, \"fits\": null}\n");
}

/* "--name VALUE" or "--name=VALUE" at argv[*i]: the value, advancing *i; NULL when argv[*i]
 * is not this option. *missing is set when the value is absent. */
static const char *option_value(int argc, char **argv, int *i, const char *name, int *missing) {
    size_t len = strlen(name);
    if (strncmp(argv[*i], name, len) != 0) return NULL;
    if (argv[*i][len] == '=') return argv[*i] + len + 1;
    if (argv[*i][len] != '\0') return NULL;
    if (*i + 1 >= argc) {
        *missing = 1;
        return NULL;
    }
    return argv[++*i];
}

int cmd_plan(int argc, char **argv) {
    const char *path = NULL, *dev_text = NULL;
    int json = 0, world = 0, n_over = 0;
    char **over = dt_calloc((size_t)argc + 1, sizeof *over);
    if (!over) {
        dt_error("out of memory");
        return DT_ERR_RUNTIME;
    }
    int rc = DT_ERR_INPUT;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        int missing = 0;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            plan_usage(stdout);
            rc = DT_OK;
            goto done;
        } else if (strcmp(a, "--json") == 0) {
            json = 1;
        } else if ((v = option_value(argc, argv, &i, "--device-mem", &missing)) || missing) {
            if (missing) {
                dt_error("plan: --device-mem needs a size (80GiB, 80GB, 24G, bytes)");
                goto done;
            }
            dev_text = v;
        } else if ((v = option_value(argc, argv, &i, "--world", &missing)) || missing) {
            char *end;
            long w = missing ? 0 : strtol(v, &end, 10);
            if (missing || *v == '\0' || *end != '\0' || w < 1 || w > 1 << 24) {
                dt_error("plan: --world needs a number of ranks >= 1, got '%s'",
                         missing ? "" : v);
                goto done;
            }
            world = (int)w;
        } else if (a[0] == '-') {
            dt_error("plan: unknown option '%s' (see difftrain plan --help)", a);
            goto done;
        } else if (!path) {
            path = a;
        } else if (strchr(a, '=')) {
            over[n_over++] = argv[i];
        } else {
            dt_error("plan: '%s' is neither an option nor a key.path=value override", a);
            goto done;
        }
    }
    if (!path) {
        plan_usage(stderr);
        goto done;
    }
    uint64_t dev = 0;
    if (dev_text && plan_parse_bytes(&dev, dev_text) != DT_OK) {
        dt_error("plan: --device-mem: expected a size such as 80GiB, 80GB, 141GiB, 24G, 1.5TiB "
                 "or a number of bytes, got '%s'", dev_text);
        goto done;
    }

    dt_config *cfg = dt_malloc(sizeof *cfg); /* large (data paths): not on the stack */
    if (!cfg) {
        dt_error("out of memory for the config");
        rc = DT_ERR_RUNTIME;
        goto done;
    }
    dt_plan p;
    dt_status st = config_load(cfg, path, n_over, over);
    if (st == DT_OK) st = plan_compute(&p, cfg, world);
    if (st != DT_OK) {
        dt_free(cfg);
        rc = st;
        goto done;
    }
    int have_dev = dev_text != NULL, fits = have_dev && p.mem.total <= dev;
    if (json) print_json(cfg, &p, have_dev, dev, fits);
    else print_table(cfg, &p, world, have_dev, dev, fits);
    fflush(stdout);
    rc = DT_OK;
    if (have_dev && !fits) {
        char need[32], have[32];
        dt_error("%s: needs %s per rank, the device has %s: raise parallel.tp/dp or "
                 "parallel.zero, or lower train.micro_batch%s", cfg->source,
                 human_bytes(need, sizeof need, p.mem.total), human_bytes(have, sizeof have, dev),
                 cfg->train.recompute ? "" : ", or set train.recompute: true");
        rc = DT_ERR_INPUT;
    }
    dt_free(cfg);
done:
    dt_free(over);
    return rc;
}
