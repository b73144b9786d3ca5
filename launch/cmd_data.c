/* `difftrain data prepare ...` and `difftrain data info FILE...`: the command-line face of data/.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/needles.h"
#include "data/prepare.h"
#include "data/shard.h"
#include "data/shard_stats.h"
#include "data/tokenizer.h"
#include "launch/commands.h"
#include "util/alloc.h"
#include "util/status.h"

static void data_usage(FILE *f) {
    fprintf(f, "usage: difftrain data prepare --out DIR [options] FILE...\n"
               "       difftrain data info SHARD...\n"
               "       difftrain data needles --out DIR [options]\n"
               "\n"
               "  prepare   turn text files into byte-level token shards (llm.c format)\n"
               "  info      describe token shards: format, token count, id range, unigram entropy\n"
               "  needles   generate synthetic multi-needle retrieval data with its answers\n"
               "\n"
               "`difftrain data SUBCOMMAND --help` describes each.\n");
}

static void prepare_usage(FILE *f) {
    fprintf(
        f,
        "usage: difftrain data prepare --out DIR [options] FILE...\n"
        "\n"
        "Encodes text files with the byte-level tokenizer (token = byte 0..255, end of text =\n"
        "%d, vocabulary %d) into llm.c token shards, holding out whole documents for\n"
        "validation. Each FILE is one document unless --split-on is given. Each document is\n"
        "followed by the end-of-text token.\n"
        "\n"
        "options:\n"
        "  --out DIR             output directory (created if needed)\n"
        "  --name NAME           shard file prefix (default \"data\"): writes\n"
        "                        DIR/NAME_train_000000.bin ... and DIR/NAME_val_000000.bin ...\n"
        "  --val-fraction F      fraction of documents held out for validation, in [0, 1)\n"
        "                        (default 0.05); chosen by a fixed hash of each document's text,\n"
        "                        so the split is deterministic and spread over all inputs; 0\n"
        "                        writes no validation shard\n"
        "  --split-on LINE       split files into documents at lines equal to LINE (the fortune\n"
        "                        format: --split-on '%%'); separator lines are dropped\n"
        "  --bits 16|32          bits per token (default 16)\n"
        "  --shard-tokens N      tokens per shard (default 100M; suffixes K, M, G = 1e3, 1e6,\n"
        "                        1e9)\n"
        "  --help                this text\n"
        "\n"
        "Prints one line per shard (path, tokens) and a summary. Exit status: 0 ok, 1 write\n"
        "failure, 2 bad usage or input.\n",
        DT_TOKEN_EOT, DT_BYTE_VOCAB);
}

static void info_usage(FILE *f) {
    fprintf(f,
            "usage: difftrain data info SHARD...\n"
            "\n"
            "For each token shard prints: path, format (uint16/uint32, magic, version), token\n"
            "count, smallest and largest token id, the number of end-of-text tokens (%d) when\n"
            "the largest id is %d (byte-level data), and the unigram entropy of its tokens in\n"
            "nats/token and bits/token: the loss of the best model that ignores context, to\n"
            "compare a training loss against. Exit status: 0 ok, 1 runtime failure, 2 when a\n"
            "file is missing or not a valid shard (the others are still described).\n",
            DT_TOKEN_EOT, DT_TOKEN_EOT);
}

static void needles_usage(FILE *f) {
    fprintf(
        f,
        "usage: difftrain data needles --out DIR [options]\n"
        "\n"
        "Generates synthetic needle-in-a-haystack documents (multi-needle retrieval) as one\n"
        "byte-level token shard, for training and for evaluation. Each document is exactly\n"
        "--context tokens: haystack text with N needle sentences \"The magic number of KEY is\n"
        "VALUE. \" inserted (keys: distinct 4-8 letter pseudo-words; values: distinct 6-digit\n"
        "numbers), a newline, R queries \"What is the magic number of KEY? VALUE\\n\" for R\n"
        "distinct needles, and the end-of-text token (%d).\n"
        "\n"
        "options:\n"
        "  --out DIR             output directory (created if needed); writes\n"
        "                        DIR/NAME_000000.bin (the documents, then one extra end-of-text\n"
        "                        token, so seq_len = context gives one sample per document) and\n"
        "                        DIR/NAME_answers.jsonl (per document: its token offset and\n"
        "                        length; each needle's key, value, token offset and depth; each\n"
        "                        query's needle, key, answer digits and the token offset of its\n"
        "                        first answer digit; offsets count from the start of the shard)\n"
        "  --name NAME           file prefix (default \"needles\")\n"
        "  --samples S           documents (default 100)\n"
        "  --needles N           needles per document, 1 to %d (default 1)\n"
        "  --queries R           queries per document, 1 to N (default 1)\n"
        "  --context C           tokens per document, end of text included (default 4096); at\n"
        "                        least the room for N needles and R queries\n"
        "  --depth D|random      depth of the first needle as a fraction of the haystack in\n"
        "                        [0, 1]; needle i then sits at D + i (1 - D) / N (evenly spread\n"
        "                        to the end). random (the default): each depth drawn from the\n"
        "                        seed. Needles move back to a sentence start (at most %d bytes)\n"
        "  --seed SEED           random seed (default 0); document k depends only on the seed,\n"
        "                        k and the other options, so the output is reproducible\n"
        "  --haystack FILE       take haystack text from FILE (e.g. a fortune file; lines equal\n"
        "                        to %% are dropped) instead of generated pseudo-English\n"
        "  --bits 16|32          bits per token (default 16)\n"
        "  --help                this text\n"
        "\n"
        "Exit status: 0 ok, 1 write failure, 2 bad usage (the message names the option).\n",
        DT_TOKEN_EOT, DT_NEEDLES_MAX, DT_NEEDLES_SNAP);
}

static int is_help(const char *a) { return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0; }

/* "100M", "1e8", "250000" -> a positive integer; 0 on a malformed value. */
static unsigned long long parse_count(const char *s) {
    char *end;
    double v = strtod(s, &end);
    if (end == s) return 0;
    static const char suffixes[] = "kKmMgG";
    static const double mult[] = {1e3, 1e3, 1e6, 1e6, 1e9, 1e9};
    const char *sfx = *end ? strchr(suffixes, *end) : NULL;
    if (sfx) {
        v *= mult[sfx - suffixes];
        end++;
    }
    if (*end != '\0') return 0;
    if (!(v >= 1 && v < 1e19) || v != floor(v)) return 0;
    return (unsigned long long)v;
}

/* Matches "--name VALUE" or "--name=VALUE" at argv[*i]; advances *i past the value. Returns 1 on a
 * match with *val set, -1 when the value is missing, 0 when argv[*i] is another option. */
static int take_value(int argc, char **argv, int *i, const char *name, const char **val) {
    size_t n = strlen(name);
    const char *a = argv[*i];
    if (strncmp(a, name, n) != 0) return 0;
    if (a[n] == '=') {
        *val = a + n + 1;
        return 1;
    }
    if (a[n] != '\0') return 0;
    if (*i + 1 >= argc) {
        dt_error("data prepare: %s needs a value", name);
        return -1;
    }
    *val = argv[++*i];
    return 1;
}

/* take_value with this subcommand's name in the missing-value message. */
static int take_needles_value(int argc, char **argv, int *i, const char *name, const char **val) {
    if (strcmp(argv[*i], name) == 0 && *i + 1 >= argc) {
        dt_error("data needles: %s needs a value", name);
        return -1;
    }
    return take_value(argc, argv, i, name, val);
}

/* A positive integer option for data needles that must fit an int; 0 after printing an error. */
static int needles_int(const char *opt, const char *v) {
    unsigned long long n = parse_count(v);
    if (n == 0 || n > 2147483647ULL) {
        dt_error("data needles: %s '%s', expected a positive integer", opt, v);
        return 0;
    }
    return (int)n;
}

static int cmd_data_needles(int argc, char **argv) {
    dt_needles_opts o;
    needles_opts_default(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (is_help(a)) {
            needles_usage(stdout);
            return 0;
        }
        int m;
        if ((m = take_needles_value(argc, argv, &i, "--out", &v)) != 0) {
            if (m < 0) return 2;
            o.out_dir = v;
        } else if ((m = take_needles_value(argc, argv, &i, "--name", &v)) != 0) {
            if (m < 0) return 2;
            o.name = v;
        } else if ((m = take_needles_value(argc, argv, &i, "--haystack", &v)) != 0) {
            if (m < 0) return 2;
            o.haystack = v;
        } else if ((m = take_needles_value(argc, argv, &i, "--samples", &v)) != 0) {
            if (m < 0) return 2;
            o.n_samples = parse_count(v);
            if (o.n_samples == 0) {
                dt_error("data needles: --samples '%s', expected a positive integer", v);
                return 2;
            }
        } else if ((m = take_needles_value(argc, argv, &i, "--needles", &v)) != 0) {
            if (m < 0 || (o.n_needles = needles_int("--needles", v)) == 0) return 2;
        } else if ((m = take_needles_value(argc, argv, &i, "--queries", &v)) != 0) {
            if (m < 0 || (o.n_queries = needles_int("--queries", v)) == 0) return 2;
        } else if ((m = take_needles_value(argc, argv, &i, "--context", &v)) != 0) {
            if (m < 0 || (o.context = needles_int("--context", v)) == 0) return 2;
        } else if ((m = take_needles_value(argc, argv, &i, "--depth", &v)) != 0) {
            if (m < 0) return 2;
            char *end;
            o.depth = strcmp(v, "random") == 0 ? -1.0 : strtod(v, &end);
            if (strcmp(v, "random") != 0 &&
                (end == v || *end != '\0' || !(o.depth >= 0 && o.depth <= 1))) {
                dt_error("data needles: --depth '%s', expected a fraction in [0, 1] or random", v);
                return 2;
            }
        } else if ((m = take_needles_value(argc, argv, &i, "--seed", &v)) != 0) {
            if (m < 0) return 2;
            char *end;
            errno = 0;
            o.seed = strtoull(v, &end, 10);
            if (end == v || *end != '\0' || errno != 0 || v[0] == '-') {
                dt_error("data needles: --seed '%s', expected a non-negative integer", v);
                return 2;
            }
        } else if ((m = take_needles_value(argc, argv, &i, "--bits", &v)) != 0) {
            if (m < 0) return 2;
            if (strcmp(v, "16") != 0 && strcmp(v, "32") != 0) {
                dt_error("data needles: --bits '%s', expected 16 or 32", v);
                return 2;
            }
            o.bits = atoi(v);
        } else {
            dt_error("data needles: unknown argument '%s' (see difftrain data needles --help)", a);
            return 2;
        }
    }
    if (!o.out_dir) {
        dt_error("data needles: --out DIR is required (see difftrain data needles --help)");
        return 2;
    }
    return (int)needles_run(&o, stdout);
}

static int cmd_data_prepare(int argc, char **argv) {
    dt_prepare_opts o;
    prepare_opts_default(&o);
    const char **files = dt_calloc((size_t)argc, sizeof *files);
    if (!files) {
        dt_error("data prepare: out of memory");
        return 1;
    }
    int n_files = 0, rc = 2, only_files = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (only_files || a[0] != '-' || strcmp(a, "-") == 0) {
            files[n_files++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_files = 1;
            continue;
        }
        if (is_help(a)) {
            prepare_usage(stdout);
            rc = 0;
            goto done;
        }
        int m;
        if ((m = take_value(argc, argv, &i, "--out", &v)) != 0) {
            if (m < 0) goto done;
            o.out_dir = v;
        } else if ((m = take_value(argc, argv, &i, "--name", &v)) != 0) {
            if (m < 0) goto done;
            o.name = v;
        } else if ((m = take_value(argc, argv, &i, "--split-on", &v)) != 0) {
            if (m < 0) goto done;
            o.split_on = v;
        } else if ((m = take_value(argc, argv, &i, "--val-fraction", &v)) != 0) {
            if (m < 0) goto done;
            char *end;
            o.val_fraction = strtod(v, &end);
            if (end == v || *end != '\0') {
                dt_error("data prepare: --val-fraction '%s', expected a number in [0, 1)", v);
                goto done;
            }
        } else if ((m = take_value(argc, argv, &i, "--bits", &v)) != 0) {
            if (m < 0) goto done;
            if (strcmp(v, "16") != 0 && strcmp(v, "32") != 0) {
                dt_error("data prepare: --bits '%s', expected 16 or 32", v);
                goto done;
            }
            o.bits = atoi(v);
        } else if ((m = take_value(argc, argv, &i, "--shard-tokens", &v)) != 0) {
            if (m < 0) goto done;
            o.shard_tokens = parse_count(v);
            if (o.shard_tokens == 0) {
                dt_error("data prepare: --shard-tokens '%s', expected a positive integer such as "
                         "1000000, 1e6 or 1M",
                         v);
                goto done;
            }
        } else {
            dt_error("data prepare: unknown option '%s' (see difftrain data prepare --help)", a);
            goto done;
        }
    }
    if (!o.out_dir) {
        dt_error("data prepare: --out DIR is required (see difftrain data prepare --help)");
        goto done;
    }
    if (n_files == 0) {
        dt_error("data prepare: no input files given (see difftrain data prepare --help)");
        goto done;
    }
    dt_prepare_result res;
    rc = (int)prepare_run(&res, &o, files, n_files, stdout);
done:
    dt_free(files);
    return rc;
}

static dt_status describe_shard(const char *path) {
    dt_shard s;
    DT_TRY(shard_open(&s, path));
    dt_shard_stats st;
    dt_status rc = shard_stats_compute(&st, &s);
    if (rc == DT_OK) {
        printf("%s: uint%d (magic %d, version %d), %zu tokens", s.path, s.bits, s.magic, s.version,
               s.n_tokens);
        if (s.n_tokens > 0) printf(", ids %u..%u", st.min_id, st.max_id);
        if (st.max_id == DT_TOKEN_EOT) printf(", %zu end-of-text", st.n_eot);
        printf(", unigram entropy %.4f nats/token (%.4f bits/token)\n", st.entropy_nats,
               st.entropy_nats / log(2.0));
    }
    shard_close(&s);
    return rc;
}

static int cmd_data_info(int argc, char **argv) {
    int n = 0, rc = 0;
    for (int i = 1; i < argc; i++) {
        if (is_help(argv[i])) {
            info_usage(stdout);
            return 0;
        }
    }
    for (int i = 1; i < argc; i++) {
        int r = (int)describe_shard(argv[i]);
        fflush(stdout);
        if (r > rc) rc = r; /* input errors (2) outrank runtime ones (1) */
        n++;
    }
    if (n == 0) {
        dt_error("data info: no shard files given (see difftrain data info --help)");
        return 2;
    }
    return rc;
}

int cmd_data(int argc, char **argv) {
    if (argc < 2) {
        data_usage(stderr);
        return 2;
    }
    const char *sub = argv[1];
    if (is_help(sub) || strcmp(sub, "help") == 0) {
        data_usage(stdout);
        return 0;
    }
    if (strcmp(sub, "prepare") == 0) return cmd_data_prepare(argc - 1, argv + 1);
    if (strcmp(sub, "info") == 0) return cmd_data_info(argc - 1, argv + 1);
    if (strcmp(sub, "needles") == 0) return cmd_data_needles(argc - 1, argv + 1);
    dt_error("data: unknown subcommand '%s', expected prepare, info or needles", sub);
    data_usage(stderr);
    return 2;
}
