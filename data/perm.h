/* Seeded permutations of [0, n) evaluated one index at a time.
 *
 * perm_apply(key, n, i) is a bijection of [0, n) for each (key, n), computed in O(1) memory and
 * O(1) expected time, with no table: a 6-round balanced Feistel network on the smallest
 * power-of-four domain 2^k >= n (k even, at least 2), with cycle walking (re-apply until the
 * value falls below n). The domain is less than 4n, so fewer than 4 applications are expected.
 * The data loader uses it so that a run's data position is one integer (DESIGN: Token data). */
#ifndef DT_PERM_H
#define DT_PERM_H

#include <stdint.h>

/* The key of epoch `epoch` of a stream seeded with `seed` (rng_key/rng_mix64 of util/rng.h). */
uint64_t perm_key(uint64_t seed, uint64_t epoch);
/* The image of i (0 <= i < n) under the permutation keyed by key; i itself when n <= 1. */
uint64_t perm_apply(uint64_t key, uint64_t n, uint64_t i);

#endif
