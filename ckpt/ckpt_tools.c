/* `difftrain ckpt inspect|verify`: reading a checkpoint as a whole, outside training. */
#include <hdf5.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ckpt/ckpt.h"
#include "ckpt/ckpt_check.h"
#include "util/alloc.h"

static dt_status open_index(const char *dir, char *path, size_t n, dt_ckpt_index *idx) {
    char file[4400];
    DT_TRY(ckpt_resolve_dir(dir, path, n));
    snprintf(file, sizeof file, "%s/index.h5", path);
    if (ckpt_index_read(idx, file) != DT_OK) return DT_ERR_RUNTIME;
    if (idx->meta.format_version != CKPT_FORMAT_VERSION) {
        dt_error("%s: checkpoint format version %d is not known to this build (it reads version "
                 "%d)", file, idx->meta.format_version, CKPT_FORMAT_VERSION);
        ckpt_index_free(idx);
        return DT_ERR_RUNTIME;
    }
    return DT_OK;
}

dt_status ckpt_inspect(const char *dir, FILE *out) {
    ckpt_h5_quiet();
    char path[4300];
    dt_ckpt_index idx;
    DT_TRY(open_index(dir, path, sizeof path, &idx));
    const dt_ckpt_meta *m = &idx.meta;
    fprintf(out, "checkpoint: %s\n", path);
    fprintf(out, "format version: %d\n", m->format_version);
    fprintf(out, "step: %lld\n", (long long)m->step);
    fprintf(out, "samples consumed: %llu\n", (unsigned long long)m->samples_consumed);
    fprintf(out, "tokens consumed: %llu\n", (unsigned long long)m->tokens_consumed);
    fprintf(out, "optimizer step (AdamW t): %lld\n", (long long)m->optimizer_t);
    fprintf(out, "rng: seed %llu, data counter %llu\n", (unsigned long long)m->rng_seed,
            (unsigned long long)m->rng_counter);
    fprintf(out, "layout: %d ranks = tp %d x dp %d, zero %d; %d shard files\n", m->world, m->tp,
            m->dp, m->zero, idx.n_shards);
    fprintf(out, "config:\n");
    for (const char *p = idx.config_yaml; *p;) {
        size_t len = strcspn(p, "\n");
        fprintf(out, "  %.*s\n", (int)len, p);
        p += len + (p[len] == '\n');
    }
    fprintf(out, "tensors:\n  %-48s %-16s %-8s %12s %6s\n", "name", "global shape", "dtype",
            "bytes", "pieces");
    double total = 0;
    int pieces = 0;
    for (int i = 0; i < idx.n_entries; i++) {
        const dt_ckpt_entry *e = &idx.entries[i];
        char shape[64];
        if (e->ndim == 1)
            snprintf(shape, sizeof shape, "[%lld]", (long long)e->global_shape[0]);
        else
            snprintf(shape, sizeof shape, "[%lld, %lld]", (long long)e->global_shape[0],
                     (long long)e->global_shape[1]);
        double bytes = 4.0 * (double)(e->global_shape[0] * e->global_shape[1]);
        fprintf(out, "  %-48s %-16s %-8s %12.0f %6d\n", e->path, shape, "float32", bytes,
                e->n_pieces);
        total += bytes;
        pieces += e->n_pieces;
    }
    fprintf(out, "total: %d tensors, %d pieces, %.0f bytes (%.3f MB)\n", idx.n_entries, pieces,
            total, total / 1e6);
    ckpt_index_free(&idx);
    return DT_OK;
}

/* Verifies one piece: the dataset exists with the piece's shape and reads back whole (every
 * chunk's Fletcher32 checksum). Returns 0 when it is sound; otherwise prints the problem. */
static int verify_piece(hid_t f, const char *file, const dt_ckpt_entry *e, const dt_ckpt_piece *p,
                        float **buf, size_t *cap, FILE *out) {
    int ok = 0;
    hid_t d = -1, s = -1;
    hsize_t dims[2] = {0, 1};
    size_t n = (size_t)(p->shape[0] * p->shape[1]);
    if (!ckpt_h5_path_exists(f, e->path)) {
        fprintf(out, "problem: %s: tensor %s is missing\n", file, e->path);
        return 1;
    }
    if ((d = H5Dopen2(f, e->path, H5P_DEFAULT)) < 0 || (s = H5Dget_space(d)) < 0 ||
        H5Sget_simple_extent_ndims(s) != e->ndim || H5Sget_simple_extent_dims(s, dims, NULL) < 0 ||
        (int64_t)dims[0] != p->shape[0] || (e->ndim == 2 && (int64_t)dims[1] != p->shape[1])) {
        fprintf(out, "problem: %s: tensor %s has shape [%llu, %llu]; the index says [%lld, %lld]\n",
                file, e->path, (unsigned long long)dims[0], (unsigned long long)dims[1],
                (long long)p->shape[0], (long long)p->shape[1]);
        ok = 1;
        goto out;
    }
    if (n > *cap) {
        dt_free(*buf);
        *buf = dt_malloc(n * sizeof(float));
        *cap = *buf ? n : 0;
        if (!*buf) {
            fprintf(out, "problem: out of memory reading %s\n", e->path);
            ok = 1;
            goto out;
        }
    }
    if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, *buf) < 0) {
        char msg[256];
        if (ckpt_h5_error_is_checksum())
            fprintf(out, "problem: %s: checksum mismatch in tensor %s\n", file, e->path);
        else
            fprintf(out, "problem: %s: cannot read tensor %s: %s\n", file, e->path,
                    ckpt_h5_error(msg, sizeof msg));
        ok = 1;
    }
out:
    if (s >= 0) H5Sclose(s);
    if (d >= 0) H5Dclose(d);
    return ok;
}

dt_status ckpt_verify(const char *dir, FILE *out) {
    ckpt_h5_quiet();
    char path[4300], file[4400], name[32], why[256];
    dt_ckpt_index idx;
    DT_TRY(open_index(dir, path, sizeof path, &idx));
    int problems = 0, pieces = 0;
    double bytes = 0;
    hid_t *files = dt_calloc((size_t)idx.n_shards, sizeof *files);
    float *buf = NULL;
    size_t cap = 0;
    if (!files) {
        ckpt_index_free(&idx);
        return DT_ERR_RUNTIME;
    }
    for (int s = 0; s < idx.n_shards; s++) {
        snprintf(file, sizeof file, "%s/%s", path, ckpt_shard_name(name, sizeof name, s));
        files[s] = access(file, R_OK) == 0 ? H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT) : -1;
        if (files[s] < 0) {
            fprintf(out, "problem: %s: the shard file is %s\n", file,
                    access(file, F_OK) == 0 ? "not a readable HDF5 file" : "missing");
            problems++;
        }
    }
    for (int i = 0; i < idx.n_entries; i++) {
        const dt_ckpt_entry *e = &idx.entries[i];
        if (!ckpt_entry_tiles(e, why, sizeof why)) {
            fprintf(out, "problem: %s/index.h5: tensor %s: %s\n", path, e->path, why);
            problems++;
        }
        for (int j = 0; j < e->n_pieces; j++) {
            const dt_ckpt_piece *p = &e->pieces[j];
            if (p->shape[0] * p->shape[1] == 0 || files[p->shard] < 0) continue;
            snprintf(file, sizeof file, "%s/%s", path, ckpt_shard_name(name, sizeof name, p->shard));
            int bad = verify_piece(files[p->shard], file, e, p, &buf, &cap, out);
            problems += bad;
            pieces++;
            if (!bad) bytes += 4.0 * (double)(p->shape[0] * p->shape[1]);
        }
    }
    for (int s = 0; s < idx.n_shards; s++)
        if (files[s] >= 0) H5Fclose(files[s]);
    dt_free(files);
    dt_free(buf);
    if (problems)
        fprintf(out, "%s: %d problem%s: the checkpoint is damaged\n", path, problems,
                problems == 1 ? "" : "s");
    else
        fprintf(out, "ok: %s: step %lld, %d tensors, %d pieces in %d shards, %.0f bytes checked\n",
                path, (long long)idx.meta.step, idx.n_entries, pieces, idx.n_shards, bytes);
    ckpt_index_free(&idx);
    return problems ? DT_ERR_RUNTIME : DT_OK;
}
