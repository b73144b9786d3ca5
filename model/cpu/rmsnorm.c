/* RMSNorm: out = inp * rstd * weight, rstd = 1 / sqrt(mean(inp^2) + eps), per row of C.
 * Row reductions are accumulated in double: the CPU backend is the oracle that the CUDA backend
 * is checked against, so it should carry as little rounding error as is cheap. */
#include <math.h>
#include <stddef.h>

#include "model/cpu/cpu_ops.h"

/* One row: o = x * rstd * weight (the forward of both entry points, so their bits agree). */
static void rmsnorm_row(float *o, float *rstd, const float *x, const float *weight, int C,
                        float eps) {
    double ss = 0;
    for (int i = 0; i < C; i++) ss += (double)x[i] * x[i];
    float r = (float)(1.0 / sqrt(ss / C + (double)eps));
    *rstd = r;
    if (weight)
        for (int i = 0; i < C; i++) o[i] = x[i] * r * weight[i];
    else
        for (int i = 0; i < C; i++) o[i] = x[i] * r;
}

void cpu_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N,
                         int C, float eps) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        rmsnorm_row(out + (size_t)n * C, rstd + n, inp + (size_t)n * C, weight, C, eps);
}

void cpu_residual_rmsnorm_forward(float *y, float *out, float *rstd, const float *a,
                                  const float *b, const float *weight, int N, int C, float eps) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float *yr = y + (size_t)n * C; /* (C), written before it is read: y may alias a or b */
        const float *ar = a + (size_t)n * C, *br = b + (size_t)n * C;
        for (int i = 0; i < C; i++) yr[i] = ar[i] + br[i];
        rmsnorm_row(out + (size_t)n * C, rstd + n, yr, weight, C, eps);
    }
}

/* dweight reduces over rows, so it is computed in a second pass in which threads own column
 * blocks and walk the rows in order (double accumulators, one add into dweight per column):
 * race-free and bit-identical for any thread count. */
#define CPU_RMSNORM_COLS 64

void cpu_rmsnorm_backward(float *dinp, float *dinp_copy, float *dweight, const float *dout,
                          const float *inp, const float *weight, const float *rstd, int N, int C) {
    /* With xhat = x * r and g = dout * weight:  dx = r * (g - xhat * mean(g * xhat)). */
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;  /* (C) */
        const float *dy = dout + (size_t)n * C; /* (C) */
        float *dx = dinp + (size_t)n * C;       /* (C) */
        float *copy = dinp_copy ? dinp_copy + (size_t)n * C : NULL; /* (C) */
        double r = rstd[n];
        double dot = 0; /* sum_i g_i * x_i */
        for (int i = 0; i < C; i++) dot += (double)dy[i] * (weight ? weight[i] : 1.0f) * x[i];
        /* mean(g * xhat) * r = dot * r^2 / C */
        double coef = dot * r * r / C;
        for (int i = 0; i < C; i++) {
            double g = (double)dy[i] * (weight ? weight[i] : 1.0f);
            dx[i] += (float)(r * (g - x[i] * coef));
            if (copy) copy[i] = dx[i];
        }
    }
    if (!dweight) return;
    int nblocks = (C + CPU_RMSNORM_COLS - 1) / CPU_RMSNORM_COLS;
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nblocks; blk++) {
        int j0 = blk * CPU_RMSNORM_COLS;
        int j1 = j0 + CPU_RMSNORM_COLS < C ? j0 + CPU_RMSNORM_COLS : C;
        double acc[CPU_RMSNORM_COLS] = {0};
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C;
            const float *dy = dout + (size_t)n * C;
            double r = rstd[n];
            for (int j = j0; j < j1; j++) acc[j - j0] += (double)dy[j] * x[j] * r;
        }
        for (int j = j0; j < j1; j++) dweight[j] += (float)acc[j - j0];
    }
}
