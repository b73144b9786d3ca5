/* How a test asks whether the current device can run a family of test kernels (wgmma_test.cu,
 * mbarrier_test.cu): the device's compute capability, then what the device code that actually
 * runs on it was built with, which only a kernel can report. Internal to those tests. */
#ifndef DT_CUDA_DEVICE_CODE_PROBE_CUH
#define DT_CUDA_DEVICE_CODE_PROBE_CUH

#include <stdio.h>

#include "model/cuda/cuda_common.cuh"

/* The current device's properties into p: 1, or 0 with the reason in why (len bytes). */
static inline int probe_device_props(cudaDeviceProp *p, char *why, int len) {
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(p, dev) != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(why, (size_t)len, "no CUDA device properties");
        return 0;
    }
    return 1;
}

/* Launches flag_kernel(flag) on one thread, flag an int set to 0 before: returns the value it
 * wrote, or -1 with the reason in why (len bytes) when the build has no device code for this
 * device at all (the launch fails). */
template <typename Kernel>
static int probe_device_flag(Kernel flag_kernel, char *why, int len) {
    int *flag = NULL, host = 0;
    CUDA_CHECK(cudaMalloc(&flag, sizeof(int)));
    CUDA_CHECK(cudaMemset(flag, 0, sizeof(int)));
    flag_kernel<<<1, 1>>>(flag);
    const cudaError_t launch = cudaGetLastError();
    if (launch == cudaSuccess)
        CUDA_CHECK(cudaMemcpy(&host, flag, sizeof(int), cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaFree(flag));
    if (launch != cudaSuccess) {
        snprintf(why, (size_t)len, "no device code for this device in the build (%s)",
                 cudaGetErrorString(launch));
        return -1;
    }
    return host;
}

#endif
