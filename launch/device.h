/* Choosing where a command runs the model (train.device, train.precision): the compute backend,
 * the collectives that move its buffers, and on a GPU the device this rank binds (its local
 * rank on the node: one GPU per rank). Every rank of the world takes the same kind of backend:
 * the choice is agreed over the world, and an error on one rank is an error on all. */
#ifndef DT_DEVICE_H
#define DT_DEVICE_H

#include "dist/buf_coll.h"
#include "dist/world.h"
#include "launch/config.h"
#include "model/backend.h"

typedef struct dt_device_choice {
    const dt_backend *be;
    const dt_buf_coll *coll;
    int gpu;          /* 1: the CUDA backend */
    int cuda_device;  /* the CUDA device bound (the local rank), -1 on the CPU */
    char desc[256];   /* "cpu" or the device's name, compute capability and memory */
} dt_device_choice;

/* train.device auto: the GPU when this build has CUDA (and NCCL) and every rank sees a usable
 * device, else the CPU. cpu: the CPU (train.precision bf16 is refused: the CPU trains in fp32).
 * cuda: the GPU or an error naming the reason (a build without CUDA, no usable device on a host,
 * more ranks on a node than devices). Collective over `world`. DT_ERR_INPUT for a config that
 * cannot run here, DT_ERR_RUNTIME for a device that fails to initialise. `source` names the
 * config file in messages. */
dt_status device_select(dt_device_choice *out, const dt_config *c, const dt_world *w,
                        dt_comm *world);
/* Releases the device (after every backend buffer was freed). */
void device_release(dt_device_choice *d);
/* The device's peak dense FLOP/s for the model's matrix products at `precision` (bf16 tensor
 * cores, or fp32 without TF32), from a table of known GPUs by name (H100 SXM/PCIe, H200, A100);
 * 0 when unknown or on the CPU (then no MFU is reported). */
double device_peak_flops(const dt_device_choice *d, dt_precision precision);
/* The most bytes of backend memory in use so far (0 on the CPU). */
size_t device_bytes_peak(const dt_device_choice *d);
/* Device memory in use now on this rank's GPU, all of it (the CUDA context, cuBLAS, NCCL and any
 * other process included); 0 on the CPU. */
size_t device_bytes_used(const dt_device_choice *d);

#endif
