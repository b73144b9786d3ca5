/* Per-head gain of model.subln: scalar (out_h = s_h * inp_h). The backward parallelises over
 * heads, so each thread owns whole columns: ds[h] needs no atomics and dinp may overwrite dout
 * (every element is read before it is written, by the same thread). ds is reduced over all
 * N rows in double: it is a sum of up to B*T*w products. */
#include "model/cpu/cpu_ops.h"

void cpu_head_scale_forward(float *out, const float *inp, const float *s, int N, int H, int w) {
    const size_t C = (size_t)H * w;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *y = out + (size_t)n * C;
        for (int h = 0; h < H; h++)
            for (int i = 0; i < w; i++) y[h * w + i] = x[h * w + i] * s[h];
    }
}

void cpu_head_scale_backward(float *dinp, float *ds, const float *dout, const float *inp,
                             const float *s, int N, int H, int w) {
    const size_t C = (size_t)H * w;
#pragma omp parallel for schedule(static)
    for (int h = 0; h < H; h++) {
        double acc = 0;
        const float sh = s[h];
        for (int n = 0; n < N; n++) {
            const size_t o = (size_t)n * C + (size_t)h * w;
            for (int i = 0; i < w; i++) {
                float g = dout[o + i];
                acc += (double)g * inp[o + i];
                dinp[o + i] = g * sh;
            }
        }
        ds[h] += (float)acc;
    }
}
