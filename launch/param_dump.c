#include "launch/param_dump.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "util/alloc.h"

/* Copies rank r's slice of tensor t (laid out as in layout Lr) into the global tensor. */
static void place_slice(float *global, const dt_tensor_spec *t, const float *slice) {
    int64_t rows = t->shape[0], cols = t->shape[1], gcols = t->global_shape[1];
    int64_t r0 = t->split == DT_SPLIT_ROWS ? t->split_offset : 0;
    int64_t c0 = t->split == DT_SPLIT_COLS ? t->split_offset : 0;
    for (int64_t r = 0; r < rows; r++)
        memcpy(global + (r0 + r) * gcols + c0, slice + r * cols, (size_t)cols * sizeof(float));
}

static dt_status write_files(const dt_model *m, const float *all, const size_t *counts,
                             const char *dir) {
    int tp = m->layout.tp_size;
    dt_status st = DT_OK;
    char path[4200];
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        dt_error("--dump-params: cannot create '%s': %s", dir, strerror(errno));
        return DT_ERR_INPUT;
    }
    dt_param_layout *layouts = dt_calloc((size_t)tp, sizeof *layouts);
    float *global = NULL;
    FILE *idx = NULL, *bin = NULL;
    if (!layouts) return DT_ERR_RUNTIME;
    for (int r = 0; r < tp; r++) DT_TRY_GOTO(st, param_layout_init_tp(&layouts[r], &m->cfg, r, tp), out);
    snprintf(path, sizeof path, "%s/layout.txt", dir);
    idx = fopen(path, "w");
    snprintf(path, sizeof path, "%s/params.bin", dir);
    bin = fopen(path, "wb");
    if (!idx || !bin) {
        dt_error("--dump-params: cannot write into '%s': %s", dir, strerror(errno));
        st = DT_ERR_INPUT;
        goto out;
    }
    size_t offset = 0;
    for (int i = 0; i < m->layout.n_tensors; i++) {
        const dt_tensor_spec *t0 = &layouts[0].tensors[i];
        size_t numel = (size_t)(t0->global_shape[0] * t0->global_shape[1]);
        global = dt_realloc(global, numel * sizeof(float));
        if (!global) {
            st = DT_ERR_RUNTIME;
            goto out;
        }
        /* a replicated tensor is the same on every rank: rank 0's copy is the tensor */
        const float *base = all;
        for (int r = 0; r < (t0->split == DT_SPLIT_NONE ? 1 : tp); r++) {
            place_slice(global, &layouts[r].tensors[i], base + layouts[r].tensors[i].offset);
            base += counts[r];
        }
        fprintf(idx, "%s %d %lld %lld %zu %zu\n", t0->name, t0->ndim,
                (long long)t0->global_shape[0], (long long)t0->global_shape[1], offset, numel);
        if (fwrite(global, sizeof(float), numel, bin) != numel) {
            dt_error("--dump-params: short write to '%s/params.bin'", dir);
            st = DT_ERR_RUNTIME;
            goto out;
        }
        offset += numel;
    }
out:
    if (idx && fclose(idx) != 0) st = DT_ERR_RUNTIME;
    if (bin && fclose(bin) != 0) st = DT_ERR_RUNTIME;
    dt_free(global);
    for (int r = 0; r < tp; r++) param_layout_free(&layouts[r]);
    dt_free(layouts);
    return st;
}

dt_status param_dump_global(const dt_model *m, dt_groups *g, const char *dir) {
    int tp = g->tp_size;
    size_t *counts = dt_calloc((size_t)tp, sizeof *counts);
    if (!counts) return DT_ERR_RUNTIME;
    size_t total = 0;
    for (int r = 0; r < tp; r++) {
        dt_param_layout L;
        dt_status st = param_layout_init_tp(&L, &m->cfg, r, tp);
        if (st != DT_OK) {
            dt_free(counts);
            return st;
        }
        counts[r] = L.total;
        total += L.total;
        param_layout_free(&L);
    }
    float *all = dt_malloc(total * sizeof(float));
    dt_status st = all ? DT_OK : DT_ERR_RUNTIME;
    if (st == DT_OK) {
        size_t mine = 0;
        for (int r = 0; r < g->tp_rank; r++) mine += counts[r];
        model_params_to_host(m, all + mine);
        st = comm_allgather_f32(&g->tp, all, counts);
    }
    if (st == DT_OK && g->world.rank == 0) st = write_files(m, all, counts, dir);
    dt_free(all);
    dt_free(counts);
    return st;
}
