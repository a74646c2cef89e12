/* A Manager dict's table in shared memory: the server owns it, and a client on the same
 * machine that has its descriptor runs dict operations on it directly, under its robust
 * lock, without a request to the server (the socket round trip an operation costs
 * otherwise is ~20-35 us; the lock ~50 ns).
 *
 * One memfd per dict, mapped at TABLE_RESERVE bytes by every mapper although the file is
 * smaller: a MAP_SHARED mapping past the end of its file is allowed, its pages valid from
 * the moment the file grows (ftruncate, under the lock), so no mapper ever remaps; the
 * header's size says how far the file reaches. Inside: the header (lock, allocator state,
 * the current hash table), then a heap of blocks addressed by offsets (never pointers:
 * every process maps it elsewhere). The hash table is CPython's compact dict: an index
 * array of slots and an entries array in insertion order (what keys/items and popitem
 * follow).
 *
 * A holder killed mid-operation must leave a usable table: every change is built where
 * no one looks and made visible by one 8-byte store (the commit), so a half-done operation
 * is invisible, or done with at worst a block leaked; the index array is derived data,
 * rebuilt from the entries by the next locker when the lock says its holder died.
 *
 * The operations below (but lock, create, attach) run with the lock held. A view (a key
 * or value pointer) stays valid until the next change or the unlock. */
#ifndef MPROC_MANAGER_TABLE_H
#define MPROC_MANAGER_TABLE_H

#include "core/internal.h"
#include "core/sync.h"

typedef struct mproc__table {
  unsigned char *base; /* NULL: none */
  int fd;              /* the mapping's (mproc__shared_lookup): closed at detach */
} mproc__table;

/* A new empty table (the server's): 0 or -errno / MPROC_ENOMEM. */
int mproc__table_create(mproc__table *t);
/* Maps a table from its descriptor, taking fd over (closed on failure): 0, MPROC_EINVAL
 * (not a table), -errno. */
int mproc__table_attach(mproc__table *t, int fd);
void mproc__table_detach(mproc__table *t);

/* Takes the lock: 0 (a dead holder's half-done change repaired first), or an error. */
int mproc__table_lock(mproc__table *t);
void mproc__table_unlock(mproc__table *t);

int mproc__table_set(mproc__table *t, const void *k, size_t kl, const void *v, size_t vl);
/* The value of k: 0 and a view, or MPROC_ENOTFOUND. */
int mproc__table_find(mproc__table *t, const void *k, size_t kl, const void **v, size_t *vl);
int mproc__table_remove(mproc__table *t, const void *k, size_t kl); /* or MPROC_ENOTFOUND */
size_t mproc__table_len(mproc__table *t);
/* The 8-byte value of k plus delta (k absent: delta), wrapping: 0 and *now, MPROC_EINVAL
 * for a value of another length, MPROC_ENOMEM. */
int mproc__table_add(mproc__table *t, const void *k, size_t kl, int64_t delta, int64_t *now);
int mproc__table_clear(mproc__table *t);
/* Walking in insertion order: slots 0 .. end-1, each a pair or a hole (-ENOENT). */
size_t mproc__table_end(mproc__table *t);
int mproc__table_at(mproc__table *t, size_t i, const void **k, size_t *kl, const void **v,
                    size_t *vl);

/* (test hook) mproc__table_set of a new key stopped after its commit: the slot not yet
 * set (testing.h's mproc__dict_test_half_set). */
int mproc__table_test_half_set(mproc__table *t, const void *k, size_t kl, const void *v,
                               size_t vl);

/* The server's life as a word clients read: a page with a robust lock the server's main
 * thread takes for good. At its death the kernel's robust-list walk clears the owner (and
 * a shutdown releases it), so "locked" means the server lives: one load per operation. */
typedef struct mproc__alive {
  mproc_lock *l;
  int fd; /* the mapping's */
} mproc__alive;
/* The server's: made and held by the calling thread. 0 or -errno. */
int mproc__alive_create(mproc__alive *a);
/* A client's, from the descriptor (taken over; closed on failure). */
int mproc__alive_attach(mproc__alive *a, int fd);
bool mproc__alive_is(const mproc__alive *a);
/* Unmaps (releasing the lock first if this thread holds it). */
void mproc__alive_detach(mproc__alive *a);

#endif
