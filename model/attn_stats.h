/* Statistics of attention maps for `difftrain analyze` (README "Analysis"): pure functions on
 * one row of an attention map (the weights a query position gives to positions 0..n-1), in
 * double. A map may be signed (a differential map P1 - lambda P2): the distribution-shaped
 * statistics then use |a| normalised to sum 1. No allocation, no errors, no global state. */
#ifndef DT_ATTN_STATS_H
#define DT_ATTN_STATS_H

#include <stddef.h>

/* p = softmax(s) over n scores, in double, max-subtracted (n >= 1). */
void attn_softmax(double *p /* (n) */, const double *s /* (n) */, int n);

/* Shannon entropy (natural log) of |a| / sum|a|, in [0, log n]; 0 when a is all zero. */
double attn_entropy(const double *a, int n);

/* Gini sparsity index (Hurley & Rickard 2009) of c = |a|: with c sorted ascending c_(1..n),
 *   G = 1 - 2 sum_k (c_(k) / ||c||_1) (n - k + 1/2) / n,
 * in [0, 1 - 1/n]: 0 for a uniform map, (n-1)/n for a one-hot one; 0 when a is all zero.
 * Sorts a copy in scratch (n). */
double attn_gini(const double *a, int n, double *scratch /* (n) */);

/* Cosine similarity of x and y restricted to the positions idx[0..m-1]; 0 when either restricted
 * vector is all zero. */
double attn_cosine_subset(const double *x, const double *y, const int *idx, int m);

/* KL(p' || q') in nats of p and q (non-negative) restricted to idx[0..m-1] and renormalised to sum
 * 1 there: sum p' log(p'/q'), terms with p' = 0 counting 0. +INFINITY when some p' > 0 has
 * q' = 0; 0 when either restriction sums to 0. */
double attn_kl_subset(const double *p, const double *q, const int *idx, int m);

/* The attention-sink mass: the (signed) weight on the first position, a[0]. */
double attn_sink_mass(const double *a, int n);

/* Mass of a on the span [lo, hi) and on the rest of [0, n): out[0] = sum over the span of a,
 * out[1] = sum over the rest of |a|, out[2] = sum over the rest of a (signed). The span is
 * clipped to [0, n). */
void attn_span_mass(double out[3], const double *a, int n, int lo, int hi);

/* Magnitude statistics of n values: out[0] = the largest |x|, out[1] = the k-th largest |x|
 * (the smallest when n < k), out[2] = the median |x| (the mean of the two middle ones for even
 * n). Overwrites x with |x| sorted descending. All zero for n == 0. */
void attn_magnitudes(double out[3], double *x, size_t n, size_t k);

#endif
