/* The DIFF V2 combine (SPEC section 4): out_h = attn_{2h} - sigmoid(l_h) attn_{2h+1}, per token
 * row; the attention over 2H q-heads itself is cpu_attention_forward. Rows are independent, so
 * both directions parallelise over rows with no reduction (bit-identical for any thread count). */
#include <math.h>

#include "model/cpu/cpu_ops.h"

/* sigmoid without overflow: exp only ever sees a non-positive argument. */
static float diffv2_sigmoid(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

void cpu_diffv2_combine_forward(float *out, const float *attn, const float *lam_logit, int N,
                                int H, int d) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        for (int h = 0; h < H; h++) {
            const float *a0 = attn + (size_t)n * 2 * H * d + (size_t)2 * h * d; /* (d) */
            const float *a1 = a0 + d;                                           /* (d) */
            float *y = out + (size_t)n * H * d + (size_t)h * d;                 /* (d) */
            float lam = diffv2_sigmoid(lam_logit[(size_t)n * H + h]);
            for (int e = 0; e < d; e++) y[e] = a0[e] - lam * a1[e];
        }
    }
}

void cpu_diffv2_combine_backward(float *dattn, float *dlam_logit, const float *dout,
                                 const float *attn, const float *lam_logit, int N, int H, int d) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        for (int h = 0; h < H; h++) {
            const float *a1 = attn + (size_t)n * 2 * H * d + (size_t)(2 * h + 1) * d; /* (d) */
            const float *dy = dout + (size_t)n * H * d + (size_t)h * d;               /* (d) */
            float *da0 = dattn + (size_t)n * 2 * H * d + (size_t)2 * h * d;           /* (d) */
            float *da1 = da0 + d;                                                     /* (d) */
            float lam = diffv2_sigmoid(lam_logit[(size_t)n * H + h]);
            double dot = 0.0; /* dout . attn_odd */
            for (int e = 0; e < d; e++) {
                dot += (double)dy[e] * a1[e];
                da0[e] = dy[e];
                da1[e] = -lam * dy[e];
            }
            dlam_logit[(size_t)n * H + h] = (float)(-(double)lam * (1.0 - lam) * dot);
        }
    }
}
