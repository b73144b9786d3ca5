/* The DIFF V1 lambda reparameterisation (SPEC sections 2 and 3):
 * lambda = exp(lq1 . lk1) - exp(lq2 . lk2) + lambda_init. One scalar per layer, so this runs
 * serially; the dot products are accumulated in double (the vectors are tiny and the exp
 * amplifies any error of the exponent). */
#include <math.h>

#include "model/cpu/cpu_ops.h"

static double difflambda_dot(const float *a, const float *b, int d) {
    double s = 0.0;
    for (int i = 0; i < d; i++) s += (double)a[i] * b[i];
    return s;
}

void cpu_difflambda_forward(float *lambda, const float *lq1, const float *lk1, const float *lq2,
                            const float *lk2, float lambda_init, int d) {
    double a1 = difflambda_dot(lq1, lk1, d), a2 = difflambda_dot(lq2, lk2, d);
    *lambda = (float)(exp(a1) - exp(a2) + (double)lambda_init);
}

void cpu_difflambda_backward(float *dlq1, float *dlk1, float *dlq2, float *dlk2,
                             const float *dlambda, const float *lq1, const float *lk1,
                             const float *lq2, const float *lk2, int d) {
    /* dlambda/da1 = e^{a1}, dlambda/da2 = -e^{a2}; da1/dlq1 = lk1, and so on. */
    double dl = *dlambda;
    double g1 = dl * exp(difflambda_dot(lq1, lk1, d));
    double g2 = -dl * exp(difflambda_dot(lq2, lk2, d));
    for (int i = 0; i < d; i++) {
        dlq1[i] += (float)(g1 * lk1[i]);
        dlk1[i] += (float)(g1 * lq1[i]);
        dlq2[i] += (float)(g2 * lk2[i]);
        dlk2[i] += (float)(g2 * lq2[i]);
    }
}
