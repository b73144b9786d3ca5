/* SwiGLU gate: h = silu(g) * u = g * sigmoid(g) * u, elementwise. */
#include <math.h>

#include "model/cpu/cpu_ops.h"

#define CPU_SWIGLU_PAR_MIN 16384

/* 1 / (1 + exp(-x)) is safe at both ends in float: exp(-x) overflows to inf for x < -88,
 * giving exactly 0, and underflows to 0 for large x, giving 1. No NaN is possible. */
static inline float swiglu_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

void cpu_swiglu_forward(float *h, const float *g, const float *u, size_t n) {
#pragma omp parallel for schedule(static) if (n >= CPU_SWIGLU_PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float x = g[i];
        h[i] = x * swiglu_sigmoid(x) * u[i];
    }
}

/* d silu(x)/dx = s + x s (1 - s) = s (1 + x (1 - s)), s = sigmoid(x).
 * Inputs are read into locals before writing, so dg or du may alias g, u or dh elementwise. */
void cpu_swiglu_backward(float *dg, float *du, const float *dh, const float *g, const float *u,
                         size_t n) {
#pragma omp parallel for schedule(static) if (n >= CPU_SWIGLU_PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float x = g[i], up = u[i], d = dh[i];
        float s = swiglu_sigmoid(x);
        dg[i] = d * up * s * (1.0f + x * (1.0f - s));
        du[i] = d * x * s;
    }
}
