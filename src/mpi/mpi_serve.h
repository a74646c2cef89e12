/* A serving rank's life (mpi_serve.c): rank 0's tasks run on this rank's local pool. */
#ifndef MPROC_MPI_SERVE_H
#define MPROC_MPI_SERVE_H

#include "mpi/mpi_wire.h"

#include <mproc.h>

/* Serves until rank 0's STOP, then terminates pool (still the caller's to free). 0, or an
 * MPROC code when MPI failed under it. */
int mpis_serve(mproc_pool *pool);

/* A finished local task's (a) result as one RESULTS record for id into b: the task's bytes,
 * or for a map chunk (map) out_len bytes of out (NULL, 0: the output is already in place).
 * Shared by serving ranks and rank 0's own workers (mpi_local.c). 0 or MPROC_ENOMEM. */
int mpis_put_result(mpiw_batch *b, uint64_t id, mproc_async *a, bool map, const void *out,
                    size_t out_len);

#endif /* MPROC_MPI_SERVE_H */
