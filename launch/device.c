#include "launch/device.h"

#include <stdio.h>
#include <string.h>

#include "dist/comm.h"

#ifdef DIFFTRAIN_HAVE_CUDA
#include "model/cuda/cuda_ops.h"
#include "model/cuda/cuda_probe.h"
#endif
#ifdef DIFFTRAIN_HAVE_NCCL
#include "dist/nccl_buf_coll.h"
#endif

/* Usable CUDA devices on this rank's node: 0 in a build without CUDA or on any CUDA error. */
static int local_devices(void) {
#ifdef DIFFTRAIN_HAVE_CUDA
    return cuda_probe_device_count();
#else
    return 0;
#endif
}

static int build_has_gpu_path(void) {
#if defined(DIFFTRAIN_HAVE_CUDA) && defined(DIFFTRAIN_HAVE_NCCL)
    return 1;
#else
    return 0;
#endif
}

static void choose_cpu(dt_device_choice *out) {
    out->be = dt_backend_cpu();
    out->coll = buf_coll_host();
    out->gpu = 0;
    out->cuda_device = -1;
    snprintf(out->desc, sizeof out->desc, "cpu");
}

/* This rank's reason why it cannot run on a GPU, or DT_OK. */
static dt_status gpu_blocker(const dt_config *c, const dt_world *w, int devices, int report) {
    if (!build_has_gpu_path()) {
        if (report)
            dt_error("%s: train.device: cuda, but this build of difftrain has no GPU path (it "
                     "was built without %s; see README \"GPU\")", c->source,
#ifdef DIFFTRAIN_HAVE_CUDA
                     "NCCL"
#else
                     "the CUDA toolkit"
#endif
            );
        return DT_ERR_INPUT;
    }
    if (devices == 0) {
        if (report)
            dt_error("%s: train.device: cuda, but rank %d on host %s sees no usable CUDA device",
                     c->source, w->rank, w->host);
        return DT_ERR_INPUT;
    }
    if (w->local_rank >= devices) {
        if (report)
            dt_error("%s: train.device: cuda: host %s runs %d ranks but has %d CUDA device%s "
                     "(one GPU per rank: start at most %d ranks per node)", c->source, w->host,
                     w->local_size, devices, devices == 1 ? "" : "s", devices);
        return DT_ERR_INPUT;
    }
    return DT_OK;
}

#ifdef DIFFTRAIN_HAVE_NCCL
static dt_status bind_gpu(dt_device_choice *out, const dt_config *c, const dt_world *w) {
    int bf16 = c->train.precision == DT_PRECISION_BF16;
    if (cuda_backend_init(w->local_rank, bf16) != 0) {
        dt_error("rank %d on host %s: cannot initialise CUDA device %d", w->rank, w->host,
                 w->local_rank);
        return DT_ERR_RUNTIME;
    }
    DT_TRY(buf_coll_nccl_bind(cuda_stream_handle(), cuda_weights_written));
    out->be = dt_backend_cuda();
    out->coll = buf_coll_nccl();
    out->gpu = 1;
    out->cuda_device = w->local_rank;
    char name[200];
    if (cuda_probe_describe(w->local_rank, name, sizeof name) != 0) snprintf(name, sizeof name, "?");
    snprintf(out->desc, sizeof out->desc, "cuda:%d %s", w->local_rank, name);
    return DT_OK;
}
#endif

dt_status device_select(dt_device_choice *out, const dt_config *c, const dt_world *w,
                        dt_comm *world) {
    memset(out, 0, sizeof *out);
    dt_device want = c->train.device;
    int devices = want == DT_DEVICE_CPU ? 0 : local_devices();
    /* every rank must be able to take the GPU for the job to take it: a MAX of "unable" */
    int64_t unable = want == DT_DEVICE_CPU || gpu_blocker(c, w, devices, 0) != DT_OK;
    DT_TRY(comm_allreduce_i64(world, &unable, 1, DT_REDUCE_MAX));
    int able = !unable;
    if (want == DT_DEVICE_CUDA && !able) {
        /* one message per host: its first rank, or the first rank beyond its devices */
        int report = w->local_rank == 0 || w->local_rank == devices;
        dt_status st = gpu_blocker(c, w, devices, report);
        if (st == DT_OK) st = DT_ERR_INPUT; /* another rank reported it */
        return dist_agree(world, st);
    }
    if (!able) {
        if (c->train.precision == DT_PRECISION_BF16) {
            if (w->rank == 0)
                dt_error("%s: train.precision: bf16 needs the GPU backend (train.device %s found "
                         "none usable); the CPU backend trains in fp32", c->source,
                         want == DT_DEVICE_CPU ? "cpu" : "auto");
            return DT_ERR_INPUT;
        }
        choose_cpu(out);
        return DT_OK;
    }
#ifdef DIFFTRAIN_HAVE_NCCL
    return dist_agree(world, bind_gpu(out, c, w));
#else
    return DT_ERR_RUNTIME; /* unreachable: able implies the GPU path is built */
#endif
}

void device_release(dt_device_choice *d) {
#ifdef DIFFTRAIN_HAVE_NCCL
    if (d->gpu) {
        buf_coll_nccl_unbind();
        cuda_backend_shutdown();
    }
#endif
    memset(d, 0, sizeof *d);
}

size_t device_bytes_peak(const dt_device_choice *d) {
#ifdef DIFFTRAIN_HAVE_CUDA
    if (d->gpu) return cuda_bytes_peak();
#endif
    (void)d;
    return 0;
}

size_t device_bytes_used(const dt_device_choice *d) {
#ifdef DIFFTRAIN_HAVE_CUDA
    if (d->gpu) return cuda_device_bytes_used();
#endif
    (void)d;
    return 0;
}

/* Vendor datasheet peaks, dense (no sparsity), per GPU. */
static const struct {
    const char *name, *variant; /* substrings of the device name; variant NULL = any */
    double bf16, fp32;          /* TFLOP/s */
} known_peaks[] = {
    {"H100", "PCIe", 756.0, 51.0},
    {"H100", NULL, 989.4, 66.9}, /* SXM */
    {"H200", NULL, 989.4, 66.9},
    {"A100", NULL, 312.0, 19.5},
};

double device_peak_flops(const dt_device_choice *d, dt_precision precision) {
    if (!d->gpu) return 0;
    for (size_t i = 0; i < sizeof known_peaks / sizeof known_peaks[0]; i++) {
        if (!strstr(d->desc, known_peaks[i].name)) continue;
        if (known_peaks[i].variant && !strstr(d->desc, known_peaks[i].variant)) continue;
        return 1e12 * (precision == DT_PRECISION_BF16 ? known_peaks[i].bf16 : known_peaks[i].fp32);
    }
    return 0;
}
