/* The fused attention's shared memory against the device's: the limit a block may have after
 * the opt-in (227 KiB on an H100, 163 on an A100, 99 on an L40S or RTX 4090), which decides the
 * kernels and stages each op runs (flash_forward_plan, flash_backward_plan), and the opt-in of
 * each kernel that needs more than the default 48 KiB. */
#include <stdio.h>
#include <stdlib.h>

#include "model/cuda/cuda_common.cuh"
#include "model/cuda/flash_core.cuh"
#include "model/cuda/flash_test.h"

#define FLASH_MAX_DEVICES 64

static size_t g_smem_cap; /* flash_test.h: 0 none */

extern "C" void cuda_flash_test_smem_limit(size_t bytes) { g_smem_cap = bytes; }

static int flash_current_device(void) {
    int dev = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    if (dev < 0 || dev >= FLASH_MAX_DEVICES) {
        fprintf(stderr, "difftrain: error: CUDA fused attention: device %d (at most %d)\n", dev,
                FLASH_MAX_DEVICES);
        fflush(stderr);
        abort();
    }
    return dev;
}

/* The limit on device dev: its opt-in (asked once), or the test cap where lower */
static size_t flash_device_limit(int dev) {
    static size_t optin[FLASH_MAX_DEVICES]; /* 0: not asked yet */
    if (!optin[dev]) {
        cudaDeviceProp p;
        CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
        optin[dev] = p.sharedMemPerBlockOptin;
    }
    return g_smem_cap && g_smem_cap < optin[dev] ? g_smem_cap : optin[dev];
}

size_t flash_smem_limit(void) { return flash_device_limit(flash_current_device()); }

extern "C" size_t cuda_flash_smem_limit(void) { return flash_smem_limit(); }

void flash_smem_prepare(const void *kernel, size_t bytes, const char *name) {
    const int dev = flash_current_device();
    const size_t limit = flash_device_limit(dev);
    if (bytes > limit) { /* a plan's mistake: the plans choose only kernels that fit */
        fprintf(stderr, "difftrain: error: CUDA fused attention: %s needs %zu bytes of shared "
                "memory a block, more than the %zu the device allows\n", name, bytes, limit);
        fflush(stderr);
        abort();
    }
    if (bytes <= 48 * 1024) return;
    /* the (device, kernel) pairs opted in, each at its kernel's only size */
    static struct {
        int dev;
        const void *kernel;
    } done[512];
    static int n_done;
    for (int i = 0; i < n_done; i++)
        if (done[i].dev == dev && done[i].kernel == kernel) return;
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)bytes));
    if (n_done < (int)(sizeof done / sizeof done[0])) done[n_done++] = {dev, kernel};
}
