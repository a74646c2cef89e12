/* Private: what the conn layer (mproc_wait) needs to know about a process. */
#ifndef MPROC_PROCESS_H
#define MPROC_PROCESS_H

#include "core/internal.h"

/* For mproc_wait: MPROC_EINVAL/MPROC_ESTATE when p cannot be waited on here (NULL, not
 * started, not a child of this process); 1 when it has ended (reaped or not); 0 while it
 * runs, with *fd its pidfd or -1 where there is none (the caller then polls
 * mproc__process_ended). */
int mproc__process_wait_fd(const mproc_process *p, int *fd);
/* Whether the running child has ended, without reaping it. */
bool mproc__process_ended(const mproc_process *p);

#endif
