/* Rank 0's own workers (mpi_local.c): an ordinary local pool that the master engine hands
 * tasks to as one more rank, its results coming back as RESULTS records do. */
#ifndef MPROC_MPI_LOCAL_H
#define MPROC_MPI_LOCAL_H

#include "mpi/mpi_wire.h"
#include "pool/pool.h"

typedef struct mpil_local mpil_local;

/* Takes pool (freed with the result). NULL on ENOMEM (pool is then the caller's). */
mpil_local *mpil_new(mproc_pool *pool);
/* Submits the engine pool's task (as mproc__engine_take gives it) to the local pool. A map
 * chunk's output goes straight to the caller's array when it is shared. 0 or an MPROC code
 * (the task then never ran). */
int mpil_submit(mpil_local *l, const mproc__task_hdr *h, const char *body, size_t len);
/* Runs the local pool's callbacks, waiting up to timeout s when a task of ours runs: the
 * number of tasks finished (their records wait in mpil_results), or -EINTR. */
int mpil_poll(mpil_local *l, double timeout);
/* Tasks of ours submitted and not yet finished. */
size_t mpil_running(const mpil_local *l);
/* The finished tasks' records as one malloc'd RESULTS message (NULL: none yet). */
char *mpil_results(mpil_local *l, size_t *len);
/* Stops every task of ours now (their results are dropped); the pool stays till free. */
void mpil_terminate(mpil_local *l);
void mpil_free(mpil_local *l);

#endif /* MPROC_MPI_LOCAL_H */
