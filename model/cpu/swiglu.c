/* SwiGLU gate: h = silu(g) * u = g * sigmoid(g) * u, elementwise over rows x cols; h and dh
 * dense, g, u and their gradients with rows ld elements apart (model/backend.h). */
#include <math.h>

#include "model/cpu/cpu_ops.h"

#define CPU_SWIGLU_PAR_MIN 16384

/* 1 / (1 + exp(-x)) is safe at both ends in float: exp(-x) overflows to inf for x < -88,
 * giving exactly 0, and underflows to 0 for large x, giving 1. No NaN is possible. */
static inline float swiglu_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

void cpu_swiglu_forward(float *h, const float *g, const float *u, size_t rows, size_t cols,
                        size_t ld) {
#pragma omp parallel for schedule(static) if (rows * cols >= CPU_SWIGLU_PAR_MIN)
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++) {
            float x = g[r * ld + c];
            h[r * cols + c] = x * swiglu_sigmoid(x) * u[r * ld + c];
        }
}

/* d silu(x)/dx = s + x s (1 - s) = s (1 + x (1 - s)), s = sigmoid(x).
 * Inputs are read into locals before writing, so dg or du may alias g or u elementwise. */
void cpu_swiglu_backward(float *dg, float *du, const float *dh, const float *g, const float *u,
                         size_t rows, size_t cols, size_t ld) {
#pragma omp parallel for schedule(static) if (rows * cols >= CPU_SWIGLU_PAR_MIN)
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++) {
            size_t i = r * ld + c;
            float x = g[i], up = u[i], d = dh[r * cols + c];
            float s = swiglu_sigmoid(x);
            dg[i] = d * up * s * (1.0f + x * (1.0f - s));
            du[i] = d * x * s;
        }
}
