/* Counter-based random numbers.
 *
 * Every random value is a pure function of (key, counter), so a tensor's initial values depend
 * only on the seed, the tensor's name and the element's global index: any parallel layout
 * initialises its slice of a tensor to exactly the values of the single-rank run. */
#ifndef DT_RNG_H
#define DT_RNG_H

#include <stdint.h>

/* A well-mixed 64-bit hash of x (splitmix64 finaliser). */
uint64_t rng_mix64(uint64_t x);
/* A 64-bit key from a seed and a string (FNV-1a of the string, mixed with the seed). */
uint64_t rng_key(uint64_t seed, const char *name);
/* Uniform in [0, 1) with 53 bits, from (key, counter). */
double rng_uniform(uint64_t key, uint64_t counter);
/* Standard normal from (key, counter) by Box-Muller on two derived uniforms. */
double rng_normal(uint64_t key, uint64_t counter);

/* A sequential generator for host-side sampling (a key and a running counter); its whole
 * state is two integers, so it is saved and restored exactly. */
typedef struct rng_stream {
    uint64_t key;
    uint64_t counter;
} rng_stream;

void rng_stream_init(rng_stream *s, uint64_t seed, const char *name);
uint64_t rng_stream_next(rng_stream *s);
double rng_stream_uniform(rng_stream *s);

#endif
