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

/* Tests only: a nonzero errno makes the next child's setup fail with it. */
extern int mproc__test_setup_errno;
/* Tests only: true makes start act as if pidfd_open failed (the polling fallback). */
extern bool mproc__test_no_pidfd;

#endif
