/* The Manager server's objects: named dicts (bytes -> bytes) and lists of bytes. Only the
 * server process holds them (a dict's table shared with local clients: table.h); every
 * operation runs whole between two requests, which is what makes each one atomic. */
#ifndef MPROC_MANAGER_STORE_H
#define MPROC_MANAGER_STORE_H

#include "core/internal.h"
#include "manager/table.h"

typedef struct mproc__blob {
  size_t len;
  unsigned char *p;
} mproc__blob;

typedef struct mproc__store mproc__store;
mproc__store *mproc__store_new(void);
void mproc__store_free(mproc__store *s);
/* The kinds of object. A Namespace is a dict (its attributes by name). */
enum mproc__mgr_kind {
  MGR_K_DICT, MGR_K_LIST, MGR_K_NS, MGR_K_LOCK, MGR_K_RLOCK, MGR_K_SEM, MGR_K_BSEM,
  MGR_K_EVENT, MGR_K_COND, MGR_K_BARRIER, MGR_K_QUEUE, MGR_K_JQUEUE, MGR_K_VALUE, MGR_K_END
};
/* The id of the object called name of kind, made if absent (param: a semaphore's value, a
 * barrier's parties, a queue's maxsize, a condition's lock (its id, or -1 for its own
 * RLock); init: a Value's first bytes): >= 0, or MPROC_EINVAL (the name is another kind's,
 * a bad param), MPROC_ENOMEM. An object opened again keeps what it was made with. */
int mproc__store_open(mproc__store *s, const void *name, size_t n, int kind, int64_t param,
                      const void *init, size_t init_len);
/* The object id of kind, NULL for a bad id. Asked for a dict, a Namespace does too. */
void *mproc__store_get(mproc__store *s, int32_t id, int kind);
/* The kind of object id, or -1. */
int mproc__store_kind(mproc__store *s, int32_t id);

/* ---- the managed synchronization objects and queues (store_sync.c) ----
 * State only: the server (server.c) runs each operation under its one mutex and waits for
 * changes itself. "Who" is a client's number (never 0). A *_try returns -EBUSY when the
 * caller must wait for a change and try again. */
typedef struct mproc__mlock {
  uint64_t owner; /* 0: free */
  uint64_t depth;
  bool recursive;
  bool dead; /* its holder died holding it: the next acquirer gets MPROC_EOWNERDEAD */
} mproc__mlock;
int mproc__mlock_try(mproc__mlock *l, uint64_t who);
int mproc__mlock_release(mproc__mlock *l, uint64_t who); /* MPROC_ESTATE: not the holder */
/* Client who is gone: a lock it held is free and marked dead. true if it held it. */
bool mproc__mlock_orphan(mproc__mlock *l, uint64_t who);

typedef struct mproc__msem {
  int64_t value, initial;
  bool bounded;
} mproc__msem;

typedef struct mproc__mevent {
  bool set;
  uint64_t sets; /* how many times it was set: a waiter that saw one change returns 0 */
} mproc__mevent;

typedef struct mproc__cwaiter {
  struct mproc__cwaiter *next;
  bool notified;
} mproc__cwaiter;
typedef struct mproc__mcond {
  mproc__mlock *lock; /* own (below) or a Lock object's */
  mproc__mlock own;
  mproc__cwaiter *head, **tail; /* waiting, in the order they began */
} mproc__mcond;
void mproc__mcond_enqueue(mproc__mcond *c, mproc__cwaiter *w);
void mproc__mcond_remove(mproc__mcond *c, mproc__cwaiter *w);
/* Wakes min(n, waiting) waiters (n < 0: all). */
void mproc__mcond_notify(mproc__mcond *c, int64_t n);

typedef struct mproc__mbarrier {
  uint64_t parties, count, gen;
  uint64_t reset_gen; /* the round a reset broke (its waiters get MPROC_ESTATE) */
  bool broken;
} mproc__mbarrier;

typedef struct mproc__mqueue mproc__mqueue;
struct mproc__mqueue {
  mproc__blob *v; /* v[head..head+n) held, oldest first */
  size_t head, n, cap;
  uint64_t maxsize;   /* 0: unbounded */
  uint64_t unfinished; /* joinable: put and not yet task_done */
  bool closed, joinable;
};
size_t mproc__mqueue_len(const mproc__mqueue *q);
int mproc__mqueue_put_try(mproc__mqueue *q, const void *v, size_t vl);
/* Takes the oldest into *out (the caller frees out->p); MPROC_ECLOSED closed and empty. */
int mproc__mqueue_get_try(mproc__mqueue *q, mproc__blob *out);
/* Client who is gone: every Lock (and Condition's own RLock) it held is freed and marked
 * dead. true if it held any. */
bool mproc__store_orphan(mproc__store *s, uint64_t who);

/* Dicts (and Namespaces) are tables in shared memory (table.h): mproc__store_get gives
 * the object's mproc__table, which local clients map too, so every operation on one runs
 * under its lock. */
/* What a snapshot holds per pair. */
enum { MGR_SNAP_KEYS = 1, MGR_SNAP_VALUES = 2 };

/* Lists. Indexes already normalised (0 <= i < len, or <= len for insert). */
typedef struct mproc__list mproc__list;
size_t mproc__list_len(const mproc__list *l);
mproc__blob *mproc__list_at(mproc__list *l, size_t i);
int mproc__list_insert(mproc__list *l, size_t i, const void *v, size_t vl);
/* Removes item i into *out (the caller frees out->p). */
void mproc__list_remove(mproc__list *l, size_t i, mproc__blob *out);
void mproc__list_clear(mproc__list *l);
void mproc__list_reverse(mproc__list *l);
/* Sorts as Python sorts bytes (mproc__blob_cmp), stable, descending if reverse: 0 or
 * MPROC_ENOMEM (the list unchanged). */
int mproc__list_sort(mproc__list *l, bool reverse);
/* Python's bytes order: memcmp over the common prefix, then the shorter first. */
int mproc__blob_cmp(const mproc__blob *a, const mproc__blob *b);
/* A copy of v[vl) as a blob: 0 or MPROC_ENOMEM. */
int mproc__blob_set(mproc__blob *b, const void *v, size_t vl);

#endif
