/* `difftrain train CONFIG.yaml [key.path=value ...]`: the training driver, on one rank or on
 * tp x dp ranks (tensor parallelism inside the model, data parallelism with ZeRO here). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ckpt/ckpt.h"
#include "data/loader.h"
#include "dist/groups.h"
#include "dist/world.h"
#include "launch/commands.h"
#include "launch/comm_plan.h"
#include "launch/config.h"
#include "launch/device.h"
#include "launch/tp_comm.h"
#include "launch/metrics.h"
#include "launch/param_dump.h"
#include "launch/preempt.h"
#include "launch/watchdog.h"
#include "model/cpu/cpu_ops.h"
#include "model/model.h"
#include "model/plan.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"
#include "optim/step.h"
#include "optim/step_graph.h"
#include "optim/zero.h"
#include "util/alloc.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct trainer {
    dt_config cfg;
    dt_world world;
    dt_groups groups;
    dt_tp_comm tp_comm;
    dt_tp_binding tp_binding;
    dt_device_choice device;
    const dt_backend *be;
    dt_model model;
    dt_zero zero;
    dt_optimizer opt; /* over this rank's ZeRO range */
    dt_step step;     /* the step's loss, gradient norm and clipping factor, on the backend */
    dt_step_graph graph; /* the step's passes as a CUDA graph (DIFFTRAIN_CUDA_GRAPHS) */
    dt_comm_counts graph_tp, graph_dp; /* the collectives its recording counted */
    dt_loader train_data;
    dt_loader val_data;
    int has_val;
    dt_metrics_log metrics;
    int grad_accum;                 /* micro-batches per step on each data-parallel rank */
    int32_t *inputs, *targets;      /* (micro_batch, seq_len) host staging */
    dt_comm_bytes analytic;         /* bytes one step should move per group */
    int start_step;                 /* steps already done (a resumed checkpoint's step) */
    int last_saved;                 /* step of the newest checkpoint this run saved or loaded */
    int stop_after;                 /* --stop-after N: leave the loop after step N; 0 = never */
} trainer;

static void usage(FILE *f) {
    fprintf(f, "usage: difftrain train CONFIG.yaml [key.path=value ...] [--dump-params DIR]\n"
               "                      [--stop-after N]\n"
               "\n"
               "Trains the model the config describes on its data.train shards, validating on\n"
               "data.val every train.val_every steps. Overrides use the config's key paths, for\n"
               "example optim.lr=3e-4 train.steps=100. Runs as one rank alone, or under mpirun/srun\n"
               "on parallel.tp x parallel.dp ranks.\n"
               "\n"
               "--dump-params DIR  after the last step, write the parameters as global tensors\n"
               "                   (DIR/layout.txt, DIR/params.bin), whatever the layout\n"
               "--stop-after N     stop after step N as a preempted job would (saving a checkpoint\n"
               "                   there when checkpoint.dir is set); the learning-rate schedule\n"
               "                   still spans train.steps, so a resumed run continues it\n"
               "\n"
               "Checkpoints (README \"Checkpoints\"): with checkpoint.dir, one is saved every\n"
               "checkpoint.every steps and after the last step; checkpoint.resume (auto, never or\n"
               "a path) continues a run, checkpoint.init_from starts one from another's weights.\n");
}

/* Fills the staging buffers with micro_batch samples from stream index `first`. */
static dt_status load_micro_batch(trainer *t, const dt_loader *L, uint64_t first) {
    int B = t->cfg.train.micro_batch, T = t->cfg.train.seq_len;
    for (int b = 0; b < B; b++)
        DT_TRY(loader_sample(L, first + (uint64_t)b, t->inputs + (size_t)b * T,
                             t->targets + (size_t)b * T));
    return DT_OK;
}

/* Mean loss over val_batches micro-batches of the validation shards (the same samples every
 * time: the stream from sample 0, unshuffled), the batches shared out over the DP ranks. */
static dt_status validate(trainer *t, double *loss) {
    int B = t->cfg.train.micro_batch, dp = t->groups.dp_size;
    double sum = 0;
    for (int i = t->groups.dp_rank; i < t->cfg.train.val_batches; i += dp) {
        DT_TRY(load_micro_batch(t, &t->val_data, (uint64_t)i * B));
        sum += model_forward(&t->model, t->inputs, t->targets);
    }
    DT_TRY(comm_allreduce_f64(&t->groups.dp, &sum, 1, DT_REDUCE_SUM));
    *loss = sum / t->cfg.train.val_batches;
    return DT_OK;
}

/* The gradient-ready hook (model.h): a range the backward has finished is summed over TP (its
 * TP-partial tensors) and its DP reduction starts at once, overlapping the rest of the backward
 * on the GPU. A collective that fails leaves its group in an unknown state while the backward
 * goes on into more collectives, so it ends the whole job, as the model's TP ones do. */
static void reduce_ready_grads(void *ctx, size_t first, size_t count) {
    trainer *t = ctx;
    model_reduce_tp_grads_range(&t->model, first, count);
    dt_status st = zero_reduce_range(&t->zero, t->model.grads_mem, first, count);
    if (st != DT_OK) world_abort(&t->world, st);
}

/* One micro-batch's backward; when `reduce`, its gradients are then summed over TP (the
 * TP-partial tensors) and DP: range by range during the backward with
 * parallel.overlap_grad_reduce, else the whole buffer after it. */
static dt_status backward_and_reduce(trainer *t, float dloss, int reduce) {
    dt_model *m = &t->model;
    if (reduce && t->cfg.parallel.overlap_grad_reduce) {
        model_set_grad_ready_hook(m, reduce_ready_grads, t);
        model_backward(m, dloss);
        model_set_grad_ready_hook(m, NULL, NULL);
    } else {
        model_backward(m, dloss);
        if (!reduce) return DT_OK;
        model_reduce_tp_grads(m);
        DT_TRY(zero_reduce_range(&t->zero, m->grads_mem, 0, m->layout.total));
    }
    return zero_finish_reduce(&t->zero, m->grads_mem);
}

/* The step's forward and backward passes from its staged micro-batches (model slots 0 ..
 * grad_accum - 1), gradients reduced: all on the backend, nothing read back, so that
 * step_graph_run can record it. */
static dt_status queue_passes(void *arg) {
    trainer *t = arg;
    dt_model *m = &t->model;
    float dloss = 1.0f / (float)(t->grad_accum * t->groups.dp_size);
    model_zero_grad(m);
    step_begin(&t->step);
    zero_begin_step(&t->zero);
    for (int k = 0; k < t->grad_accum; k++) {
        step_forward_slot(&t->step, m, k, dloss);
        /* ZeRO 2 reduces every micro-batch's gradients into its shard, 0 and 1 the step's sum */
        DT_TRY(backward_and_reduce(t, dloss, t->zero.stage == 2 || k + 1 == t->grad_accum));
    }
    return DT_OK;
}

/* The host counts a collective when it is issued (dist/comm.h): a launched graph's are not
 * seen, so each launch adds what the recording counted (tp0, dp0: the counters before the
 * passes). */
static void count_graph_traffic(trainer *t, const dt_comm_counts *tp0, const dt_comm_counts *dp0) {
    if (t->graph.last == DT_STEP_RECORDED) {
        t->graph_tp = comm_counts_since(&t->groups.tp, tp0);
        t->graph_dp = comm_counts_since(&t->groups.dp, dp0);
    } else if (t->graph.last == DT_STEP_LAUNCHED) {
        comm_counts_add(&t->groups.tp, &t->graph_tp);
        comm_counts_add(&t->groups.dp, &t->graph_dp);
    }
}

static dt_status train_step(trainer *t, int step, dt_step_metrics *out) {
    const dt_train_config *tc = &t->cfg.train;
    dt_model *m = &t->model;
    dt_groups *g = &t->groups;
    /* this DP rank's share of the step's global batch: the samples are the single-rank run's */
    uint64_t first = (uint64_t)step * tc->global_batch +
                     (uint64_t)g->dp_rank * (uint64_t)(tc->global_batch / g->dp_size);

    int all_targets = 1; /* else the host takes the no-target branches: not the recorded ones */
    for (int k = 0; k < t->grad_accum; k++) {
        DT_TRY(load_micro_batch(t, &t->train_data, first + (uint64_t)k * tc->micro_batch));
        all_targets &= model_stage(m, k, t->inputs, t->targets) > 0;
    }
    dt_comm_counts tp0 = comm_counts(&g->tp), dp0 = comm_counts(&g->dp);
    DT_TRY(step_graph_run(&t->graph, all_targets, queue_passes, t));
    count_graph_traffic(t, &tp0, &dp0);
    float *grads = zero_range_grads(&t->zero, m->grads_mem);

    /* the norm, clipping and update on the backend; the one wait for it is step_finish's
     * read-back of the loss and the norm (a non-finite one refuses the update and stops) */
    double lr = lr_schedule(&t->cfg.optim, step, tc->steps);
    dt_step_groups sg = {&g->tp, &g->dp, t->device.coll, g->tp_rank != 0, t->zero.stage > 0};
    DT_TRY(step_update(&t->step, &sg, &t->opt, m->params_mem, grads, (float)lr));
    DT_TRY(zero_gather_params(&t->zero, m->params_mem));
    double loss, norm;
    DT_TRY(step_finish(&t->step, &t->opt, step + 1, t->grad_accum * g->dp_size, &loss, &norm));
    out->step = step + 1;
    out->steps = tc->steps;
    out->loss = loss;
    out->lr = lr;
    out->grad_norm = norm;
    return DT_OK;
}

static dt_status trainer_setup(trainer *t) {
    dt_config *c = &t->cfg;
    dt_groups *g = &t->groups;
    DT_TRY(groups_init(g, &t->world, c->parallel.tp, c->parallel.dp));
    c->parallel.dp = g->dp_size;
    if (c->train.global_batch % (c->train.micro_batch * g->dp_size)) {
        if (t->world.rank == 0)
            dt_error("%s: train.global_batch (%d) must be a multiple of train.micro_batch (%d) x "
                     "parallel.dp (%d)", c->source, c->train.global_batch, c->train.micro_batch,
                     g->dp_size);
        return DT_ERR_INPUT;
    }
    t->grad_accum = c->train.global_batch / (c->train.micro_batch * g->dp_size);
    if (c->train.threads > 0) cpu_set_threads(c->train.threads);
    DT_TRY(device_select(&t->device, c, &t->world, &g->world));
    t->be = t->device.be;
    tp_comm_bind(&t->tp_comm, &t->tp_binding, g, t->device.coll, &t->world);

    /* everything below can fail on one rank only (a missing file, memory): agree on it */
    dt_status st = loader_init(&t->train_data, (const char(*)[DT_PATH_MAX])c->data.train,
                               c->data.n_train, c->train.seq_len, c->model.vocab_size,
                               c->train.seed, 1);
    if (st == DT_OK && c->data.n_val > 0) {
        st = loader_init(&t->val_data, (const char(*)[DT_PATH_MAX])c->data.val, c->data.n_val,
                         c->train.seq_len, c->model.vocab_size, c->train.seed, 0);
        t->has_val = st == DT_OK;
    }
    DT_TRY(dist_agree(&g->world, st));
    size_t n = (size_t)c->train.micro_batch * c->train.seq_len;
    t->inputs = dt_malloc(n * sizeof(int32_t));
    t->targets = dt_malloc(n * sizeof(int32_t));
    st = t->inputs && t->targets ? DT_OK : DT_ERR_RUNTIME;
    if (st != DT_OK) dt_error("out of memory for the token staging buffers");
    DT_TRY(dist_agree(&g->world, st));
    DT_TRY(dist_agree(&g->world, model_init_opts(&t->model, &c->model, t->be, c->train.seed,
                                                 c->train.micro_batch, c->train.seq_len,
                                                 &t->tp_comm, c->train.recompute)));
    DT_TRY(dist_agree(&g->world, zero_init(&t->zero, c->parallel.zero, &g->dp, t->device.coll,
                                           t->be, t->model.layout.total)));
    DT_TRY(dist_agree(&g->world, optimizer_init_range(&t->opt, t->be, &t->model.layout,
                                                      &c->optim, t->zero.first, t->zero.count)));
    DT_TRY(dist_agree(&g->world, step_init(&t->step, t->be)));
    DT_TRY(dist_agree(&g->world, model_reserve_slots(&t->model, t->grad_accum)));
    DT_TRY(dist_agree(&g->world, step_graph_init(&t->graph, t->be, t->world.rank == 0)));
    st = t->world.rank == 0 ? metrics_open(&t->metrics, c->log.metrics) : DT_OK;
    DT_TRY(dist_agree(&g->world, st));
    t->analytic = comm_plan_step_bytes(c, &t->model);
    return DT_OK;
}

static dt_ckpt_state ckpt_state(trainer *t) {
    return (dt_ckpt_state){&t->cfg, &t->model, &t->opt, &t->zero, &t->groups};
}

/* checkpoint.resume first (a run that started from init_from resumes from its own checkpoints),
 * else checkpoint.init_from's weights with a fresh optimizer and schedule. */
static dt_status trainer_restore(trainer *t) {
    const dt_checkpoint_config *cc = &t->cfg.checkpoint;
    dt_ckpt_state s = ckpt_state(t);
    dt_ckpt_meta meta;
    dt_ckpt_stats stats;
    char path[4300];
    int found = 0;
    dt_log_set_quiet(t->world.rank != 0);
    dt_status st = ckpt_resolve_resume(cc->resume, cc->dir, path, sizeof path, &found);
    if (st == DT_OK && !found && cc->init_from[0])
        st = ckpt_resolve_dir(cc->init_from, path, sizeof path);
    dt_log_set_quiet(0);
    DT_TRY(dist_agree(&t->groups.world, st));
    if (!found && !cc->init_from[0]) return DT_OK;
    DT_TRY(ckpt_load(&s, path, found ? DT_CKPT_RESUME : DT_CKPT_WEIGHTS, &meta, &stats));
    if (found) {
        t->start_step = (int)meta.step;
        t->last_saved = (int)meta.step;
    }
    if (t->world.rank == 0) {
        printf("checkpoint: %s %s at step %lld (saved at tp %d x dp %d, zero %d; %.1f MB in "
               "%.2f s)%s\n", found ? "resumed from" : "initialised the weights from", path,
               (long long)meta.step, meta.tp, meta.dp, meta.zero, stats.bytes / 1e6,
               stats.seconds, found ? "" : "; fresh optimizer and schedule");
        if (found && cc->init_from[0])
            printf("checkpoint: checkpoint.init_from is ignored: the run resumes from its own "
                   "checkpoint\n");
        fflush(stdout);
    }
    return DT_OK;
}

/* Saves the state after `done` steps into checkpoint.dir. */
static dt_status trainer_save(trainer *t, int done) {
    const dt_config *c = &t->cfg;
    dt_ckpt_state s = ckpt_state(t);
    dt_ckpt_meta meta;
    dt_ckpt_stats stats;
    memset(&meta, 0, sizeof meta);
    meta.step = done;
    meta.samples_consumed = (uint64_t)done * (uint64_t)c->train.global_batch;
    meta.tokens_consumed = meta.samples_consumed * (uint64_t)c->train.seq_len;
    meta.rng_seed = c->train.seed;
    meta.rng_counter = meta.samples_consumed;
    DT_TRY(ckpt_save(&s, c->checkpoint.dir, &meta, &stats));
    t->last_saved = done;
    if (t->world.rank == 0) {
        printf("checkpoint: saved step %d to %s (%.1f MB in %.2f s)\n", done, stats.path,
               stats.bytes / 1e6, stats.seconds);
        fflush(stdout);
    }
    return DT_OK;
}

static void trainer_free(trainer *t) {
    metrics_close(&t->metrics);
    step_graph_free(&t->graph);
    step_free(&t->step);
    optimizer_free(&t->opt);
    zero_free(&t->zero);
    model_free(&t->model);
    loader_free(&t->train_data);
    loader_free(&t->val_data);
    dt_free(t->inputs);
    dt_free(t->targets);
    groups_free(&t->groups); /* frees the NCCL communicators before the device goes */
    device_release(&t->device);
}

static void print_banner(const trainer *t) {
    const dt_config *c = &t->cfg;
    const dt_model *m = &t->model;
    const dt_groups *g = &t->groups;
    printf("difftrain: %s, %zu parameters on rank 0 (%d tensors), head dim %d, backend %s (%s)\n",
           config_arch_name(c->model.arch), m->layout.total, m->layout.n_tensors, m->d,
           t->be->name, t->device.desc);
    printf("layout: %d ranks = tp %d x dp %d, zero %d; AdamW state of %zu elements per rank\n",
           t->world.size, g->tp_size, g->dp_size, t->zero.stage, t->zero.count);
    printf("data: %llu training samples of %d tokens", (unsigned long long)loader_num_samples(&t->train_data),
           c->train.seq_len);
    if (t->has_val)
        printf(", %llu validation samples", (unsigned long long)loader_num_samples(&t->val_data));
    printf("; %d micro-batches of %d per rank per step (global batch %d sequences, %d tokens)\n",
           t->grad_accum, c->train.micro_batch, c->train.global_batch,
           c->train.global_batch * c->train.seq_len);
    fflush(stdout);
}

/* After the first step on a GPU: the peak device memory of any rank next to what `difftrain
 * plan` predicts per rank for this config (the check that the plan can be trusted). */
/* After the first step: the backend's peak (what `difftrain plan` models) next to the plan, and
 * everything in use on the device (what must fit: the CUDA context, cuBLAS's workspace and
 * NCCL's buffers too), each the busiest rank's. */
static dt_status report_device_memory(trainer *t) {
    int64_t bytes[2] = {(int64_t)device_bytes_peak(&t->device),
                        (int64_t)device_bytes_used(&t->device)};
    DT_TRY(comm_allreduce_i64(&t->groups.world, bytes, 2, DT_REDUCE_MAX));
    int64_t peak = bytes[0];
    dt_plan p;
    dt_status st = plan_compute(&p, &t->cfg, t->world.size);
    if (t->world.rank == 0) {
        double gib = (double)(1u << 30);
        printf("memory: peak device memory %.3f GiB on the busiest rank after the first step",
               (double)peak / gib);
        if (st == DT_OK)
            printf("; plan predicts %.3f GiB per rank (%.1f%% of the measured peak)",
                   (double)p.mem.total / gib,
                   100.0 * (double)p.mem.total / (double)(peak ? peak : 1));
        if (bytes[1] > 0)
            printf("; %.3f GiB in use on the device in all (CUDA context, cuBLAS, NCCL)",
                   (double)bytes[1] / gib);
        printf("\n");
        fflush(stdout);
    }
    return DT_OK;
}

static dt_status trainer_run(trainer *t) {
    const dt_config *c = &t->cfg;
    double t0 = now_s(), last = t0;
    int last_step = t->start_step;
    for (int step = t->start_step; step < c->train.steps; step++) {
        if (t->stop_after > 0 && step >= t->stop_after) break;
        watchdog_phase("step", step + 1);
        dt_step_metrics s;
        memset(&s, 0, sizeof s);
        comm_reset_bytes(&t->groups.tp);
        comm_reset_bytes(&t->groups.dp);
        DT_TRY(train_step(t, step, &s));
        if (step == t->start_step && t->device.gpu) DT_TRY(report_device_memory(t));
        if (t->world.size > 1) {
            s.has_comm = 1;
            s.bytes_tp = comm_bytes_total(&t->groups.tp);
            s.bytes_dp = comm_bytes_total(&t->groups.dp);
            s.bytes_tp_analytic = t->analytic.tp;
            s.bytes_dp_analytic = t->analytic.dp;
        }
        int last_of_run = step + 1 == c->train.steps;
        int do_val = t->has_val &&
                     ((c->train.val_every > 0 && (step + 1) % c->train.val_every == 0) ||
                      last_of_run);
        int do_log = (step + 1) % c->log.every == 0 || last_of_run || do_val;
        if (do_val) {
            watchdog_phase("validation", step + 1);
            s.has_val = 1;
            DT_TRY(validate(t, &s.val_loss));
            watchdog_phase("step", step + 1); /* its end: the log, the ranks' agreement */
        }
        if (do_log && t->world.rank == 0) {
            double now = now_s();
            double tokens = (double)(step + 1 - last_step) * c->train.global_batch * c->train.seq_len;
            s.tokens_per_s = tokens / (now - last);
            /* model FLOPs (recomputation not counted, as Megatron and PaLM count MFU) */
            double peak = device_peak_flops(&t->device, c->train.precision);
            s.mfu = peak > 0 ? s.tokens_per_s *
                                   model_flops_per_token(&c->model, c->train.seq_len) /
                                   (peak * t->world.size)
                             : -1;
            s.elapsed_s = now - t0;
            last = now;
            last_step = step + 1;
            metrics_write(&t->metrics, &s);
        }
        /* a preemption signal on any rank stops every rank after this same step */
        int signo = 0;
        DT_TRY(preempt_agree(&t->groups.world, &signo));
        if (signo && t->world.rank == 0) {
            printf("preempted: %s received; stopping after step %d%s\n",
                   signo == SIGTERM ? "SIGTERM" : "SIGUSR1", step + 1,
                   c->checkpoint.dir[0] ? " with a checkpoint" : " (no checkpoint.dir: nothing saved)");
            fflush(stdout);
        }
        int stop = (t->stop_after > 0 && step + 1 == t->stop_after) || signo;
        if (c->checkpoint.dir[0] && step + 1 > t->last_saved &&
            ((c->checkpoint.every > 0 && (step + 1) % c->checkpoint.every == 0) || last_of_run ||
             stop)) {
            watchdog_phase("checkpoint save", step + 1);
            DT_TRY(trainer_save(t, step + 1));
        }
        if (signo) break;
    }
    if ((t->graph.enabled || t->graph.recordings) && t->world.rank == 0)
        printf("CUDA graphs%s: %d recording%s, %d step%s launched from one\n",
               t->world.size > 1 ? " (rank 0)" : "", t->graph.recordings,
               t->graph.recordings == 1 ? "" : "s", t->graph.launches,
               t->graph.launches == 1 ? "" : "s");
    return DT_OK;
}

int cmd_train(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? DT_ERR_INPUT : DT_OK;
    }
    /* --dump-params DIR may stand anywhere after the config; the rest are overrides */
    const char *dump_dir = NULL;
    int stop_after = 0;
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], "--dump-params") == 0 || strcmp(argv[i], "--stop-after") == 0) {
            if (i + 1 >= argc) {
                dt_error("%s needs %s", argv[i], argv[i][2] == 'd' ? "a directory" : "a step");
                return DT_ERR_INPUT;
            }
            if (argv[i][2] == 'd') {
                dump_dir = argv[i + 1];
            } else {
                char *end = NULL;
                long n = strtol(argv[i + 1], &end, 10);
                if (!*argv[i + 1] || *end || n < 1 || n > 1000000000) {
                    dt_error("--stop-after: expected a step >= 1, got '%s'", argv[i + 1]);
                    return DT_ERR_INPUT;
                }
                stop_after = (int)n;
            }
            memmove(&argv[i], &argv[i + 2], (size_t)(argc - i - 2) * sizeof *argv);
            argc -= 2;
            i--;
        }
    trainer t;
    memset(&t, 0, sizeof t);
    t.stop_after = stop_after;
    preempt_install(); /* before MPI: a signal during start-up is kept for the first step */
    dt_status st = world_init(&t.world, &argc, &argv);
    if (st != DT_OK) return st;
    /* every rank reads the same config and finds the same problems: rank 0 reports them */
    dt_log_set_quiet(t.world.rank != 0);
    st = config_load(&t.cfg, argv[1], argc - 2, argv + 2);
    if (st == DT_OK) st = config_require_data(&t.cfg);
    if (st == DT_OK) st = watchdog_start("step"); /* the same variable on every rank */
    dt_log_set_quiet(0);
    if (st != DT_OK) goto done;
    if (t.world.rank == 0) {
        config_print(&t.cfg, stdout);
        fflush(stdout);
    }
    DT_TRY_GOTO(st, trainer_setup(&t), done);
    if (t.world.rank == 0) print_banner(&t);
    watchdog_phase("checkpoint load", 0);
    DT_TRY_GOTO(st, trainer_restore(&t), done);
    st = trainer_run(&t);
    watchdog_phase("shutdown", 0); /* the parameter dump, MPI_Finalize's wait for the peers */
    if (st == DT_OK && dump_dir) st = param_dump_global(&t.model, &t.groups, dump_dir);
    /* a failure inside the run may be one rank's alone (its data, its memory) while the others
     * wait in a collective: end the whole job rather than leave them hanging */
    if (st != DT_OK && t.world.size > 1) world_abort(&t.world, st);
done:
    trainer_free(&t);
    world_finalize();
    watchdog_stop();
    return st;
}
