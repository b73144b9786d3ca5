#include "util/rng.h"

#include <math.h>

uint64_t rng_mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

uint64_t rng_key(uint64_t seed, const char *name) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ULL;
    }
    return rng_mix64(h ^ rng_mix64(seed));
}

static uint64_t rng_bits(uint64_t key, uint64_t counter) {
    /* Two rounds so that neighbouring counters under one key are independent. */
    return rng_mix64(rng_mix64(counter ^ key) + key);
}

double rng_uniform(uint64_t key, uint64_t counter) {
    return (double)(rng_bits(key, counter) >> 11) * (1.0 / 9007199254740992.0);
}

double rng_normal(uint64_t key, uint64_t counter) {
    uint64_t c = counter * 2;
    double u1 = rng_uniform(key, c);
    double u2 = rng_uniform(key, c + 1);
    if (u1 < 1e-300) u1 = 1e-300; /* log(0) guard */
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

void rng_stream_init(rng_stream *s, uint64_t seed, const char *name) {
    s->key = rng_key(seed, name);
    s->counter = 0;
}

uint64_t rng_stream_next(rng_stream *s) { return rng_bits(s->key, s->counter++); }

double rng_stream_uniform(rng_stream *s) {
    return (double)(rng_stream_next(s) >> 11) * (1.0 / 9007199254740992.0);
}
