/*
 * montecarlo_pi: estimate pi by throwing random points at a square, serially and on a Pool,
 * and print the speedup.
 *
 * The work is split into TASKS batches, each with its own seed, so the serial run and the
 * pool run throw exactly the same points: their hit counts must be equal, whatever the
 * number of workers. A batch is one map element: {seed, samples} in, hits out.
 *
 *   usage: montecarlo_pi [SAMPLES] [TASKS]     (default 400000000 64)
 */
#define _POSIX_C_SOURCE 200809L
#include <mproc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "montecarlo.h"

int main(int argc, char **argv) {
  uint64_t samples = argc > 1 ? strtoull(argv[1], NULL, 10) : 400000000;
  long tasks = argc > 2 ? atol(argv[2]) : 64;
  if (samples == 0 || tasks < 1 || tasks > 1000000) {
    fprintf(stderr, "usage: montecarlo_pi [SAMPLES > 0] [TASKS 1..1e6]\n");
    return 2;
  }
  struct batch *in = malloc((size_t)tasks * sizeof *in);
  uint64_t *serial = malloc((size_t)tasks * sizeof *serial);
  uint64_t *parallel = malloc((size_t)tasks * sizeof *parallel);
  if (!in || !serial || !parallel)
    return 1;
  for (long i = 0; i < tasks; i++) /* the remainder goes to the first batches */
    in[i] = (struct batch){.seed = 0x5eed0000u + (uint64_t)i * 0x100000000u,
                           .samples = samples / tasks + ((uint64_t)i < samples % tasks)};

  double t0 = now();
  for (long i = 0; i < tasks; i++)
    throw_batch(&in[i], &serial[i], NULL);
  double t_serial = now() - t0;

  mproc_pool *pool;
  int rc = mproc_pool_new(&pool, NULL);
  if (rc < 0) {
    fprintf(stderr, "montecarlo_pi: %s\n", mproc_strerror(rc));
    return 1;
  }
  t0 = now(); /* workers are already started: this times the work, as Python's users do */
  rc = mproc_pool_map(pool, throw_batch, in, (size_t)tasks, sizeof *in, parallel,
                      sizeof *parallel, &(mproc_map_opts){.chunksize = 1});
  double t_pool = now() - t0;
  mproc_pool_close(pool);
  mproc_pool_join(pool);
  mproc_pool_free(pool);
  if (rc < 0) {
    fprintf(stderr, "montecarlo_pi: map: %s\n", mproc_strerror(rc));
    return 1;
  }

  uint64_t hs = total(serial, (size_t)tasks), hp = total(parallel, (size_t)tasks);
  printf("samples %llu in %ld tasks\n", (unsigned long long)samples, tasks);
  printf("serial:   pi ~ %.6f  hits %llu  %.3f s\n", 4.0 * hs / samples,
         (unsigned long long)hs, t_serial);
  printf("mproc:    pi ~ %.6f  hits %llu  %.3f s on %d workers\n", 4.0 * hp / samples,
         (unsigned long long)hp, t_pool, mproc_cpu_count());
  printf("speedup:  %.2fx\n", t_serial / t_pool);
  printf("hit counts %s\n", hs == hp ? "identical" : "DIFFER");
  free(in);
  free(serial);
  free(parallel);
  return hs == hp ? 0 : 1;
}
