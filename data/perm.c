#include "data/perm.h"

#include "util/rng.h"

#define PERM_ROUNDS 6

uint64_t perm_key(uint64_t seed, uint64_t epoch) {
    return rng_mix64(rng_key(seed, "data.shuffle") ^ rng_mix64(epoch));
}

/* One pass of the Feistel network on [0, 2^(2*half)). Each round is invertible whatever the round
 * function, which is what makes the whole a bijection; six rounds of a full 64-bit mix make the
 * output look random even on tiny domains. */
static uint64_t feistel(const uint64_t *round_keys, int half, uint64_t x) {
    uint64_t mask = (1ULL << half) - 1; /* half <= 32 */
    uint64_t l = x >> half, r = x & mask;
    for (int i = 0; i < PERM_ROUNDS; i++) {
        uint64_t f = rng_mix64(r ^ round_keys[i]) & mask;
        uint64_t t = r;
        r = l ^ f;
        l = t;
    }
    return (l << half) | r;
}

uint64_t perm_apply(uint64_t key, uint64_t n, uint64_t i) {
    if (n <= 1) return i;
    int k = 64 - __builtin_clzll(n - 1); /* smallest k with 2^k >= n */
    if (k & 1) k++;
    if (k < 2) k = 2;
    uint64_t round_keys[PERM_ROUNDS];
    for (int r = 0; r < PERM_ROUNDS; r++)
        round_keys[r] = rng_mix64(key + (uint64_t)r * 0x9e3779b97f4a7c15ULL);
    /* Cycle walking: i lies on a cycle of the domain permutation, and that cycle returns into
     * [0, n) at the latest when it returns to i, so the loop ends, and the induced map on [0, n)
     * is again a bijection. */
    uint64_t x = i;
    do {
        x = feistel(round_keys, k / 2, x);
    } while (x >= n);
    return x;
}
