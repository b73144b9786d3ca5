/* Probing for CUDA devices. Any CUDA error (no driver, no device, a driver older than the
 * runtime, a device in a bad state) counts as "no device": the probe never aborts. */
#ifndef DT_CUDA_PROBE_H
#define DT_CUDA_PROBE_H

#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable CUDA devices; 0 on any error. */
int cuda_probe_device_count(void);
/* Writes "NAME (sm_XY, N GiB)" of device `dev` into buf; returns 0, or -1 on any error. */
int cuda_probe_describe(int dev, char *buf, int len);
/* Allocates, fills and reads back a small buffer on device `dev`; returns 0 when the values
 * round-trip, -1 otherwise (the smoke test that the device really computes). */
int cuda_probe_roundtrip(int dev);

#ifdef __cplusplus
}
#endif

#endif
