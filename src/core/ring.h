/*
 * The ring: a multi-producer multi-consumer queue of byte messages in shared memory, the one
 * transport under Queue and Pool. Made before a fork, it is shared with the children; every
 * process that has it may put and get.
 *
 * Contract (kept stable for queue.c and pool*.c; additions welcome):
 * - Messages are variable-size (0 bytes allowed) and delivered whole, once, in FIFO order
 *   per producer. Byte capacity is never a user-visible limit: the ring grows in shared
 *   memory as needed (MPROC_ENOMEM only when memory runs out).
 * - max_items > 0 bounds the number of messages held: a put blocks while it is reached.
 * - A process killed at any instant inside put or get leaves the ring usable for everyone
 *   else: no deadlock, no torn or duplicated message; at most the message that process was
 *   putting or getting is lost (a message being read when its reader died may be delivered
 *   again to the next reader, since no one received it).
 * - Deadlines are absolute (see os.h); a past deadline tries once. Blocking is a futex wait
 *   after a short spin.
 * - close: later puts get MPROC_ECLOSED; gets drain what is left, then get MPROC_ECLOSED
 *   (blocked getters are woken).
 */
#ifndef MPROC_RING_H
#define MPROC_RING_H

#include "os/os.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

typedef struct mproc__ring mproc__ring;
struct mproc__msg;
struct mproc__rd;

typedef struct mproc__ring_opts {
  size_t max_items; /* 0: unbounded */
  size_t initial_bytes; /* 0: a default; the data area starts at this size and grows */
} mproc__ring_opts;

/* Makes a ring in fresh shared memory. opts NULL: defaults. */
int mproc__ring_new(mproc__ring **r, const mproc__ring_opts *opts);
/* Unmaps this process's view; the memory goes when the last process unmaps it. */
void mproc__ring_free(mproc__ring *r);
/* The ring as a child that was not forked will see it (start.h): its mapping, at the same
 * address. 0 or the message's error. */
int mproc__ring_export(const mproc__ring *r, struct mproc__msg *m);
/* In that child: this process's handle for it, or NULL. */
mproc__ring *mproc__ring_import(struct mproc__rd *rd);

/* The ring's shared memory descriptor (owned by the ring: do not close) and the length of
 * its mapping, for mproc__ring_attach in a process that exists already: -EBADF when the
 * ring has none (anonymous memory). */
int mproc__ring_fd(const mproc__ring *r, size_t *map_len);
/* A handle for the ring behind fd (from mproc__ring_fd, received over a socket), mapped at
 * any free address; takes fd over (closed on failure too). NULL on failure. */
mproc__ring *mproc__ring_attach(int fd, size_t map_len);

/* Puts one message made of iov[0..n) concatenated. 0, -ETIMEDOUT (full until deadline),
 * MPROC_ECLOSED, MPROC_ENOMEM. */
int mproc__ring_putv(mproc__ring *r, const struct iovec *iov, int n, int64_t deadline);
static inline int mproc__ring_put(mproc__ring *r, const void *buf, size_t len,
                                  int64_t deadline) {
  struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
  return mproc__ring_putv(r, &iov, 1, deadline);
}

/* Takes the oldest message into a malloc'd buffer (*buf never NULL on success). 0,
 * -ETIMEDOUT (empty until deadline), MPROC_ECLOSED (closed and drained), MPROC_ENOMEM. */
int mproc__ring_get(mproc__ring *r, void **buf, size_t *len, int64_t deadline);

/* Zero-copy read: on 0, m->data/m->len point at the oldest message inside the ring, and the
 * caller holds the read side until mproc__ring_read_end (keep it short: other readers wait).
 * consume=false leaves the message for the next reader. Same errors as mproc__ring_get.
 * Between the two, do not put into the same ring from the same thread: a put that must grow
 * the data area takes the read side too (lock order: producers' lock, then readers'). A
 * reader killed in between leaves the message to the next reader. */
typedef struct mproc__ring_msg {
  const void *data;
  size_t len;
} mproc__ring_msg;
int mproc__ring_read_begin(mproc__ring *r, mproc__ring_msg *m, int64_t deadline);
void mproc__ring_read_end(mproc__ring *r, mproc__ring_msg *m, bool consume);
/* (Both reads: -EPROTO, nothing taken, when the shared header or the oldest record is
 * inconsistent — memory a peer scribbled over; the ring is then of no more use.) */

/* Refuses later puts; wakes blocked putters and getters. Idempotent. */
int mproc__ring_close(mproc__ring *r);
bool mproc__ring_closed(mproc__ring *r);
/* Messages held now (exact when nothing is in flight). */
size_t mproc__ring_count(mproc__ring *r);
size_t mproc__ring_max_items(mproc__ring *r);
/* Messages ever put (published) into the ring: counted under the producers' lock together
 * with the message itself, so a put killed midway never counts. */
uint64_t mproc__ring_total_put(mproc__ring *r);

/* Waits until the ring holds a message or is closed, without taking it: 0, -ETIMEDOUT.
 * (For callers that wait on a ring and must do other work before reading.) */
int mproc__ring_wait_readable(mproc__ring *r, int64_t deadline);

/* Bytes of the data area in use now, and at creation (the area grows for big messages or a
 * backlog and shrinks back when drained). For tests and statistics. */
size_t mproc__ring_capacity(mproc__ring *r);
size_t mproc__ring_initial_capacity(mproc__ring *r);
/* Bytes of the data area committed now: what a drained ring keeps for the next burst (up to
 * 64 MiB, until 64 drains in a row have not needed it). For tests. */
size_t mproc__ring_committed(mproc__ring *r);
/* How many of the two wait words (getters', putters') are armed: someone may be asleep, and
 * the next put or get will make a wake-up syscall. 0 once wakers have passed. For tests. */
size_t mproc__ring_sleepers(mproc__ring *r);

#endif /* MPROC_RING_H */
