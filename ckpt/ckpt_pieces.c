/* The arithmetic of pieces: who writes which block (the index's piece table), block
 * intersections for reading into another layout, and the tiling check of verify. */
#include <stdio.h>
#include <string.h>

#include "ckpt/ckpt_index.h"
#include "util/alloc.h"

const char *ckpt_shard_name(char *buf, size_t n, int s) {
    snprintf(buf, n, "shard_%05d.h5", s);
    return buf;
}

void ckpt_tensor_block(const dt_tensor_spec *t, int64_t off[2], int64_t shape[2]) {
    off[0] = t->split == DT_SPLIT_ROWS ? t->split_offset : 0;
    off[1] = t->split == DT_SPLIT_COLS ? t->split_offset : 0;
    shape[0] = t->shape[0];
    shape[1] = t->shape[1];
}

static const char *entry_prefix[3] = {"model/", "optim/m/", "optim/v/"};

dt_status ckpt_index_build(dt_ckpt_index *idx, const dt_model_config *m, int tp, int dp,
                           int with_optim) {
    memset(idx, 0, sizeof *idx);
    dt_status st = DT_OK;
    dt_param_layout *L = dt_calloc((size_t)tp, sizeof *L);
    if (!L) return DT_ERR_RUNTIME;
    int built = 0;
    for (; built < tp; built++) DT_TRY_GOTO(st, param_layout_init_tp(&L[built], m, built, tp), out);
    int nt = L[0].n_tensors, kinds = with_optim ? 3 : 1;
    idx->n_shards = tp * dp;
    idx->entries = dt_calloc((size_t)(nt * kinds), sizeof *idx->entries);
    if (!idx->entries) {
        st = DT_ERR_RUNTIME;
        goto out;
    }
    idx->n_entries = nt * kinds;
    for (int k = 0; k < kinds; k++)
        for (int i = 0; i < nt; i++) {
            const dt_tensor_spec *t0 = &L[0].tensors[i];
            dt_ckpt_entry *e = &idx->entries[k * nt + i];
            snprintf(e->path, sizeof e->path, "%s%s", entry_prefix[k], t0->name);
            e->ndim = t0->ndim;
            e->global_shape[0] = t0->global_shape[0];
            e->global_shape[1] = t0->global_shape[1];
            e->n_pieces = t0->split == DT_SPLIT_NONE ? 1 : tp;
            e->pieces = dt_calloc((size_t)e->n_pieces, sizeof *e->pieces);
            if (!e->pieces) {
                st = DT_ERR_RUNTIME;
                goto out;
            }
            for (int r = 0; r < e->n_pieces; r++) {
                dt_ckpt_piece *p = &e->pieces[r];
                p->shard = (i % dp) * tp + r; /* DP rank i % dp of TP rank r's group */
                ckpt_tensor_block(&L[r].tensors[i], p->off, p->shape);
            }
        }
out:
    for (int r = 0; r < built; r++) param_layout_free(&L[r]);
    dt_free(L);
    if (st != DT_OK) ckpt_index_free(idx);
    return st;
}

void ckpt_index_free(dt_ckpt_index *idx) {
    for (int i = 0; i < idx->n_entries; i++) dt_free(idx->entries[i].pieces);
    dt_free(idx->entries);
    dt_free(idx->config_yaml);
    memset(idx, 0, sizeof *idx);
}

const dt_ckpt_entry *ckpt_index_find(const dt_ckpt_index *idx, const char *path) {
    for (int i = 0; i < idx->n_entries; i++)
        if (strcmp(idx->entries[i].path, path) == 0) return &idx->entries[i];
    return NULL;
}

int64_t ckpt_block_intersect(const int64_t a_off[2], const int64_t a_shape[2],
                             const int64_t b_off[2], const int64_t b_shape[2], int64_t out_off[2],
                             int64_t out_shape[2]) {
    int64_t n = 1;
    for (int d = 0; d < 2; d++) {
        int64_t lo = a_off[d] > b_off[d] ? a_off[d] : b_off[d];
        int64_t ha = a_off[d] + a_shape[d], hb = b_off[d] + b_shape[d];
        int64_t hi = ha < hb ? ha : hb;
        out_off[d] = lo;
        out_shape[d] = hi > lo ? hi - lo : 0;
        n *= out_shape[d];
    }
    return n;
}

int ckpt_entry_tiles(const dt_ckpt_entry *e, char *why, size_t n) {
    const int64_t zero[2] = {0, 0};
    int64_t area = 0, o[2], s[2];
    for (int i = 0; i < e->n_pieces; i++) {
        const dt_ckpt_piece *p = &e->pieces[i];
        int64_t a = p->shape[0] * p->shape[1];
        if (p->shape[0] < 0 || p->shape[1] < 0 ||
            ckpt_block_intersect(p->off, p->shape, zero, e->global_shape, o, s) != a) {
            snprintf(why, n, "piece %d (rows %lld+%lld, columns %lld+%lld) lies outside the global "
                     "shape [%lld, %lld]", i, (long long)p->off[0], (long long)p->shape[0],
                     (long long)p->off[1], (long long)p->shape[1], (long long)e->global_shape[0],
                     (long long)e->global_shape[1]);
            return 0;
        }
        for (int j = 0; j < i; j++)
            if (ckpt_block_intersect(p->off, p->shape, e->pieces[j].off, e->pieces[j].shape, o,
                                     s) > 0) {
                snprintf(why, n, "pieces %d and %d overlap", j, i);
                return 0;
            }
        area += a;
    }
    if (area != e->global_shape[0] * e->global_shape[1]) {
        snprintf(why, n, "the pieces cover %lld of %lld elements", (long long)area,
                 (long long)(e->global_shape[0] * e->global_shape[1]));
        return 0;
    }
    return 1;
}
