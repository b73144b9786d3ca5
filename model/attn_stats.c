/* Attention-map statistics (see attn_stats.h). Everything is double: the maps come from fp32 q
 * and k but are recomputed in double so that sums like span + rest == 1 - lambda hold to ~1e-15
 * and a check can tell a wrong map from rounding. */
#include "model/attn_stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void attn_softmax(double *p, const double *s, int n) {
    double mx = s[0], sum = 0;
    for (int i = 1; i < n; i++)
        if (s[i] > mx) mx = s[i];
    for (int i = 0; i < n; i++) sum += p[i] = exp(s[i] - mx);
    for (int i = 0; i < n; i++) p[i] /= sum;
}

static double abs_sum(const double *a, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += fabs(a[i]);
    return s;
}

double attn_entropy(const double *a, int n) {
    double z = abs_sum(a, n), h = 0;
    if (z <= 0) return 0;
    for (int i = 0; i < n; i++) {
        double p = fabs(a[i]) / z;
        if (p > 0) h -= p * log(p);
    }
    return h;
}

static int cmp_asc(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static int cmp_desc(const void *x, const void *y) { return cmp_asc(y, x); }

double attn_gini(const double *a, int n, double *scratch) {
    double z = abs_sum(a, n), g = 0;
    if (z <= 0) return 0;
    for (int i = 0; i < n; i++) scratch[i] = fabs(a[i]);
    qsort(scratch, (size_t)n, sizeof *scratch, cmp_asc);
    /* k is 1-based in the formula: element i has k = i + 1, weight (n - i - 1/2) / n */
    for (int i = 0; i < n; i++) g += scratch[i] / z * ((double)n - i - 0.5) / n;
    return 1 - 2 * g;
}

double attn_cosine_subset(const double *x, const double *y, const int *idx, int m) {
    double xy = 0, xx = 0, yy = 0;
    for (int i = 0; i < m; i++) {
        double a = x[idx[i]], b = y[idx[i]];
        xy += a * b;
        xx += a * a;
        yy += b * b;
    }
    return xx > 0 && yy > 0 ? xy / sqrt(xx * yy) : 0;
}

double attn_kl_subset(const double *p, const double *q, const int *idx, int m) {
    double zp = 0, zq = 0, kl = 0;
    for (int i = 0; i < m; i++) {
        zp += p[idx[i]];
        zq += q[idx[i]];
    }
    if (zp <= 0 || zq <= 0) return 0;
    for (int i = 0; i < m; i++) {
        double a = p[idx[i]] / zp, b = q[idx[i]] / zq;
        if (a <= 0) continue;
        if (b <= 0) return INFINITY;
        kl += a * log(a / b);
    }
    /* each term's rounding can leave a tiny negative total for equal maps; KL is >= 0 */
    return kl > 0 ? kl : 0;
}

double attn_sink_mass(const double *a, int n) { return n > 0 ? a[0] : 0; }

void attn_span_mass(double out[3], const double *a, int n, int lo, int hi) {
    out[0] = out[1] = out[2] = 0;
    for (int i = 0; i < n; i++) {
        if (i >= lo && i < hi) {
            out[0] += a[i];
        } else {
            out[1] += fabs(a[i]);
            out[2] += a[i];
        }
    }
}

void attn_magnitudes(double out[3], double *x, size_t n, size_t k) {
    out[0] = out[1] = out[2] = 0;
    if (n == 0) return;
    for (size_t i = 0; i < n; i++) x[i] = fabs(x[i]);
    qsort(x, n, sizeof *x, cmp_desc);
    out[0] = x[0];
    out[1] = x[(k < n ? k : n) - (k > 0)];
    out[2] = n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}
