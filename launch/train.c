/* `difftrain train CONFIG.yaml [key.path=value ...]`: the training driver. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "data/loader.h"
#include "dist/world.h"
#include "launch/commands.h"
#include "launch/config.h"
#include "launch/metrics.h"
#include "model/cpu/cpu_ops.h"
#include "model/model.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"
#include "util/alloc.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct trainer {
    dt_config cfg;
    dt_world world;
    const dt_backend *be;
    dt_model model;
    dt_optimizer opt;
    dt_loader train_data;
    dt_loader val_data;
    int has_val;
    dt_metrics_log metrics;
    int grad_accum; /* micro-batches per step on each data-parallel rank */
    int32_t *inputs, *targets; /* (micro_batch, seq_len) host staging */
} trainer;

static void usage(FILE *f) {
    fprintf(f, "usage: difftrain train CONFIG.yaml [key.path=value ...]\n"
               "\n"
               "Trains the model the config describes on its data.train shards, validating on\n"
               "data.val every train.val_every steps. Overrides use the config's key paths, for\n"
               "example optim.lr=3e-4 train.steps=100. Runs as one rank alone, or under mpirun/srun.\n");
}

/* Fills the staging buffers with micro-batch `micro` of the given step from a loader. */
static dt_status load_micro_batch(trainer *t, const dt_loader *L, uint64_t first_sample) {
    int B = t->cfg.train.micro_batch, T = t->cfg.train.seq_len;
    for (int b = 0; b < B; b++)
        DT_TRY(loader_sample(L, first_sample + (uint64_t)b, t->inputs + (size_t)b * T,
                             t->targets + (size_t)b * T));
    return DT_OK;
}

/* Mean loss over val_batches micro-batches of the validation shards (the same samples every
 * time: the stream from sample 0, unshuffled). */
static dt_status validate(trainer *t, double *loss) {
    int B = t->cfg.train.micro_batch;
    double sum = 0;
    for (int i = 0; i < t->cfg.train.val_batches; i++) {
        DT_TRY(load_micro_batch(t, &t->val_data, (uint64_t)i * B));
        sum += model_forward(&t->model, t->inputs, t->targets);
    }
    *loss = sum / t->cfg.train.val_batches;
    return DT_OK;
}

static dt_status train_step(trainer *t, int step, dt_step_metrics *out) {
    const dt_train_config *tc = &t->cfg.train;
    dt_model *m = &t->model;
    uint64_t step_first = (uint64_t)step * (uint64_t)tc->global_batch;
    double loss_sum = 0;

    model_zero_grad(m);
    for (int k = 0; k < t->grad_accum; k++) {
        DT_TRY(load_micro_batch(t, &t->train_data, step_first + (uint64_t)k * tc->micro_batch));
        loss_sum += model_forward(m, t->inputs, t->targets);
        model_backward(m, 1.0f / (float)t->grad_accum);
    }
    double loss = loss_sum / t->grad_accum;
    if (!isfinite(loss)) {
        dt_error("step %d: the training loss is %g; stopping (lower optim.lr or check the data)",
                 step + 1, loss);
        return DT_ERR_RUNTIME;
    }
    double norm = optimizer_grad_norm(&t->opt, m->grads_mem);
    if (!isfinite(norm)) {
        dt_error("step %d: the gradient norm is %g; stopping", step + 1, norm);
        return DT_ERR_RUNTIME;
    }
    double lr = lr_schedule(&t->cfg.optim, step, tc->steps);
    optimizer_step(&t->opt, m->params_mem, m->grads_mem, (float)lr,
                   optimizer_clip_scale(&t->opt, norm));
    out->step = step + 1;
    out->steps = tc->steps;
    out->loss = loss;
    out->lr = lr;
    out->grad_norm = norm;
    return DT_OK;
}

static dt_status trainer_setup(trainer *t) {
    dt_config *c = &t->cfg;
    if (c->parallel.dp == 0) c->parallel.dp = t->world.size / c->parallel.tp;
    if (c->parallel.tp * c->parallel.dp != t->world.size) {
        dt_error("%s: parallel.tp (%d) x parallel.dp (%d) = %d ranks, but the job has %d", c->source,
                 c->parallel.tp, c->parallel.dp, c->parallel.tp * c->parallel.dp, t->world.size);
        return DT_ERR_INPUT;
    }
    if (t->world.size > 1) {
        dt_error("%s: parallel.tp=%d parallel.dp=%d: this build trains on one rank only; tensor "
                 "and data parallelism are not available yet", c->source, c->parallel.tp,
                 c->parallel.dp);
        return DT_ERR_INPUT;
    }
    if (c->train.precision != DT_PRECISION_FP32) {
        dt_error("%s: train.precision: bf16 needs the GPU backend; the CPU backend trains in fp32",
                 c->source);
        return DT_ERR_INPUT;
    }
    if (c->checkpoint.dir[0] || c->checkpoint.init_from[0]) {
        dt_error("%s: checkpoint.%s: checkpoints are not available in this build yet; remove the "
                 "key to train without them", c->source, c->checkpoint.dir[0] ? "dir" : "init_from");
        return DT_ERR_INPUT;
    }
    t->grad_accum = c->train.global_batch / (c->train.micro_batch * c->parallel.dp);
    if (c->train.threads > 0) cpu_set_threads(c->train.threads);
    t->be = dt_backend_cpu();

    DT_TRY(loader_init(&t->train_data, (const char(*)[DT_PATH_MAX])c->data.train, c->data.n_train,
                       c->train.seq_len, c->model.vocab_size, c->train.seed, 1));
    if (c->data.n_val > 0) {
        DT_TRY(loader_init(&t->val_data, (const char(*)[DT_PATH_MAX])c->data.val, c->data.n_val,
                           c->train.seq_len, c->model.vocab_size, c->train.seed, 0));
        t->has_val = 1; /* config_require_data refused val_every without data.val */
    }
    size_t n = (size_t)c->train.micro_batch * c->train.seq_len;
    t->inputs = dt_malloc(n * sizeof(int32_t));
    t->targets = dt_malloc(n * sizeof(int32_t));
    if (!t->inputs || !t->targets) {
        dt_error("out of memory for the token staging buffers");
        return DT_ERR_RUNTIME;
    }
    DT_TRY(model_init(&t->model, &c->model, t->be, c->train.seed, c->train.micro_batch,
                      c->train.seq_len));
    DT_TRY(optimizer_init(&t->opt, t->be, &t->model.layout, &c->optim));
    if (t->world.rank == 0) DT_TRY(metrics_open(&t->metrics, c->log.metrics));
    return DT_OK;
}

static void trainer_free(trainer *t) {
    metrics_close(&t->metrics);
    optimizer_free(&t->opt);
    model_free(&t->model);
    loader_free(&t->train_data);
    loader_free(&t->val_data);
    dt_free(t->inputs);
    dt_free(t->targets);
}

static void print_banner(const trainer *t) {
    const dt_config *c = &t->cfg;
    const dt_model *m = &t->model;
    printf("difftrain: %s, %zu parameters (%d tensors), head dim %d, backend %s\n",
           config_arch_name(c->model.arch), m->layout.total, m->layout.n_tensors, m->d,
           t->be->name);
    printf("data: %llu training samples of %d tokens", (unsigned long long)loader_num_samples(&t->train_data),
           c->train.seq_len);
    if (t->has_val)
        printf(", %llu validation samples", (unsigned long long)loader_num_samples(&t->val_data));
    printf("; %d micro-batches of %d per step (global batch %d sequences, %d tokens)\n",
           t->grad_accum, c->train.micro_batch, c->train.global_batch,
           c->train.global_batch * c->train.seq_len);
    fflush(stdout);
}

static dt_status trainer_run(trainer *t) {
    const dt_config *c = &t->cfg;
    double t0 = now_s(), last = t0;
    int last_step = 0;
    for (int step = 0; step < c->train.steps; step++) {
        dt_step_metrics s;
        memset(&s, 0, sizeof s);
        DT_TRY(train_step(t, step, &s));
        int last_of_run = step + 1 == c->train.steps;
        int do_val = t->has_val &&
                     ((c->train.val_every > 0 && (step + 1) % c->train.val_every == 0) ||
                      last_of_run);
        int do_log = (step + 1) % c->log.every == 0 || last_of_run || do_val;
        if (do_val) {
            s.has_val = 1;
            DT_TRY(validate(t, &s.val_loss));
        }
        if (do_log && t->world.rank == 0) {
            double now = now_s();
            double tokens = (double)(step + 1 - last_step) * c->train.global_batch * c->train.seq_len;
            s.tokens_per_s = tokens / (now - last);
            s.elapsed_s = now - t0;
            last = now;
            last_step = step + 1;
            metrics_write(&t->metrics, &s);
        }
    }
    return DT_OK;
}

int cmd_train(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? DT_ERR_INPUT : DT_OK;
    }
    trainer t;
    memset(&t, 0, sizeof t);
    dt_status st = world_init(&t.world, &argc, &argv);
    if (st != DT_OK) return st;
    DT_TRY_GOTO(st, config_load(&t.cfg, argv[1], argc - 2, argv + 2), done);
    DT_TRY_GOTO(st, config_require_data(&t.cfg), done);
    if (t.world.rank == 0) {
        config_print(&t.cfg, stdout);
        fflush(stdout);
    }
    DT_TRY_GOTO(st, trainer_setup(&t), done);
    if (t.world.rank == 0) print_banner(&t);
    DT_TRY_GOTO(st, trainer_run(&t), done);
done:
    trainer_free(&t);
    if (st != DT_OK && t.world.size > 1) world_abort(&t.world, st);
    world_finalize();
    return st;
}
