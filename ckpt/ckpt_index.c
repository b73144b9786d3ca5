/* index.h5: writing and reading the checkpoint's table of contents (HDF5). */
#include <hdf5.h>
#include <stdio.h>
#include <string.h>

#include "ckpt/ckpt_check.h"
#include "ckpt/ckpt_index.h"
#include "dist/check.h"
#include "util/alloc.h"

#define SHARD_NAME_LEN 32

typedef struct attr_def {
    const char *name;
    int is_unsigned; /* 0: int64, 1: uint64, 2: int */
    size_t off;
} attr_def;

#define A(n, u, f) {n, u, offsetof(dt_ckpt_meta, f)}
static const attr_def meta_attrs[] = {
    A("format_version", 2, format_version), A("step", 0, step),
    A("samples_consumed", 1, samples_consumed), A("tokens_consumed", 1, tokens_consumed),
    A("rng_seed", 1, rng_seed), A("rng_counter", 1, rng_counter),
    A("optimizer_t", 0, optimizer_t), A("layout_tp", 2, tp), A("layout_dp", 2, dp),
    A("layout_zero", 2, zero), A("layout_world", 2, world),
};
#undef A
#define N_META_ATTRS (int)(sizeof meta_attrs / sizeof meta_attrs[0])

static hid_t attr_mem_type(int u) {
    return u == 0 ? H5T_NATIVE_INT64 : u == 1 ? H5T_NATIVE_UINT64 : H5T_NATIVE_INT;
}
static hid_t attr_file_type(int u) {
    return u == 0 ? H5T_STD_I64LE : u == 1 ? H5T_STD_U64LE : H5T_STD_I32LE;
}

/* A dataset of n fixed-length strings of `len` bytes (n == 0: a scalar). */
static herr_t write_strings(hid_t f, const char *name, const char *data, hsize_t n, size_t len) {
    hid_t t = H5Tcopy(H5T_C_S1), s = -1, d = -1;
    herr_t rc = -1;
    if (t < 0 || H5Tset_size(t, len) < 0 || H5Tset_strpad(t, H5T_STR_NULLPAD) < 0) goto out;
    s = n ? H5Screate_simple(1, &n, NULL) : H5Screate(H5S_SCALAR);
    if (s < 0) goto out;
    d = H5Dcreate2(f, name, t, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (d < 0) goto out;
    rc = H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
out:
    if (d >= 0) H5Dclose(d);
    if (s >= 0) H5Sclose(s);
    if (t >= 0) H5Tclose(t);
    return rc;
}

static dt_status write_entry(hid_t f, hid_t lcpl, const dt_ckpt_entry *e) {
    dt_status st = DT_OK;
    char shard[SHARD_NAME_LEN];
    hsize_t gdims[2] = {(hsize_t)e->global_shape[0], (hsize_t)e->global_shape[1]};
    hsize_t pdims[2] = {(hsize_t)e->n_pieces, 5};
    hid_t dcpl = -1, vspace = -1, src = -1, d = -1, as = -1, a = -1;
    int64_t *table = dt_calloc((size_t)e->n_pieces * 5, sizeof *table);
    if (!table) return DT_ERR_RUNTIME;
    DT_H5_CHECK(st, dcpl = H5Pcreate(H5P_DATASET_CREATE), out);
    DT_H5_CHECK(st, vspace = H5Screate_simple(e->ndim, gdims, NULL), out);
    for (int i = 0; i < e->n_pieces; i++) {
        const dt_ckpt_piece *p = &e->pieces[i];
        int64_t *row = table + (size_t)i * 5;
        row[0] = p->shard;
        row[1] = p->off[0];
        row[2] = p->off[1];
        row[3] = p->shape[0];
        row[4] = p->shape[1];
        if (p->shape[0] * p->shape[1] == 0) continue;
        hsize_t start[2] = {(hsize_t)p->off[0], (hsize_t)p->off[1]};
        hsize_t count[2] = {(hsize_t)p->shape[0], (hsize_t)p->shape[1]};
        DT_H5_CHECK(st, src = H5Screate_simple(e->ndim, count, NULL), out);
        DT_H5_CHECK(st, H5Sselect_hyperslab(vspace, H5S_SELECT_SET, start, NULL, count, NULL), out);
        /* source names are relative: HDF5 resolves them against index.h5's own directory, so a
         * checkpoint directory can be moved or copied whole */
        DT_H5_CHECK(st, H5Pset_virtual(dcpl, vspace, ckpt_shard_name(shard, sizeof shard, p->shard),
                                       e->path, src), out);
        H5Sclose(src);
        src = -1;
    }
    DT_H5_CHECK(st, H5Sselect_all(vspace), out);
    DT_H5_CHECK(st, d = H5Dcreate2(f, e->path, H5T_IEEE_F32LE, vspace, lcpl, dcpl, H5P_DEFAULT),
                out);
    DT_H5_CHECK(st, as = H5Screate_simple(2, pdims, NULL), out);
    DT_H5_CHECK(st, a = H5Acreate2(d, "pieces", H5T_STD_I64LE, as, H5P_DEFAULT, H5P_DEFAULT), out);
    DT_H5_CHECK(st, H5Awrite(a, H5T_NATIVE_INT64, table), out);
out:
    if (a >= 0) H5Aclose(a);
    if (as >= 0) H5Sclose(as);
    if (d >= 0) H5Dclose(d);
    if (src >= 0) H5Sclose(src);
    if (vspace >= 0) H5Sclose(vspace);
    if (dcpl >= 0) H5Pclose(dcpl);
    dt_free(table);
    return st;
}

dt_status ckpt_index_write(const dt_ckpt_index *idx, const char *path) {
    ckpt_h5_quiet();
    dt_status st = DT_OK;
    hid_t f = -1, lcpl = -1, s = -1, a = -1;
    char *names = dt_calloc((size_t)(idx->n_shards + idx->n_entries) + 1, CKPT_PATH_MAX);
    if (!names) return DT_ERR_RUNTIME;
    DT_H5_CHECK(st, f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), out);
    DT_H5_CHECK(st, s = H5Screate(H5S_SCALAR), out);
    for (int i = 0; i < N_META_ATTRS; i++) {
        const attr_def *ad = &meta_attrs[i];
        DT_H5_CHECK(st, a = H5Acreate2(f, ad->name, attr_file_type(ad->is_unsigned), s,
                                       H5P_DEFAULT, H5P_DEFAULT), out);
        DT_H5_CHECK(st, H5Awrite(a, attr_mem_type(ad->is_unsigned),
                                 (const char *)&idx->meta + ad->off), out);
        H5Aclose(a);
        a = -1;
    }
    const char *yaml = idx->config_yaml ? idx->config_yaml : "";
    DT_H5_CHECK(st, write_strings(f, "config", yaml, 0, strlen(yaml) + 1), out);
    for (int i = 0; i < idx->n_shards; i++)
        ckpt_shard_name(names + (size_t)i * SHARD_NAME_LEN, SHARD_NAME_LEN, i);
    DT_H5_CHECK(st, write_strings(f, "shards", names, (hsize_t)idx->n_shards, SHARD_NAME_LEN), out);
    memset(names, 0, (size_t)(idx->n_shards + idx->n_entries + 1) * CKPT_PATH_MAX);
    for (int i = 0; i < idx->n_entries; i++)
        snprintf(names + (size_t)i * CKPT_PATH_MAX, CKPT_PATH_MAX, "%s", idx->entries[i].path);
    DT_H5_CHECK(st, write_strings(f, "tensor_paths", names, (hsize_t)idx->n_entries,
                                  CKPT_PATH_MAX), out);
    DT_H5_CHECK(st, lcpl = H5Pcreate(H5P_LINK_CREATE), out);
    DT_H5_CHECK(st, H5Pset_create_intermediate_group(lcpl, 1), out);
    for (int i = 0; i < idx->n_entries; i++) DT_TRY_GOTO(st, write_entry(f, lcpl, &idx->entries[i]), out);
    DT_H5_CHECK(st, H5Fflush(f, H5F_SCOPE_GLOBAL), out);
out:
    if (a >= 0) H5Aclose(a);
    if (s >= 0) H5Sclose(s);
    if (lcpl >= 0) H5Pclose(lcpl);
    if (f >= 0 && H5Fclose(f) < 0 && st == DT_OK) {
        dt_error("%s: closing the checkpoint index failed", path);
        st = DT_ERR_RUNTIME;
    }
    dt_free(names);
    if (st != DT_OK) dt_error("%s: could not write the checkpoint index", path);
    return st;
}

/* Reads a 1-D dataset of fixed-length strings (or a scalar one when *n is NULL) into a fresh
 * buffer of (*n) x (*len) bytes, each string NUL-terminated within len + 1 bytes. */
static dt_status read_strings(hid_t f, const char *file, const char *name, char **out, int *n,
                              size_t *len) {
    dt_status st = DT_OK;
    hid_t d = -1, t = -1, mt = -1, s = -1;
    *out = NULL;
    if (H5Lexists(f, name, H5P_DEFAULT) <= 0) {
        dt_error("%s: not a difftrain checkpoint index: the dataset '%s' is missing", file, name);
        return DT_ERR_INPUT;
    }
    DT_H5_CHECK(st, d = H5Dopen2(f, name, H5P_DEFAULT), out);
    DT_H5_CHECK(st, t = H5Dget_type(d), out);
    DT_H5_CHECK(st, s = H5Dget_space(d), out);
    size_t sz = H5Tget_size(t);
    hssize_t count = H5Sget_simple_extent_npoints(s);
    if (H5Tget_class(t) != H5T_STRING || sz == 0 || count < 0 || (!n && count != 1)) {
        dt_error("%s: the dataset '%s' is not %s", file, name, n ? "a list of strings" : "a string");
        st = DT_ERR_INPUT;
        goto out;
    }
    DT_H5_CHECK(st, mt = H5Tcopy(H5T_C_S1), out);
    DT_H5_CHECK(st, H5Tset_size(mt, sz + 1), out); /* room for a terminator */
    DT_H5_CHECK(st, H5Tset_strpad(mt, H5T_STR_NULLTERM), out);
    *out = dt_calloc((size_t)(count ? count : 1), sz + 1);
    if (!*out) {
        st = DT_ERR_RUNTIME;
        goto out;
    }
    if (count) DT_H5_CHECK(st, H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, *out), out);
    if (n) *n = (int)count;
    if (len) *len = sz + 1;
out:
    if (s >= 0) H5Sclose(s);
    if (mt >= 0) H5Tclose(mt);
    if (t >= 0) H5Tclose(t);
    if (d >= 0) H5Dclose(d);
    if (st != DT_OK) {
        dt_free(*out);
        *out = NULL;
    }
    return st;
}

static dt_status read_entry(hid_t f, const char *file, dt_ckpt_entry *e) {
    dt_status st = DT_OK;
    hid_t d = -1, s = -1, a = -1, as = -1;
    int64_t *table = NULL;
    if (!ckpt_h5_path_exists(f, e->path)) {
        dt_error("%s: the tensor '%s' listed in tensor_paths is missing", file, e->path);
        return DT_ERR_INPUT;
    }
    DT_H5_CHECK(st, d = H5Dopen2(f, e->path, H5P_DEFAULT), out);
    DT_H5_CHECK(st, s = H5Dget_space(d), out);
    hsize_t dims[2] = {1, 1}, pdims[2] = {0, 0};
    int nd = H5Sget_simple_extent_ndims(s);
    if (nd < 1 || nd > 2 || H5Aexists(d, "pieces") <= 0) {
        dt_error("%s: the tensor '%s' has %d dimensions%s", file, e->path, nd,
                 nd >= 1 && nd <= 2 ? " but no piece table" : "; expected 1 or 2");
        st = DT_ERR_INPUT;
        goto out;
    }
    H5Sget_simple_extent_dims(s, dims, NULL);
    e->ndim = nd;
    e->global_shape[0] = (int64_t)dims[0];
    e->global_shape[1] = nd == 2 ? (int64_t)dims[1] : 1;
    DT_H5_CHECK(st, a = H5Aopen(d, "pieces", H5P_DEFAULT), out);
    DT_H5_CHECK(st, as = H5Aget_space(a), out);
    if (H5Sget_simple_extent_ndims(as) != 2 || H5Sget_simple_extent_dims(as, pdims, NULL) < 0 ||
        pdims[1] != 5 || pdims[0] < 1) {
        dt_error("%s: the piece table of '%s' is not an (n, 5) array", file, e->path);
        st = DT_ERR_INPUT;
        goto out;
    }
    table = dt_calloc((size_t)pdims[0] * 5, sizeof *table);
    e->pieces = dt_calloc((size_t)pdims[0], sizeof *e->pieces);
    if (!table || !e->pieces) {
        st = DT_ERR_RUNTIME;
        goto out;
    }
    DT_H5_CHECK(st, H5Aread(a, H5T_NATIVE_INT64, table), out);
    e->n_pieces = (int)pdims[0];
    for (int i = 0; i < e->n_pieces; i++) {
        const int64_t *row = table + (size_t)i * 5;
        e->pieces[i] = (dt_ckpt_piece){(int)row[0], {row[1], row[2]}, {row[3], row[4]}};
    }
out:
    dt_free(table);
    if (as >= 0) H5Sclose(as);
    if (a >= 0) H5Aclose(a);
    if (s >= 0) H5Sclose(s);
    if (d >= 0) H5Dclose(d);
    return st;
}

dt_status ckpt_index_read(dt_ckpt_index *idx, const char *path) {
    ckpt_h5_quiet();
    memset(idx, 0, sizeof *idx);
    dt_status st = DT_OK;
    char *shards = NULL, *paths = NULL, expect[SHARD_NAME_LEN];
    size_t shard_len = 0, path_len = 0;
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), a = -1;
    if (f < 0) {
        char msg[256];
        dt_error("%s: cannot open the checkpoint index: %s", path, ckpt_h5_error(msg, sizeof msg));
        return DT_ERR_INPUT;
    }
    for (int i = 0; i < N_META_ATTRS; i++) {
        const attr_def *ad = &meta_attrs[i];
        if (H5Aexists(f, ad->name) <= 0) {
            dt_error("%s: not a difftrain checkpoint index: the attribute '%s' is missing", path,
                     ad->name);
            st = DT_ERR_INPUT;
            goto out;
        }
        DT_H5_CHECK(st, a = H5Aopen(f, ad->name, H5P_DEFAULT), out);
        DT_H5_CHECK(st, H5Aread(a, attr_mem_type(ad->is_unsigned), (char *)&idx->meta + ad->off),
                    out);
        H5Aclose(a);
        a = -1;
        /* a newer format may lay out the rest differently: stop before reading it */
        if (i == 0 && idx->meta.format_version != CKPT_FORMAT_VERSION) goto out;
    }
    DT_TRY_GOTO(st, read_strings(f, path, "config", &idx->config_yaml, NULL, NULL), out);
    DT_TRY_GOTO(st, read_strings(f, path, "shards", &shards, &idx->n_shards, &shard_len), out);
    for (int i = 0; i < idx->n_shards; i++)
        if (strcmp(shards + (size_t)i * shard_len, ckpt_shard_name(expect, sizeof expect, i))) {
            dt_error("%s: shard %d is named '%s'; expected '%s'", path, i,
                     shards + (size_t)i * shard_len, expect);
            st = DT_ERR_INPUT;
            goto out;
        }
    DT_TRY_GOTO(st, read_strings(f, path, "tensor_paths", &paths, &idx->n_entries, &path_len), out);
    idx->entries = dt_calloc((size_t)(idx->n_entries ? idx->n_entries : 1), sizeof *idx->entries);
    if (!idx->entries) {
        st = DT_ERR_RUNTIME;
        goto out;
    }
    for (int i = 0; i < idx->n_entries; i++) {
        dt_ckpt_entry *e = &idx->entries[i];
        snprintf(e->path, sizeof e->path, "%s", paths + (size_t)i * path_len);
        DT_TRY_GOTO(st, read_entry(f, path, e), out);
        for (int j = 0; j < e->n_pieces; j++)
            if (e->pieces[j].shard < 0 || e->pieces[j].shard >= idx->n_shards) {
                dt_error("%s: tensor '%s' names shard %d of %d", path, e->path,
                         e->pieces[j].shard, idx->n_shards);
                st = DT_ERR_INPUT;
                goto out;
            }
    }
out:
    if (a >= 0) H5Aclose(a);
    H5Fclose(f);
    dt_free(shards);
    dt_free(paths);
    if (st != DT_OK) ckpt_index_free(idx);
    return st;
}
