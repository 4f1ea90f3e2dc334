/* Portable, seedable random numbers: the same seed gives the same stream on
 * every machine, compiler and thread count.
 *
 *   generator  xoshiro256** (Blackman & Vigna), 256-bit state
 *   seeding    the state words are four successive outputs of splitmix64(seed)
 *   uniform    rng_uniform: top 24 bits of rng_next() * 2^-24, in [0, 1)
 *   normal     rng_normal: Box-Muller in double precision, rounded to float;
 *              u1 = (top 53 bits + 1) * 2^-53 in (0, 1], u2 = top 53 bits * 2^-53,
 *              z0 = sqrt(-2 ln u1) cos(2 pi u2), then z1 = ... sin(2 pi u2)
 *              is returned by the next call (the pair is cached in the state).
 *   hashing    rng_hash(seed, p, n, j): a 64-bit hash of (seed, bytes, j) for
 *              DESIGN.md's per-sample seeds hash(seed, id, j):
 *                h = splitmix64(seed ^ 0x9e3779b97f4a7c15)
 *                for each byte b: h = (h ^ b) * 0x100000001b3      (FNV-1a step)
 *                h = splitmix64(h ^ splitmix64(j + n))
 *              where splitmix64(x) is the finalizer of splitmix64 applied to
 *              x + 0x9e3779b97f4a7c15.
 * Not for cryptography. */
#ifndef RLFLOW_RNG_H
#define RLFLOW_RNG_H
#include <stddef.h>
#include <stdint.h>

struct rng {
    uint64_t s[4];
    float spare;        /* second Box-Muller value */
    int has_spare;
};

void rng_seed(struct rng *r, uint64_t seed);
uint64_t rng_next(struct rng *r);
float rng_uniform(struct rng *r);     /* [0, 1) */
double rng_uniform_double(struct rng *r);   /* [0, 1), 53 bits */
float rng_normal(struct rng *r);      /* mean 0, std 1 */
uint64_t rng_hash(uint64_t seed, const void *p, size_t n, uint64_t j);
/* splitmix64 step: advances *x and returns the next output. */
uint64_t rng_splitmix64(uint64_t *x);
#endif
