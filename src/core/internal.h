/*
 * Internal conventions shared by every layer. Not installed.
 */
#ifndef MPROC_INTERNAL_H
#define MPROC_INTERNAL_H

#include "mproc.h"
#include "os/os.h"

#include <errno.h>

#define MPROC__LIKELY(x) __builtin_expect(!!(x), 1)
#define MPROC__UNLIKELY(x) __builtin_expect(!!(x), 0)
#define MPROC__CACHELINE 64
#define MPROC__ALIGNED __attribute__((aligned(MPROC__CACHELINE)))

/* Maps -ETIMEDOUT to MPROC_EAGAIN for a take/put call made with timeout 0. */
static inline int mproc__take_rc(int rc, double timeout) {
  return (rc == MPROC_ETIMEDOUT && timeout == 0) ? MPROC_EAGAIN : rc;
}

#endif /* MPROC_INTERNAL_H */
