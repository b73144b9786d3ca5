/* The device probe of model/cuda/cuda_probe.h for the CUDA host emulator (a test tool; it
 * replaces model/cuda/probe.cu, whose job, finding a real GPU and driver, has no emulated
 * counterpart): one device, described by the emulated cudaGetDeviceProperties, and a round trip
 * through emulated device memory. */
#include <stdio.h>

#include "cuda_runtime.h"
#include "model/cuda/cuda_probe.h"

extern "C" int cuda_probe_device_count(void) {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

extern "C" int cuda_probe_describe(int dev, char *buf, int len) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, dev) != cudaSuccess) return -1;
    snprintf(buf, (size_t)len, "%s (sm_%d%d, %.0f GiB)", p.name, p.major, p.minor,
             (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    return 0;
}

extern "C" int cuda_probe_roundtrip(int dev) {
    float host[1000], back[1000];
    for (int i = 0; i < 1000; i++) host[i] = 0.5f * (float)i;
    float *x = NULL;
    int ok = -1;
    if (cudaSetDevice(dev) == cudaSuccess && cudaMalloc(&x, sizeof host) == cudaSuccess &&
        cudaMemcpy(x, host, sizeof host, cudaMemcpyHostToDevice) == cudaSuccess &&
        cudaMemcpy(back, x, sizeof back, cudaMemcpyDeviceToHost) == cudaSuccess) {
        ok = 0;
        for (int i = 0; i < 1000; i++)
            if (back[i] != host[i]) ok = -1;
    }
    if (x) cudaFree(x);
    (void)cudaGetLastError();
    return ok;
}
