/*
 * Test hooks: the switches and look-ups that only the test suites use, declared in one
 * place so that a reader of a layer's header sees its contract alone. Each is defined by the
 * layer it looks into; nothing in src/ calls them.
 */
#ifndef MPROC_TESTING_H
#define MPROC_TESTING_H

#include "mproc.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* ---- os (os/os_linux.c) ---- */

/* Number of open descriptors of this process, or -errno. */
int mproc__count_fds(void);

/* (os/os_linux_inject.c, MPROC_FAULT_INJECTION builds) From now on the nth call of the
 * kinds (MPROC__INJ_* of os.h) fails, once. Disarming returns whether it did, and how many
 * such calls this process made meanwhile. */
void mproc__test_inject_arm(unsigned kinds, long nth);
bool mproc__test_inject_disarm(long *calls);

/* ---- process (core/process.c) ---- */

/* A nonzero errno makes the next child's setup fail with it. */
extern int mproc__test_setup_errno;
/* true makes start act as if pidfd_open failed (the polling fallback). */
extern bool mproc__test_no_pidfd;

/* ---- ring (core/ring.c) ---- */

struct mproc__ring;
/* Overwrites one field of the ring's shared header, as a peer scribbling over the memory
 * would: field % 5 is cap, rpos, wpos, the readers' cached wpos, the word at rpos. */
void mproc__ring_test_scribble(struct mproc__ring *r, unsigned field, uint64_t v);
/* The bytes of data area this process maps for r: the most a record can span, whatever
 * cap a peer wrote (a peer may grow the ring up to it). */
size_t mproc__ring_test_area(const struct mproc__ring *r);

/* ---- limits (src/core/limits.c) ---- */

/* Where memory cgroups for children can be made (the directory into dir): 2 for v2, 1 for
 * v1, or -errno when they cannot. */
int mproc__test_memcg_dir(char *dir, size_t cap);

/* ---- pool (src/pool/) ---- */

/* The supervisor's pid, and the live workers' pids (returns how many). */
pid_t mproc__pool_supervisor_pid(mproc_pool *p);
int mproc__pool_worker_pids(mproc_pool *p, pid_t *pids, size_t max);
/* The map stage now: blocks live, bytes retired, bytes committed. */
void mproc__pool_stage_usage(mproc_pool *p, size_t *live, size_t *retired, size_t *committed);

/* ---- manager (src/manager/proxies.c) ---- */

/* Whether the dict's one-key calls run on its shared table (table.h). */
bool mproc__dict_test_shared(mproc_dict *d);
/* Takes the table's lock and stops halfway through setting a new key: the pair written and
 * counted (its commit) but not in the slots, and returns with the lock held, as a holder
 * that is then killed would leave it. 0, or MPROC_ESTATE without a table. */
int mproc__dict_test_half_set(mproc_dict *d, const void *k, size_t kl, const void *v, size_t vl);

#endif /* MPROC_TESTING_H */
