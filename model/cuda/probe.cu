#include <cuda_runtime.h>
#include <stdio.h>

#include "model/cuda/cuda_probe.h"

extern "C" int cuda_probe_device_count(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* clear the sticky error so later calls start clean */
        return 0;
    }
    return n;
}

extern "C" int cuda_probe_describe(int dev, char *buf, int len) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, dev) != cudaSuccess) {
        (void)cudaGetLastError();
        return -1;
    }
    snprintf(buf, (size_t)len, "%s (sm_%d%d, %.0f GiB)", p.name, p.major, p.minor,
             (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    return 0;
}

__global__ void probe_fill(float *x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = 0.5f * (float)i;
}

extern "C" int cuda_probe_roundtrip(int dev) {
    const int n = 1000;
    float host[1000];
    float *x = NULL;
    int ok = -1;
    if (cudaSetDevice(dev) != cudaSuccess || cudaMalloc(&x, n * sizeof(float)) != cudaSuccess)
        goto done;
    probe_fill<<<(n + 255) / 256, 256>>>(x, n);
    if (cudaGetLastError() != cudaSuccess) goto done;
    if (cudaMemcpy(host, x, sizeof host, cudaMemcpyDeviceToHost) != cudaSuccess) goto done;
    ok = 0;
    for (int i = 0; i < n; i++)
        if (host[i] != 0.5f * (float)i) ok = -1;
done:
    if (x) cudaFree(x);
    (void)cudaGetLastError();
    return ok;
}
