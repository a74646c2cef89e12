/*
 * The Pool over MPI on one machine (run.py's "mpi" family; run under mpirun -n 3, 1 worker
 * per serving rank: 2 workers, as mpi4py.futures' 2 worker ranks in the same launch):
 *   mpi_apply_async_rate   apply_async of 8 bytes, 100 000 in flight then all waited
 *   mpi_map_1M_int64       map of 10^6 int64 squares (default chunking)
 *   mpi_cpu_map_64x2M      a CPU-bound map (64 Monte Carlo batches of 2M points), beside
 *                          the same map on one local pool of 2 workers (impl "local", the
 *                          reference its MPI figure must stay within 10 % of), the two
 *                          alternated in one launch so that the machine's drift weighs on both
 * With `rank0` (run under mpirun -n 2): rank 0 runs a worker of its own beside the serving
 * rank's (mproc_mpi_opts.rank0_workers = 1), the CPU-bound map only, as mpi_cpu_map_rank0.
 */
#define _GNU_SOURCE
#include "common.h"

#include <mproc_mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../examples/montecarlo.h"

/* Seconds of one run of the CPU-bound map, or 0 on an error. */
static double cpu_map_once(mproc_pool *p) {
  enum { B = 64 };
  struct batch in[B];
  uint64_t out[B];
  for (int i = 0; i < B; i++)
    in[i] = (struct batch){0x5eed0000u + (uint64_t)i * 0x100000000u, 2000000};
  double t0 = bench_now();
  if (mproc_pool_map(p, throw_batch, in, B, sizeof *in, out, sizeof *out,
                     &(mproc_map_opts){.chunksize = 1}) != 0)
    return 0;
  return bench_now() - t0;
}

/* The CPU-bound map on the MPI pool and on the local one, alternated, their medians. */
static void cpu_map(const char *name, mproc_pool *mpi, mproc_pool *local) {
  enum { R = 7 };
  double tm[R], tl[R];
  for (int r = 0; r < R; r++) {
    tm[r] = cpu_map_once(mpi);
    tl[r] = local ? cpu_map_once(local) : 0;
  }
  bench_report(name, "mproc", bench_median(tm, R), "s");
  if (local)
    bench_report(name, "local", bench_median(tl, R), "s");
}

/* Median seconds of 5 maps of 10^6 int64 squares. */
static double map_1m(mproc_pool *p) {
  enum { N = 1000000, R = 5 };
  int64_t *in = malloc(N * sizeof *in), *out = malloc(N * sizeof *out);
  if (!in || !out)
    return 0;
  for (int i = 0; i < N; i++)
    in[i] = i;
  double t[R];
  for (int r = 0; r < R; r++) {
    double t0 = bench_now();
    mproc_pool_map(p, bench_square64, in, N, 8, out, 8, NULL);
    t[r] = bench_now() - t0;
  }
  free(in);
  free(out);
  return bench_median(t, R);
}

int main(int argc, char **argv) {
  /* The local reference pool is made first, before MPI_Init, as the serving ranks make
   * theirs: nothing of MPI is in its processes. Idle, its workers sleep. */
  mproc_pool *local = NULL, *p;
  if (mproc_pool_new(&local, &(mproc_pool_opts){.processes = 2}) != 0)
    local = NULL;
  bool rank0 = argc > 1 && strcmp(argv[1], "rank0") == 0;
  int rc = mproc_mpi_pool_new_ex(&p, &(mproc_pool_opts){.processes = 1},
                                 &(mproc_mpi_opts){.rank0_workers = rank0 ? 1 : 0}, &argc, &argv);
  if (rc == 1 || rc != 0) {
    if (rc != 1)
      fprintf(stderr, "mpi_bench: %s\n", mproc_strerror(rc));
    mproc_pool_free(local);
    return rc == 1 ? 0 : 1;
  }
  if (rank0) {
    cpu_map("mpi_cpu_map_rank0", p, local);
  } else {
    bench_report("mpi_apply_async_rate", "mproc", bench_async_rate(p), "tasks/s");
    bench_report("mpi_map_1M_int64", "mproc", map_1m(p) * 1e3, "ms");
    cpu_map("mpi_cpu_map_64x2M", p, local);
  }
  mproc_pool_free(p);
  mproc_pool_free(local);
  return 0;
}
