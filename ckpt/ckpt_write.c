/* ckpt_save: every rank writes its shard, rank 0 the index, then the commit protocol. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "ckpt/ckpt.h"
#include "ckpt/ckpt_check.h"
#include "ckpt/ckpt_fs.h"
#include "dist/check.h"
#include "util/alloc.h"

#define CHUNK_ELEMS (1 << 20) /* at most ~4 MB per chunk: the unit a checksum covers */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* One piece as a chunked, Fletcher32-checked dataset of the piece's shape, with its place in
 * the global tensor as attributes (so a shard file alone says what it holds). */
static dt_status write_piece(hid_t f, hid_t lcpl, const dt_ckpt_entry *e, const dt_ckpt_piece *p,
                             const float *data) {
    dt_status st = DT_OK;
    int nd = e->ndim;
    hsize_t dims[2] = {(hsize_t)p->shape[0], (hsize_t)p->shape[1]};
    hsize_t rows = CHUNK_ELEMS / (dims[1] ? dims[1] : 1);
    hsize_t chunk[2] = {rows < 1 ? 1 : rows > dims[0] ? dims[0] : rows, dims[1]};
    if (nd == 1) chunk[0] = dims[0] < CHUNK_ELEMS ? dims[0] : CHUNK_ELEMS;
    hsize_t two = 2;
    int64_t goff[2] = {p->off[0], p->off[1]}, gshape[2] = {e->global_shape[0], e->global_shape[1]};
    hid_t s = -1, dcpl = -1, d = -1, as = -1, a = -1;
    DT_H5_CHECK(st, s = H5Screate_simple(nd, dims, NULL), out);
    DT_H5_CHECK(st, dcpl = H5Pcreate(H5P_DATASET_CREATE), out);
    DT_H5_CHECK(st, H5Pset_chunk(dcpl, nd, chunk), out);
    DT_H5_CHECK(st, H5Pset_fletcher32(dcpl), out);
    DT_H5_CHECK(st, d = H5Dcreate2(f, e->path, H5T_IEEE_F32LE, s, lcpl, dcpl, H5P_DEFAULT), out);
    DT_H5_CHECK(st, H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), out);
    DT_H5_CHECK(st, as = H5Screate_simple(1, &two, NULL), out);
    DT_H5_CHECK(st, a = H5Acreate2(d, "global_offset", H5T_STD_I64LE, as, H5P_DEFAULT,
                                   H5P_DEFAULT), out);
    DT_H5_CHECK(st, H5Awrite(a, H5T_NATIVE_INT64, goff), out);
    H5Aclose(a);
    a = -1;
    DT_H5_CHECK(st, a = H5Acreate2(d, "global_shape", H5T_STD_I64LE, as, H5P_DEFAULT,
                                   H5P_DEFAULT), out);
    DT_H5_CHECK(st, H5Awrite(a, H5T_NATIVE_INT64, gshape), out);
out:
    if (a >= 0) H5Aclose(a);
    if (as >= 0) H5Sclose(as);
    if (d >= 0) H5Dclose(d);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (s >= 0) H5Sclose(s);
    return st;
}

/* This rank's shard: every piece of the index whose writer it is. bufs[k] holds the local
 * (TP slice) flat buffer of entry kind k (0 params, 1 m, 2 v) in layout order. */
static dt_status write_shard(const dt_ckpt_index *idx, int me, const char *path,
                             const dt_param_layout *L, float *const bufs[3], double *bytes) {
    dt_status st = DT_OK;
    hid_t f = -1, lcpl = -1;
    DT_H5_CHECK(st, f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), out);
    DT_H5_CHECK(st, lcpl = H5Pcreate(H5P_LINK_CREATE), out);
    DT_H5_CHECK(st, H5Pset_create_intermediate_group(lcpl, 1), out);
    for (int j = 0; j < idx->n_entries; j++) {
        const dt_ckpt_entry *e = &idx->entries[j];
        const dt_tensor_spec *t = &L->tensors[j % L->n_tensors];
        for (int i = 0; i < e->n_pieces; i++) {
            const dt_ckpt_piece *p = &e->pieces[i];
            if (p->shard != me || p->shape[0] * p->shape[1] == 0) continue;
            DT_TRY_GOTO(st, write_piece(f, lcpl, e, p, bufs[j / L->n_tensors] + t->offset), out);
            *bytes += (double)t->numel * sizeof(float);
        }
    }
    DT_H5_CHECK(st, H5Fflush(f, H5F_SCOPE_GLOBAL), out);
out:
    if (lcpl >= 0) H5Pclose(lcpl);
    if (f >= 0 && H5Fclose(f) < 0 && st == DT_OK) {
        dt_error("%s: closing the shard file failed", path);
        st = DT_ERR_RUNTIME;
    }
    if (st == DT_OK) st = ckpt_fsync_path(path);
    if (st != DT_OK) dt_error("%s: could not write the checkpoint shard", path);
    return st;
}

static void test_pause(void) {
    const char *p = getenv("DIFFTRAIN_TEST_SAVE_PAUSE");
    double s = p ? atof(p) : 0;
    if (s <= 0) return;
    printf("checkpoint: pausing\n");
    fflush(stdout);
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* Rank 0's part of the commit, after every shard is on disk. */
static dt_status commit(const dt_ckpt_state *s, dt_ckpt_index *idx, const char *dir,
                        const char *tmp, const char *final) {
    char path[4400], replaced[4400];
    size_t len = 0;
    FILE *mem = open_memstream(&idx->config_yaml, &len);
    if (!mem) return DT_ERR_RUNTIME;
    config_print(s->cfg, mem);
    fclose(mem);
    DT_TRY(ckpt_fsync_path(tmp));
    snprintf(path, sizeof path, "%s/index.h5", tmp);
    DT_TRY(ckpt_index_write(idx, path));
    DT_TRY(ckpt_fsync_path(path));
    DT_TRY(ckpt_fsync_path(tmp));
    /* a committed directory of the same step (another run's): moved aside as a .tmp, which no
     * loader reads, and removed once the new one is in place */
    struct stat sb;
    snprintf(replaced, sizeof replaced, "%s.replaced.tmp", final);
    int replacing = stat(final, &sb) == 0;
    if (replacing && (ckpt_rmtree(replaced) != DT_OK || rename(final, replaced) != 0)) {
        dt_error("cannot move the old '%s' aside: %s", final, strerror(errno));
        return DT_ERR_RUNTIME;
    }
    if (rename(tmp, final) != 0) {
        dt_error("cannot rename '%s' to '%s': %s", tmp, final, strerror(errno));
        return DT_ERR_RUNTIME;
    }
    DT_TRY(ckpt_fsync_path(dir));
    const char *name = strrchr(final, '/') + 1;
    DT_TRY(ckpt_write_latest(dir, name));
    if (replacing) DT_TRY(ckpt_rmtree(replaced));
    return ckpt_rotate(dir, s->cfg->checkpoint.keep_last, idx->meta.step);
}

dt_status ckpt_save(const dt_ckpt_state *s, const char *dir, const dt_ckpt_meta *meta,
                    dt_ckpt_stats *stats) {
    ckpt_h5_quiet();
    double t0 = now_s();
    dt_groups *g = s->groups;
    const dt_param_layout *L = &s->model->layout;
    const dt_optimizer *o = s->opt;
    int me = g->world.rank;
    char tmp[4200], final[4200], path[4300];
    ckpt_step_path(tmp, sizeof tmp, dir, meta->step, 1);
    ckpt_step_path(final, sizeof final, dir, meta->step, 0);

    dt_status st = DT_OK;
    if (me == 0) {
        int removed = 0;
        st = ckpt_mkdirs(dir);
        if (st == DT_OK) st = ckpt_clean_tmp(dir, &removed);
        if (st == DT_OK && removed)
            printf("checkpoint: removed %d leftover partial checkpoint%s (*.tmp) in %s\n", removed,
                   removed == 1 ? "" : "s", dir);
        if (st == DT_OK && mkdir(tmp, 0755) != 0) {
            dt_error("cannot create '%s': %s", tmp, strerror(errno));
            st = DT_ERR_RUNTIME;
        }
    }
    DT_TRY(dist_agree(&g->world, st));

    dt_ckpt_index idx;
    memset(&idx, 0, sizeof idx);
    float *bufs[3] = {dt_malloc(L->total * sizeof(float)), dt_malloc(L->total * sizeof(float)),
                      dt_malloc(L->total * sizeof(float))};
    st = bufs[0] && bufs[1] && bufs[2] ? DT_OK : DT_ERR_RUNTIME;
    if (st != DT_OK) dt_error("out of memory for the checkpoint buffers (3 x %zu floats)", L->total);
    if (st == DT_OK) st = ckpt_index_build(&idx, &s->cfg->model, g->tp_size, g->dp_size, 1);
    DT_TRY_GOTO(st, dist_agree(&g->world, st), out);

    model_params_to_host(s->model, bufs[0]);
    o->be->copy_to_host(bufs[1] + o->first, o->m, o->count * sizeof(float));
    o->be->copy_to_host(bufs[2] + o->first, o->v, o->count * sizeof(float));
    if (s->zero->stage > 0) { /* the moments are sharded over DP: gather them whole */
        DT_TRY_GOTO(st, comm_allgather_f32(&g->dp, bufs[1], s->zero->counts), out);
        DT_TRY_GOTO(st, comm_allgather_f32(&g->dp, bufs[2], s->zero->counts), out);
    }
    double bytes = 0;
    char shard[32];
    snprintf(path, sizeof path, "%s/%s", tmp, ckpt_shard_name(shard, sizeof shard, me));
    st = write_shard(&idx, me, path, L, bufs, &bytes);
    if (st == DT_OK) test_pause();
    DT_TRY_GOTO(st, dist_agree(&g->world, st), out);

    idx.meta = *meta;
    idx.meta.format_version = CKPT_FORMAT_VERSION;
    idx.meta.optimizer_t = o->t;
    idx.meta.tp = g->tp_size;
    idx.meta.dp = g->dp_size;
    idx.meta.zero = s->zero->stage;
    idx.meta.world = g->world.size;
    if (me == 0) st = commit(s, &idx, dir, tmp, final);
    DT_TRY_GOTO(st, dist_agree(&g->world, st), out);
    DT_TRY_GOTO(st, comm_allreduce_f64(&g->world, &bytes, 1, DT_REDUCE_SUM), out);
    if (stats) {
        snprintf(stats->path, sizeof stats->path, "%s", final);
        stats->bytes = bytes;
        stats->seconds = now_s() - t0;
    }
out:
    ckpt_index_free(&idx);
    for (int k = 0; k < 3; k++) dt_free(bufs[k]);
    return st;
}
