/* A serving rank's life (mpi_serve.c): rank 0's tasks run on this rank's local pool. */
#ifndef MPROC_MPI_SERVE_H
#define MPROC_MPI_SERVE_H

#include <mproc.h>

/* Serves until rank 0's STOP, then terminates pool (still the caller's to free). 0, or an
 * MPROC code when MPI failed under it. */
int mpis_serve(mproc_pool *pool);

#endif /* MPROC_MPI_SERVE_H */
