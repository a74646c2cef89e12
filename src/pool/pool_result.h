/*
 * A result of one's own (pool_worker.c's mproc_result), for running task functions inside
 * a task: pool_imap.c's chunks run the user's function once per item.
 */
#ifndef MPROC_POOL_RESULT_H
#define MPROC_POOL_RESULT_H

#include "mproc.h"

#include <stddef.h>

mproc_result *mproc__result_new(void);
/* Empties it for the next call. */
void mproc__result_reset(mproc_result *r);
void mproc__result_view(const mproc_result *r, const void **data, size_t *len,
                        const char **msg, size_t *msg_len);

#endif /* MPROC_POOL_RESULT_H */
