/* dump_model: one forward and backward of the C model on deterministic tokens, written out for
 * tests/torch/compare.py, which rebuilds the same computation in PyTorch from SPEC.
 *
 *   dump_model CONFIG.yaml OUTDIR [key.path=value ...]
 *
 * Writes into OUTDIR (created if missing):
 *   config.yaml  the resolved config (config_print)
 *   layout.txt   one line per tensor: name ndim shape0 shape1 offset numel
 *   params.bin   float32 parameters, layout.total of them
 *   grads.bin    float32 gradients of the mean loss (model_backward with scale 1)
 *   tokens.bin   int32 inputs (B*T) then targets (B*T); some targets are -1 (ignored)
 *   loss.txt     the mean loss, %.9g
 * Exit 0 on success, 1 on a runtime failure, 2 on bad usage or config. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "launch/config.h"
#include "model/model.h"
#include "util/alloc.h"
#include "util/rng.h"
#include "util/status.h"

static dt_status open_out(FILE **f, const char *dir, const char *name, const char *mode) {
    char path[DT_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    *f = fopen(path, mode);
    if (!*f) {
        dt_error("%s: cannot open for writing: %s", path, strerror(errno));
        return DT_ERR_RUNTIME;
    }
    return DT_OK;
}

static dt_status close_out(FILE *f, const char *dir, const char *name) {
    /* fclose reports deferred write errors (a full disk shows up here, not in fwrite) */
    int bad = ferror(f);
    bad |= fclose(f);
    if (bad) {
        dt_error("%s/%s: write failed", dir, name);
        return DT_ERR_RUNTIME;
    }
    return DT_OK;
}

static dt_status write_blob(const char *dir, const char *name, const void *data, size_t size,
                            size_t count) {
    FILE *f;
    DT_TRY(open_out(&f, dir, name, "wb"));
    size_t n = fwrite(data, size, count, f);
    dt_status st = close_out(f, dir, name);
    if (st == DT_OK && n != count) {
        dt_error("%s/%s: short write (%zu of %zu items)", dir, name, n, count);
        st = DT_ERR_RUNTIME;
    }
    return st;
}

static dt_status write_layout(const char *dir, const dt_param_layout *layout) {
    FILE *f;
    DT_TRY(open_out(&f, dir, "layout.txt", "w"));
    for (int i = 0; i < layout->n_tensors; i++) {
        const dt_tensor_spec *t = &layout->tensors[i];
        fprintf(f, "%s %d %lld %lld %zu %zu\n", t->name, t->ndim, (long long)t->shape[0],
                (long long)(t->ndim > 1 ? t->shape[1] : 1), t->offset, t->numel);
    }
    return close_out(f, dir, "layout.txt");
}

/* Token ids that exercise every row of a small vocabulary in a non-trivial order; every 7th
 * target is -1 so the ignore path (and the mean over the remaining targets) is covered. */
static void make_tokens(int32_t *inputs, int32_t *targets, int N, int V) {
    for (int i = 0; i < N; i++) {
        inputs[i] = (int32_t)(rng_mix64(0x1000u + (uint64_t)i) % (uint64_t)V);
        targets[i] = (i % 7 == 3) ? -1 : (int32_t)(rng_mix64(0x9000u + (uint64_t)i) % (uint64_t)V);
    }
}

static dt_status dump(const dt_config *cfg, const char *dir) {
    dt_status st = DT_OK;
    dt_model m;
    int B = cfg->train.micro_batch, T = cfg->train.seq_len, N = B * T;
    int32_t *tokens = NULL; /* (2, N): inputs then targets */
    float *host = NULL;     /* (layout.total) */
    FILE *f = NULL;
    float loss;

    DT_TRY(model_init(&m, &cfg->model, dt_backend_cpu(), cfg->train.seed, B, T));
    tokens = dt_malloc(2 * (size_t)N * sizeof *tokens);
    host = dt_malloc(m.layout.total * sizeof *host);
    if (!tokens || !host) {
        dt_error("dump_model: out of host memory (%zu parameters)", m.layout.total);
        st = DT_ERR_RUNTIME;
        goto done;
    }
    make_tokens(tokens, tokens + N, N, cfg->model.vocab_size);

    model_zero_grad(&m);
    loss = model_forward(&m, tokens, tokens + N);
    model_backward(&m, 1.0f);
    if (!isfinite(loss)) {
        dt_error("dump_model: loss is %g", loss);
        st = DT_ERR_RUNTIME;
        goto done;
    }

    DT_TRY_GOTO(st, open_out(&f, dir, "config.yaml", "w"), done);
    config_print(cfg, f);
    DT_TRY_GOTO(st, close_out(f, dir, "config.yaml"), done);
    DT_TRY_GOTO(st, write_layout(dir, &m.layout), done);
    model_params_to_host(&m, host);
    DT_TRY_GOTO(st, write_blob(dir, "params.bin", host, sizeof *host, m.layout.total), done);
    model_grads_to_host(&m, host);
    DT_TRY_GOTO(st, write_blob(dir, "grads.bin", host, sizeof *host, m.layout.total), done);
    DT_TRY_GOTO(st, write_blob(dir, "tokens.bin", tokens, sizeof *tokens, 2 * (size_t)N), done);
    DT_TRY_GOTO(st, open_out(&f, dir, "loss.txt", "w"), done);
    fprintf(f, "%.9g\n", loss);
    DT_TRY_GOTO(st, close_out(f, dir, "loss.txt"), done);
    printf("dump_model: %s: loss %.6f, %zu parameters, %d targets\n", dir, loss, m.layout.total,
           m.n_targets);
done:
    dt_free(host);
    dt_free(tokens);
    model_free(&m);
    return st;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: dump_model CONFIG.yaml OUTDIR [key.path=value ...]\n");
        return DT_ERR_INPUT;
    }
    static dt_config cfg; /* large (path arrays): keep it off the stack */
    dt_status st = config_load(&cfg, argv[1], argc - 3, argv + 3);
    if (st != DT_OK) return st;
    if (mkdir(argv[2], 0755) != 0 && errno != EEXIST) {
        dt_error("%s: cannot create directory: %s", argv[2], strerror(errno));
        return DT_ERR_RUNTIME;
    }
    return dump(&cfg, argv[2]);
}
