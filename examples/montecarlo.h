/*
 * The Monte Carlo estimator of montecarlo_pi.c, mpi_montecarlo.c and bench/mpi_bench.c: a
 * batch of points with its own seed is one map element, {seed, samples} in, hits out, so
 * that a serial run and a pool run throw exactly the same points.
 */
#ifndef MPROC_EXAMPLES_MONTECARLO_H
#define MPROC_EXAMPLES_MONTECARLO_H

#include <stdint.h>
#include <stddef.h>
#include <time.h>

struct batch {
  uint64_t seed, samples;
};

static inline uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

/* A map function: one batch in, its number of points inside the quarter circle out. */
static inline int throw_batch(const void *in, void *out, const void *args) {
  (void)args;
  const struct batch *b = in;
  uint64_t s = b->seed, hits = 0;
  for (uint64_t i = 0; i < b->samples; i++) {
    double x = (double)(splitmix64(&s) >> 11) * 0x1p-53; /* uniform in [0, 1) */
    double y = (double)(splitmix64(&s) >> 11) * 0x1p-53;
    hits += x * x + y * y <= 1.0;
  }
  *(uint64_t *)out = hits;
  return 0;
}

static inline double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static inline uint64_t total(const uint64_t *hits, size_t n) {
  uint64_t t = 0;
  for (size_t i = 0; i < n; i++)
    t += hits[i];
  return t;
}

#endif
