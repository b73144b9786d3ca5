/* ckpt_load: the checks before any tensor is read, then each rank's reads of the blocks it
 * needs, straight from the shard files (never through the index's virtual datasets, which
 * would return fill values for a missing shard). */
#define _POSIX_C_SOURCE 200809L
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ckpt/ckpt.h"
#include "ckpt/ckpt_check.h"
#include "ckpt/ckpt_fs.h"
#include "dist/check.h"
#include "util/alloc.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- resolving what to load ---- */

static int ends_with_tmp(const char *p) {
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/') n--;
    return n >= 4 && strncmp(p + n - 4, ".tmp", 4) == 0;
}

static int file_exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

dt_status ckpt_resolve_dir(const char *dir, char *path, size_t n) {
    char buf[4300], name[256];
    if (ends_with_tmp(dir)) {
        dt_error("%s: a partial checkpoint (.tmp: its save never committed) is never loaded", dir);
        return DT_ERR_INPUT;
    }
    snprintf(buf, sizeof buf, "%s/index.h5", dir);
    if (file_exists(buf)) {
        snprintf(path, n, "%s", dir);
        return DT_OK;
    }
    if (ckpt_read_latest(dir, name, sizeof name, 1) == DT_OK) {
        snprintf(path, n, "%s/%s", dir, name);
        return DT_OK;
    }
    dt_error("%s: not a checkpoint: neither %s/index.h5 nor %s/latest exists", dir, dir, dir);
    return DT_ERR_INPUT;
}

dt_status ckpt_resolve_resume(const char *resume, const char *dir, char *path, size_t n,
                              int *found) {
    char name[256];
    *found = 0;
    if (strcmp(resume, "never") == 0) return DT_OK;
    if (strcmp(resume, "auto") == 0) {
        if (!dir[0]) return DT_OK;
        char latest[4300];
        snprintf(latest, sizeof latest, "%s/latest", dir);
        if (!file_exists(latest)) return DT_OK; /* a fresh start */
        DT_TRY(ckpt_read_latest(dir, name, sizeof name, 0));
        snprintf(path, n, "%s/%s", dir, name);
        *found = 1;
        return DT_OK;
    }
    DT_TRY(ckpt_resolve_dir(resume, path, n));
    *found = 1;
    return DT_OK;
}

/* ---- config agreement ---- */

typedef struct model_key {
    const char *name;
    size_t off;
    int is_double;
} model_key;

#define K(n, f, d) {"model." n, offsetof(dt_model_config, f), d}
static const model_key model_keys[] = {
    K("arch", arch, 0), K("vocab_size", vocab_size, 0), K("d_model", d_model, 0),
    K("n_layers", n_layers, 0), K("n_heads", n_heads, 0), K("n_kv_heads", n_kv_heads, 0),
    K("ffn_dim", ffn_dim, 0), K("max_seq_len", max_seq_len, 0), K("rope_theta", rope_theta, 1),
    K("tie_embeddings", tie_embeddings, 0), K("norm_eps", norm_eps, 1),
    K("lambda_init", lambda_init_schedule, 0), K("lambda_init", lambda_init, 1),
    K("lambda", lambda_learnable, 0), K("lambda", lambda_const, 1), K("subln", subln, 0),
    K("init_std", init_std, 1),
};
#undef K

/* The shortest %g form that reads back to v (1e-05, not 1.0000000000000001e-05). */
static const char *shortest(char *buf, size_t n, double v) {
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, n, "%.*g", p, v);
        if (strtod(buf, NULL) == v) break;
    }
    return buf;
}

int ckpt_model_config_agrees(const dt_model_config *saved, const dt_model_config *now,
                             int weights_only, char *why, size_t n) {
    int keys = weights_only ? 1 : (int)(sizeof model_keys / sizeof model_keys[0]);
    for (int i = 0; i < keys; i++) {
        const model_key *k = &model_keys[i];
        const char *a = (const char *)saved + k->off, *b = (const char *)now + k->off;
        if (k->is_double ? *(const double *)a != *(const double *)b
                         : *(const int *)a != *(const int *)b) {
            if (k->is_double) {
                char x[32], y[32];
                snprintf(why, n, "%s is %s in the checkpoint and %s now", k->name,
                         shortest(x, sizeof x, *(const double *)a),
                         shortest(y, sizeof y, *(const double *)b));
            }
            else if (k->off == offsetof(dt_model_config, arch))
                snprintf(why, n, "%s is %s in the checkpoint and %s now", k->name,
                         config_arch_name(saved->arch), config_arch_name(now->arch));
            else
                snprintf(why, n, "%s is %d in the checkpoint and %d now", k->name, *(const int *)a,
                         *(const int *)b);
            return 0;
        }
    }
    return 1;
}

/* ---- checks before reading ---- */

static const char *kind_prefix[3] = {"model/", "optim/m/", "optim/v/"};

static dt_status check_index(const dt_ckpt_state *s, const char *path, dt_ckpt_mode mode,
                             dt_ckpt_index *idx) {
    char file[4300], why[512], key[CKPT_PATH_MAX];
    if (ends_with_tmp(path)) {
        dt_error("%s: a partial checkpoint (.tmp: its save never committed) is never loaded", path);
        return DT_ERR_INPUT;
    }
    snprintf(file, sizeof file, "%s/index.h5", path);
    if (!file_exists(file)) {
        dt_error("%s: not a checkpoint: %s is missing", path, file);
        return DT_ERR_INPUT;
    }
    DT_TRY(ckpt_index_read(idx, file));
    if (idx->meta.format_version != CKPT_FORMAT_VERSION) {
        dt_error("%s: checkpoint format version %d is not known to this build (it reads version "
                 "%d)", file, idx->meta.format_version, CKPT_FORMAT_VERSION);
        return DT_ERR_INPUT;
    }
    for (int i = 0; i < idx->n_shards; i++) {
        char name[32];
        snprintf(file, sizeof file, "%s/%s", path, ckpt_shard_name(name, sizeof name, i));
        if (access(file, R_OK) != 0) {
            dt_error("%s: the shard file %s named by the index is missing or unreadable; the "
                     "checkpoint is incomplete", path, file);
            return DT_ERR_INPUT;
        }
    }
    const dt_param_layout *L = &s->model->layout;
    int kinds = mode == DT_CKPT_RESUME ? 3 : 1;
    for (int k = 0; k < kinds; k++)
        for (int i = 0; i < L->n_tensors; i++) {
            const dt_tensor_spec *t = &L->tensors[i];
            snprintf(key, sizeof key, "%s%s", kind_prefix[k], t->name);
            const dt_ckpt_entry *e = ckpt_index_find(idx, key);
            if (!e) {
                dt_error("%s: tensor %s is missing from the checkpoint%s", path, key,
                         k ? " (it holds no optimizer state to resume from)" : "");
                return DT_ERR_INPUT;
            }
            if (e->global_shape[0] != t->global_shape[0] ||
                e->global_shape[1] != t->global_shape[1]) {
                dt_error("%s: tensor %s has global shape [%lld, %lld] in the checkpoint, but the "
                         "model's is [%lld, %lld]", path, t->name, (long long)e->global_shape[0],
                         (long long)e->global_shape[1], (long long)t->global_shape[0],
                         (long long)t->global_shape[1]);
                return DT_ERR_INPUT;
            }
            if (!ckpt_entry_tiles(e, why, sizeof why)) {
                dt_error("%s: tensor %s: %s", path, key, why);
                return DT_ERR_INPUT;
            }
        }
    for (int j = 0; j < idx->n_entries; j++) {
        const char *p = idx->entries[j].path;
        if (strncmp(p, "model/", 6) == 0 && !param_layout_find(L, p + 6)) {
            dt_error("%s: the checkpoint's tensor %s does not exist in this model (config %s)",
                     path, p + 6, s->cfg->source);
            return DT_ERR_INPUT;
        }
    }
    dt_config saved;
    snprintf(file, sizeof file, "%s/index.h5 (config)", path);
    if (config_load_string(&saved, file, idx->config_yaml, 0, NULL) != DT_OK) {
        dt_error("%s: the config stored in the checkpoint does not load", path);
        return DT_ERR_INPUT;
    }
    if (!ckpt_model_config_agrees(&saved.model, &s->cfg->model, mode == DT_CKPT_WEIGHTS, why,
                                  sizeof why)) {
        dt_error("%s: the checkpoint's model does not match the config: %s", path, why);
        return DT_ERR_INPUT;
    }
    if (mode == DT_CKPT_RESUME) {
        /* the data position is one sample counter; a changed global batch would leave it
         * between steps: refuse rather than silently skip or repeat samples */
        if (saved.train.global_batch != s->cfg->train.global_batch ||
            idx->meta.samples_consumed !=
                (uint64_t)idx->meta.step * (uint64_t)saved.train.global_batch) {
            dt_error("%s: train.global_batch is %d in the checkpoint (%llu samples after %lld "
                     "steps) and %d now; resuming needs the same global batch", path,
                     saved.train.global_batch, (unsigned long long)idx->meta.samples_consumed,
                     (long long)idx->meta.step, s->cfg->train.global_batch);
            return DT_ERR_INPUT;
        }
        if (idx->meta.step > s->cfg->train.steps) {
            dt_error("%s: the checkpoint is at step %lld, beyond train.steps = %d", path,
                     (long long)idx->meta.step, s->cfg->train.steps);
            return DT_ERR_INPUT;
        }
        if (idx->meta.rng_seed != s->cfg->train.seed)
            dt_warn("%s: train.seed is %llu in the checkpoint and %llu now: the data order "
                    "from here on follows the new seed", path,
                    (unsigned long long)idx->meta.rng_seed,
                    (unsigned long long)s->cfg->train.seed);
    }
    return DT_OK;
}

/* ---- reading ---- */

typedef struct shard_files {
    const char *dir;
    int n;
    hid_t *f; /* (n) opened on first use */
} shard_files;

static hid_t shard_open(shard_files *sf, int s) {
    if (sf->f[s] >= 0) return sf->f[s];
    char name[32], file[4300];
    snprintf(file, sizeof file, "%s/%s", sf->dir, ckpt_shard_name(name, sizeof name, s));
    sf->f[s] = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (sf->f[s] < 0) {
        char msg[256];
        dt_error("cannot open the shard file %s: %s", file, ckpt_h5_error(msg, sizeof msg));
    }
    return sf->f[s];
}

/* Reads the block (off, shape) of entry e into dst (shape[0] x shape[1], row-major) from the
 * pieces that intersect it; *bytes counts what was read. */
static dt_status read_block(shard_files *sf, const dt_ckpt_entry *e, const int64_t off[2],
                            const int64_t shape[2], float *dst, double *bytes) {
    dt_status st = DT_OK;
    int nd = e->ndim;
    int64_t covered = 0, io[2], is[2];
    char name[32];
    for (int i = 0; i < e->n_pieces && st == DT_OK; i++) {
        const dt_ckpt_piece *p = &e->pieces[i];
        int64_t n = ckpt_block_intersect(off, shape, p->off, p->shape, io, is);
        if (n == 0) continue;
        hid_t f = shard_open(sf, p->shard), d = -1, fs = -1, ms = -1;
        if (f < 0) return DT_ERR_INPUT;
        ckpt_shard_name(name, sizeof name, p->shard);
        if (!ckpt_h5_path_exists(f, e->path)) {
            dt_error("%s/%s: tensor %s is missing from the shard file", sf->dir, name, e->path);
            return DT_ERR_INPUT;
        }
        hsize_t dims[2] = {0, 0}, fstart[2], mstart[2], count[2], mdims[2];
        for (int k = 0; k < 2; k++) {
            fstart[k] = (hsize_t)(io[k] - p->off[k]);
            mstart[k] = (hsize_t)(io[k] - off[k]);
            count[k] = (hsize_t)is[k];
            mdims[k] = (hsize_t)shape[k];
        }
        DT_H5_CHECK(st, d = H5Dopen2(f, e->path, H5P_DEFAULT), done);
        DT_H5_CHECK(st, fs = H5Dget_space(d), done);
        if (H5Sget_simple_extent_ndims(fs) != nd || H5Sget_simple_extent_dims(fs, dims, NULL) < 0 ||
            (int64_t)dims[0] != p->shape[0] || (nd == 2 && (int64_t)dims[1] != p->shape[1])) {
            dt_error("%s/%s: tensor %s has shape [%llu, %llu] in the shard; the index says "
                     "[%lld, %lld]", sf->dir, name, e->path, (unsigned long long)dims[0],
                     (unsigned long long)dims[1], (long long)p->shape[0], (long long)p->shape[1]);
            st = DT_ERR_INPUT;
            goto done;
        }
        DT_H5_CHECK(st, H5Sselect_hyperslab(fs, H5S_SELECT_SET, fstart, NULL, count, NULL), done);
        DT_H5_CHECK(st, ms = H5Screate_simple(nd, mdims, NULL), done);
        DT_H5_CHECK(st, H5Sselect_hyperslab(ms, H5S_SELECT_SET, mstart, NULL, count, NULL), done);
        if (H5Dread(d, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, dst) < 0) {
            char msg[256];
            if (ckpt_h5_error_is_checksum())
                dt_error("checksum mismatch in tensor %s (file %s/%s): the checkpoint is corrupt",
                         e->path, sf->dir, name);
            else
                dt_error("cannot read tensor %s from %s/%s: %s", e->path, sf->dir, name,
                         ckpt_h5_error(msg, sizeof msg));
            st = DT_ERR_INPUT;
            goto done;
        }
        covered += n;
        *bytes += (double)n * sizeof(float);
    done:
        if (ms >= 0) H5Sclose(ms);
        if (fs >= 0) H5Sclose(fs);
        if (d >= 0) H5Dclose(d);
    }
    if (st == DT_OK && covered != shape[0] * shape[1]) {
        dt_error("%s: tensor %s: the checkpoint's pieces cover %lld of the %lld elements this "
                 "rank needs", sf->dir, e->path, (long long)covered,
                 (long long)(shape[0] * shape[1]));
        st = DT_ERR_INPUT;
    }
    return st;
}

/* Reads this rank's TP slice of every tensor into bufs[0] and, resuming, the moments of the
 * tensors that meet the optimizer's range [first, first + count) into bufs[1], bufs[2] (whole
 * local slices of those tensors: up to two tensors' worth more than the range). */
static dt_status read_tensors(const dt_ckpt_state *s, const dt_ckpt_index *idx, const char *path,
                              dt_ckpt_mode mode, float *const bufs[3], double *bytes) {
    const dt_param_layout *L = &s->model->layout;
    const dt_optimizer *o = s->opt;
    shard_files sf = {path, idx->n_shards, dt_calloc((size_t)idx->n_shards, sizeof(hid_t))};
    if (!sf.f) return DT_ERR_RUNTIME;
    for (int i = 0; i < sf.n; i++) sf.f[i] = -1;
    dt_status st = DT_OK;
    char key[CKPT_PATH_MAX];
    for (int k = 0; k < (mode == DT_CKPT_RESUME ? 3 : 1) && st == DT_OK; k++)
        for (int i = 0; i < L->n_tensors && st == DT_OK; i++) {
            const dt_tensor_spec *t = &L->tensors[i];
            if (k > 0 && (t->offset + t->numel <= o->first || t->offset >= o->first + o->count))
                continue;
            int64_t off[2], shape[2];
            ckpt_tensor_block(t, off, shape);
            snprintf(key, sizeof key, "%s%s", kind_prefix[k], t->name);
            st = read_block(&sf, ckpt_index_find(idx, key), off, shape, bufs[k] + t->offset, bytes);
        }
    for (int i = 0; i < sf.n; i++)
        if (sf.f[i] >= 0) H5Fclose(sf.f[i]);
    dt_free(sf.f);
    return st;
}

dt_status ckpt_load(const dt_ckpt_state *s, const char *path, dt_ckpt_mode mode,
                    dt_ckpt_meta *meta, dt_ckpt_stats *stats) {
    ckpt_h5_quiet();
    double t0 = now_s();
    dt_groups *g = s->groups;
    const dt_param_layout *L = &s->model->layout;
    dt_optimizer *o = s->opt;
    dt_ckpt_index idx;
    memset(&idx, 0, sizeof idx);
    /* every rank finds the same problems in the index: rank 0 reports them */
    dt_log_set_quiet(g->world.rank != 0);
    dt_status st = check_index(s, path, mode, &idx);
    dt_log_set_quiet(0);
    float *bufs[3] = {NULL, NULL, NULL};
    DT_TRY_GOTO(st, dist_agree(&g->world, st), out);
    for (int k = 0; k < (mode == DT_CKPT_RESUME ? 3 : 1); k++)
        if (!(bufs[k] = dt_calloc(L->total, sizeof(float)))) st = DT_ERR_RUNTIME;
    double bytes = 0;
    if (st == DT_OK) st = read_tensors(s, &idx, path, mode, bufs, &bytes);
    DT_TRY_GOTO(st, dist_agree(&g->world, st), out);
    model_params_from_host(s->model, bufs[0]);
    if (mode == DT_CKPT_RESUME) {
        o->be->copy_from_host(o->m, bufs[1] + o->first, o->count * sizeof(float));
        o->be->copy_from_host(o->v, bufs[2] + o->first, o->count * sizeof(float));
        o->t = (int)idx.meta.optimizer_t;
    }
    *meta = idx.meta;
    DT_TRY_GOTO(st, comm_allreduce_f64(&g->world, &bytes, 1, DT_REDUCE_SUM), out);
    if (stats) {
        snprintf(stats->path, sizeof stats->path, "%s", path);
        stats->bytes = bytes;
        stats->seconds = now_s() - t0;
    }
out:
    for (int k = 0; k < 3; k++) dt_free(bufs[k]);
    ckpt_index_free(&idx);
    return st;
}
