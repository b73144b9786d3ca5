/* bench_step: times one training step of the CPU implementation.
 *
 *   bench_step CONFIG.yaml [--steps=N] [--warmup=N] [--print-config] [key.path=value ...]
 *
 * One step = model_zero_grad, model_forward, model_backward, AdamW over every tensor (weight
 * decay only where the layout says so) through the backend's adamw_update: what `difftrain
 * train` does per micro-batch on one rank, without data loading, clipping or logging.
 * bench/torch_step.py times the same step in PyTorch eager; bench/bench_step.sh runs both with
 * the same thread count and prints the ratio.
 *
 * --print-config writes the resolved config (config_print, overrides applied) and exits: the
 * script hands that file to torch_step.py, so both sides build exactly the same model.
 *
 * Threads: train.threads when the config sets it, else OMP_NUM_THREADS, else the OpenMP default;
 * applied to OpenMP and OpenBLAS alike (cpu_set_threads).
 *
 * Prints one JSON line: {"impl", "arch", "threads", "steps", "ms_per_step" (median over the
 * timed steps), "ms_min" (fastest step: the best estimate on a machine shared with other work),
 * "tokens_per_s" (from the median), "loss"} (loss of the last timed step, to show both sides
 * train the same problem). */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "launch/config.h"
#include "model/cpu/cpu_ops.h"
#include "model/model.h"
#include "util/alloc.h"
#include "util/rng.h"
#include "util/status.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Random tokens: the step's cost does not depend on the values, but the loss line should look
 * like a real (untrained) model's. */
static void make_tokens(int32_t *inputs, int32_t *targets, int N, int V) {
    for (int i = 0; i < N; i++) {
        inputs[i] = (int32_t)(rng_mix64(0x5000u + (uint64_t)i) % (uint64_t)V);
        targets[i] = (int32_t)(rng_mix64(0x7000u + (uint64_t)i) % (uint64_t)V);
    }
}

typedef struct bench_state {
    dt_model m;
    float *adam_m, *adam_v; /* (layout.total) backend memory */
    float *one;             /* (1) backend memory: grad_scale 1 (no clipping) */
    int32_t *inputs, *targets;
} bench_state;

static float bench_one_step(bench_state *s, const dt_optim_config *o, int t) {
    dt_model *m = &s->m;
    model_zero_grad(m);
    float loss = model_forward(m, s->inputs, s->targets);
    model_backward(m, 1.0f);
    for (int i = 0; i < m->layout.n_tensors; i++) {
        const dt_tensor_spec *ts = &m->layout.tensors[i];
        m->be->adamw_update(m->params_mem + ts->offset, s->adam_m + ts->offset,
                            s->adam_v + ts->offset, m->grads_mem + ts->offset, ts->numel,
                            (float)o->lr, (float)o->beta1, (float)o->beta2, (float)o->eps,
                            ts->decay ? (float)o->weight_decay : 0.0f, s->one, t);
    }
    m->be->synchronize();
    return loss;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int parse_count(const char *arg, const char *flag, int *out) {
    size_t n = strlen(flag);
    if (strncmp(arg, flag, n) != 0) return 0;
    char *end;
    long v = strtol(arg + n, &end, 10);
    if (*end || v < 0 || v > 1000000) {
        dt_error("%s: expected a count, got '%s'", flag, arg + n);
        return -1;
    }
    *out = (int)v;
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_step CONFIG.yaml [--steps=N] [--warmup=N] [--print-config] "
                        "[key=value ...]\n");
        return DT_ERR_INPUT;
    }
    int steps = 10, warmup = 2, n_over = 0, print_config = 0;
    char **over = dt_malloc((size_t)argc * sizeof *over);
    if (!over) return DT_ERR_RUNTIME;
    for (int i = 2; i < argc; i++) {
        int r1 = parse_count(argv[i], "--steps=", &steps);
        int r2 = r1 ? 0 : parse_count(argv[i], "--warmup=", &warmup);
        if (r1 < 0 || r2 < 0) {
            dt_free(over);
            return DT_ERR_INPUT;
        }
        if (!r1 && !r2 && strcmp(argv[i], "--print-config") == 0) {
            print_config = 1;
        } else if (!r1 && !r2) {
            over[n_over++] = argv[i];
        }
    }
    if (steps < 1) steps = 1;

    static dt_config cfg; /* large (path arrays): keep it off the stack */
    dt_status st = config_load(&cfg, argv[1], n_over, over);
    dt_free(over);
    if (st != DT_OK) return st;
    if (print_config) {
        config_print(&cfg, stdout);
        return fflush(stdout) == 0 ? DT_OK : DT_ERR_RUNTIME;
    }

    int threads = cfg.train.threads;
    const char *env = getenv("OMP_NUM_THREADS");
    if (threads <= 0 && env && atoi(env) > 0) threads = atoi(env);
    if (threads <= 0) threads = omp_get_max_threads();
    cpu_set_threads(threads);

    int B = cfg.train.micro_batch, T = cfg.train.seq_len, N = B * T;
    bench_state s = {0};
    st = model_init(&s.m, &cfg.model, dt_backend_cpu(), cfg.train.seed, B, T);
    if (st != DT_OK) return st;
    const dt_backend *be = s.m.be;
    s.adam_m = be->alloc(s.m.layout.total * sizeof(float));
    s.adam_v = be->alloc(s.m.layout.total * sizeof(float));
    s.one = be->alloc(sizeof(float));
    s.inputs = dt_malloc((size_t)N * sizeof(int32_t));
    s.targets = dt_malloc((size_t)N * sizeof(int32_t));
    if (!s.adam_m || !s.adam_v || !s.one || !s.inputs || !s.targets) {
        dt_error("bench_step: out of memory for %zu parameters", s.m.layout.total);
        st = DT_ERR_RUNTIME;
        goto done;
    }
    make_tokens(s.inputs, s.targets, N, cfg.model.vocab_size);
    const float one = 1.0f;
    be->copy_from_host(s.one, &one, sizeof one);

    int t = 0;
    for (int i = 0; i < warmup; i++) bench_one_step(&s, &cfg.optim, ++t);
    float loss = 0.0f;
    double *times = dt_malloc((size_t)steps * sizeof *times);
    if (!times) {
        dt_error("bench_step: out of memory for %d step times", steps);
        st = DT_ERR_RUNTIME;
        goto done;
    }
    for (int i = 0; i < steps; i++) {
        double t0 = now_s();
        loss = bench_one_step(&s, &cfg.optim, ++t);
        times[i] = now_s() - t0;
    }
    qsort(times, (size_t)steps, sizeof *times, cmp_double);
    double dt = steps % 2 ? times[steps / 2] : 0.5 * (times[steps / 2 - 1] + times[steps / 2]);
    double dt_min = times[0];
    dt_free(times);
    if (!isfinite(loss)) {
        dt_error("bench_step: loss is %g after %d steps", loss, t);
        st = DT_ERR_RUNTIME;
        goto done;
    }
    printf("{\"impl\": \"difftrain\", \"arch\": \"%s\", \"threads\": %d, \"steps\": %d, "
           "\"ms_per_step\": %.3f, \"ms_min\": %.3f, \"tokens_per_s\": %.1f, \"loss\": %.6f}\n",
           config_arch_name(cfg.model.arch), threads, steps, 1e3 * dt, 1e3 * dt_min, N / dt,
           loss);
done:
    if (s.adam_m) be->free(s.adam_m);
    if (s.adam_v) be->free(s.adam_v);
    if (s.one) be->free(s.one);
    dt_free(s.inputs);
    dt_free(s.targets);
    model_free(&s.m);
    return st;
}
