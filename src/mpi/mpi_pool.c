/*
 * mproc_mpi_pool_new: every rank's entry. A serving rank makes its local pool BEFORE
 * MPI_Init where it can tell its rank from mpirun's environment, so the supervisor (and
 * through it every worker) is forked from a process without MPI in it: Open MPI's fork
 * warning has nothing to warn about, and no MPI state is ever touched in a child. Rank 0
 * forks nothing unless asked for workers of its own (mproc_mpi_opts.rank0_workers): that
 * pool is made before MPI_Init too, and the master feeds it as one more rank.
 */
#define _GNU_SOURCE
#include "mproc_mpi.h"
#include "mpi/mpi_master.h"
#include "mpi/mpi_serve.h"
#include "mpi/mpi_wire.h"

#include <stdlib.h>

/* This process's rank as the launcher told it (-1: not launched by a known one). */
static int rank_hint(void) {
  static const char *const vars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"};
  for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
    const char *v = getenv(vars[i]);
    if (v && *v)
      return atoi(v);
  }
  return -1;
}

static int serve(mproc_pool *local, int lrc, const mproc_pool_opts *opts) {
  mpiw_hello h = {lrc, 0};
  if (lrc == 0)
    h.workers = opts && opts->processes ? opts->processes : mproc_cpu_count();
  MPI_Send(&h, 2, MPI_INT, 0, MPIW_HELLO, MPI_COMM_WORLD);
  if (lrc == 0)
    return mpis_serve(local);
  MPI_Recv(NULL, 0, MPI_BYTE, 0, MPIW_STOP, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  MPI_Send(NULL, 0, MPI_BYTE, 0, MPIW_STOPPED, MPI_COMM_WORLD);
  return 0;
}

/* Rank 0: every rank's HELLO, then the pool (or every rank stopped on an error). */
/* local: rank 0's own pool of own workers (NULL: none; lrc: why it failed, if it did). */
static int lead(mproc_pool **p, const mproc_pool_opts *opts, mproc_pool *local, int own,
                int lrc, int size, bool finalize) {
  int *workers = calloc((size_t)size, sizeof *workers);
  if (!workers) {
    mproc_pool_free(local);
    return MPROC_ENOMEM; /* cannot happen usefully: the job cannot be stopped cleanly */
  }
  int rc = lrc, total = 0;
  if (local)
    total = workers[0] = own;
  for (int i = 1; i < size; i++) {
    mpiw_hello h;
    MPI_Recv(&h, 2, MPI_INT, i, MPIW_HELLO, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    if (h.rc && !rc)
      rc = h.rc;
    workers[i] = h.workers;
    total += h.workers;
  }
  mpim_master *m = mpim_master_new(size, workers, local, finalize);
  free(workers);
  if (!m) {
    mproc_pool_free(local);
    return MPROC_ENOMEM;
  }
  if (rc == 0)
    rc = mproc__pool_new_engine(p, opts, total, mpim_engine(m));
  if (rc)
    mpim_master_free(m); /* stops the ranks; finalizes */
  return rc;
}

__attribute__((visibility("default"))) int mproc_mpi_pool_new(mproc_pool **p,
                                                              const mproc_pool_opts *opts,
                                                              int *argc, char ***argv) {
  return mproc_mpi_pool_new_ex(p, opts, NULL, argc, argv);
}

/* Rank 0's own pool, when asked for: rank0_workers workers, the rest of opts as given. */
static int local_pool(mproc_pool **local, const mproc_pool_opts *opts, int workers) {
  mproc_pool_opts o = opts ? *opts : (mproc_pool_opts){0};
  o.processes = workers;
  return mproc_pool_new(local, &o);
}

__attribute__((visibility("default"))) int
mproc_mpi_pool_new_ex(mproc_pool **p, const mproc_pool_opts *opts, const mproc_mpi_opts *mo,
                      int *argc, char ***argv) {
  int own = mo ? mo->rank0_workers : 0;
  if (!p || own < 0)
    return MPROC_EINVAL;
  *p = NULL;
  int inited = 0;
  MPI_Initialized(&inited);
  int hint = rank_hint();
  mproc_pool *local = NULL;
  int lrc = 0;
  bool made = false;
  if (!inited && hint > 0) {
    lrc = mproc_pool_new(&local, opts);
    made = true;
  } else if (!inited && hint == 0 && own) {
    lrc = local_pool(&local, opts, own);
    made = true;
  }
  if (!inited) {
    /* Unknown rank: a serving rank then forks its pool after MPI_Init. That fork is safe
     * (the child never calls MPI; it only runs the pool's supervisor), so Open MPI's
     * warning about it is turned off, unless the user set it. */
    if (hint < 0)
      setenv("OMPI_MCA_mpi_warn_on_fork", "0", 0);
    int provided;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS) {
      mproc_pool_free(local);
      return MPROC_ESTATE;
    }
  }
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int rc;
  if (rank != 0) {
    if (!made || hint == 0) { /* none yet, or rank 0's (a launcher that named us wrongly) */
      mproc_pool_free(local);
      lrc = mproc_pool_new(&local, opts);
    }
    rc = serve(local, lrc, opts);
    mproc_pool_free(local);
    if (!inited)
      MPI_Finalize();
    return lrc ? lrc : rc ? rc : 1;
  }
  if (hint > 0) { /* a launcher that named us wrongly: never used */
    mproc_pool_free(local);
    local = NULL;
    made = false;
    lrc = 0;
  }
  if (size < 2) {
    mproc_pool_free(local);
    if (!inited)
      MPI_Finalize();
    return MPROC_ESTATE;
  }
  if (own && !made) /* rank unknown before MPI_Init: forked after it (see above) */
    lrc = local_pool(&local, opts, own);
  return lead(p, opts, local, own, lrc, size, !inited);
}
