/* Rotary position embedding, GPT-J interleaved pairs (SPEC section 2): pair i of a head is
 * (x[2i], x[2i+1]), rotated by angle pos * theta^(-2i/d).
 *
 * Frequencies, angles, cos and sin are computed in double and only then rounded to float, so a
 * GPU kernel that does the same gets bit-identical cos/sin; float angles would lose several bits
 * at large positions (pos ~ 1e4 .. 1e5 at 64K context). */
#include <math.h>

#include "model/cpu/cpu_ops.h"

/* Rotates every pair of every head by sign * angle; sign = -1 is the backward (the transpose,
 * and inverse, of a rotation). out may equal inp: each pair is read before it is written. */
static void rope_rotate(float *out, const float *inp, int B, int T, int n_heads, int d,
                        float theta, int pos0, double sign) {
    int half = d / 2;
    size_t C = (size_t)n_heads * d;
    double freq[half > 0 ? half : 1]; /* theta^(-2i/d) */
    for (int i = 0; i < half; i++) freq[i] = pow((double)theta, -2.0 * i / d);
    /* Parallel over positions: each thread builds the cos/sin table of its position once and
     * applies it to every sequence and head. */
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        float cs[half > 0 ? half : 1], sn[half > 0 ? half : 1];
        double pos = (double)pos0 + t;
        for (int i = 0; i < half; i++) {
            double a = pos * freq[i];
            cs[i] = (float)cos(a);
            sn[i] = (float)(sign * sin(a));
        }
        for (int b = 0; b < B; b++) {
            size_t row = ((size_t)b * T + t) * C;
            for (int h = 0; h < n_heads; h++) {
                const float *x = inp + row + (size_t)h * d;
                float *o = out + row + (size_t)h * d;
                for (int i = 0; i < half; i++) {
                    float x0 = x[2 * i], x1 = x[2 * i + 1];
                    o[2 * i] = x0 * cs[i] - x1 * sn[i];
                    o[2 * i + 1] = x1 * cs[i] + x0 * sn[i];
                }
                if (d & 1) o[d - 1] = x[d - 1]; /* an odd head width leaves its last channel */
            }
        }
    }
}

void cpu_rope_forward(float *out, const float *inp, int B, int T, int n_heads, int d,
                      float theta, int pos0) {
    rope_rotate(out, inp, B, T, n_heads, d, theta, pos0, 1.0);
}

void cpu_rope_backward(float *dinp, const float *dout, int B, int T, int n_heads, int d,
                       float theta, int pos0) {
    rope_rotate(dinp, dout, B, T, n_heads, d, theta, pos0, -1.0);
}
