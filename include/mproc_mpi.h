/*
 * mproc_mpi.h: the same Pool across machines, over MPI (libmproc_mpi; pkg-config mproc-mpi,
 * CMake mproc::mproc_mpi). A program written for mproc_pool_new runs under
 * `mpirun -n N prog` by changing that one call.
 *
 * Rank 0 gets an ordinary mproc_pool: every call of mproc.h works on it unchanged. Each
 * other rank runs an ordinary local pool (opts.processes workers, or its CPU count; fork
 * started, with task_timeout, maxtasksperchild, the initializer and crash containment as on
 * one machine) and serves rank 0's tasks until rank 0 frees the pool. By default rank 0 runs
 * no worker itself (with N ranks the pool's workers are those of ranks 1..N-1); with
 * mproc_mpi_opts.rank0_workers it also runs a local pool of its own, fed as one more rank.
 *
 * What crosses: functions as (object file, offset): every rank must run the same program
 * and libraries. Arguments and map elements as bytes (no pointers inside them).
 *
 * A whole rank dying (killed, or its node lost) is not contained: Open MPI 4.1 aborts the
 * whole job (every rank is killed, mpirun exits nonzero). A task that crashes or runs past
 * task_timeout fails alone, with MPROC_ECRASHED / MPROC_EEXPIRED, as locally.
 *
 * MPI is the library's: it is initialized inside mproc_mpi_pool_new (MPI_THREAD_SERIALIZED;
 * unless the program did it before) and finalized when rank 0 frees the pool or a serving
 * rank returns (unless the program initialized it). Do not call MPI yourself meanwhile.
 * No thread is started by mproc: MPI traffic moves inside the pool calls rank 0 makes.
 */
#ifndef MPROC_MPI_H
#define MPROC_MPI_H

#include <mproc.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Under mpirun: every rank calls it (argc/argv as for MPI_Init, may be NULL). Rank 0: 0 and
 * *p, a pool whose workers are the other ranks' (freed with mproc_pool_free, which also
 * ends the other ranks' service). Other ranks: they serve until rank 0 frees the pool, then
 * return 1 with *p NULL (the program then just exits). Errors (every rank gets one): bad
 * opts or p NULL: MPROC_EINVAL; fewer than 2 ranks: MPROC_ESTATE; a rank's local pool
 * failed to start: its error. Blocks until every rank has started. */
int mproc_mpi_pool_new(mproc_pool **p, const mproc_pool_opts *opts, int *argc, char ***argv);

typedef struct mproc_mpi_opts {
  /* Workers of rank 0's own local pool (forked before MPI_Init, with opts' task_timeout,
   * initializer etc.), handed tasks as one more rank. 0: none (rank 0 only leads). */
  int rank0_workers;
} mproc_mpi_opts;

/* As mproc_mpi_pool_new, with mpi_opts (NULL: all zero). Every rank must pass the same;
 * rank0_workers < 0: MPROC_EINVAL on every rank (before MPI is initialized). */
int mproc_mpi_pool_new_ex(mproc_pool **p, const mproc_pool_opts *opts,
                          const mproc_mpi_opts *mpi_opts, int *argc, char ***argv);

#ifdef __cplusplus
}
#endif

#endif /* MPROC_MPI_H */
