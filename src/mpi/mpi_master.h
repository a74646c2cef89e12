/* Rank 0's engine (mpi_master.c): the pool's tasks out to the serving ranks, their results
 * back onto the pool's result ring, driven inside the caller's pool calls. */
#ifndef MPROC_MPI_MASTER_H
#define MPROC_MPI_MASTER_H

#include "pool/pool_engine.h"

typedef struct mpim_master mpim_master;

/* An engine for ranks 1..nranks-1 with workers[r] workers each, and for local (rank 0's own
 * pool of workers[0] workers; NULL: none), taken by the engine (freed with it; on NULL,
 * ENOMEM, it stays the caller's). finalize: call MPI_Finalize when the pool is freed. */
mpim_master *mpim_master_new(int nranks, const int *workers, mproc_pool *local,
                             bool finalize);
mproc__engine *mpim_engine(mpim_master *m);
/* Stops every serving rank (STOP, then everything up to its STOPPED). Idempotent. */
void mpim_stop_ranks(mpim_master *m);
/* Frees an engine never given to a pool (its ranks are stopped, MPI finalized as told). */
void mpim_master_free(mpim_master *m);

#endif /* MPROC_MPI_MASTER_H */
