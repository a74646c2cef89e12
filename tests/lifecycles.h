/* Whole lifecycles of mproc's objects for the fault suites (tests/inject, the limits test):
 * each makes, uses (results checked exactly with cr_expect) and frees one kind of object and
 * returns 0 or the first error. Every start method: the Process copies its argument. */
#ifndef MPROC_TEST_LIFECYCLES_H
#define MPROC_TEST_LIFECYCLES_H

/* A pool of 2: apply, apply_async, a map of 4096 int64, close, join, free. */
int tl_pool(void);
/* A queue: 8 messages of 16 B and 256 KiB (the ring grows) put and got back. */
int tl_queue(void);
/* A Process whose target returns 7: start, join, its exit code. */
int tl_process(void);
/* A duplex Pipe: one message across. */
int tl_pipe(void);
/* A Lock, and an Array with a lock of its own made while holding it. */
int tl_sync(void);
/* A Listener on a private Unix socket, a Client without a key, one message across. */
int tl_listener(void);
/* A Manager: a dict's set, add_i64 and get, then shutdown. */
int tl_manager(void);

#endif
